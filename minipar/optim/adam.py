"""Adam with PyTorch's exact update and L2 weight decay.

    opt = optim.Adam(model.parameters(), lr=1e-3)

Two forms of the same update, chosen by ``blocked``: the readable one first (whole
arrays, the formula line by line), then the cache-blocked one (``optimizer.py`` says
what blocking buys). They perform the same float operations in the same order, so
their results are bit-identical (``tests/test_optim.py`` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _blocks, _check_number, _Scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), PyTorch's algorithm. For each parameter p with gradient g,
    at step t = 1, 2, ...:

        g = g + weight_decay * p                      (L2 penalty in the gradient, not AdamW)
        m = beta1 * m + (1 - beta1) * g               (state "exp_avg")
        v = beta2 * v + (1 - beta2) * g^2             (state "exp_avg_sq")
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The division by 1 - beta^t (bias correction) undoes the pull of m and v
    towards their zero start. State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``, PyTorch's keys.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, blocked: bool = True) -> None:
        _check_number("lr", lr, 0.0)
        _check_number("eps", eps, 0.0)
        _check_number("weight_decay", weight_decay, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam betas must be a pair (beta1, beta2), got {betas!r}")
        for index, beta in enumerate(betas):
            _check_number(f"betas[{index}]", beta, 0.0)
            if not beta < 1:
                raise ValueError(f"Adam betas[{index}] must be in [0, 1), got {beta!r}")
        self.blocked = bool(blocked)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        scratch = _Scratch()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.get(param)
                if state is None:
                    xp = get_array_module(param.array)
                    state = self.state[param] = {"step": 0, "exp_avg": xp.zeros_like(param.array),
                                                 "exp_avg_sq": xp.zeros_like(param.array)}
                state["step"] += 1
                arrays = (param.array, param.grad.array, state["exp_avg"], state["exp_avg_sq"])
                if not self.blocked:
                    self._step_readable(*arrays, group, state["step"])
                    continue
                for block in _blocks(*arrays):
                    self._step_block(block, *scratch.pair(block[0]), group, state["step"])

    @staticmethod
    def _step_readable(p: Any, g: Any, exp_avg: Any, exp_avg_sq: Any, group: dict[str, Any],
                       step: int) -> None:
        """The formula on whole arrays: ``p``, ``exp_avg`` and ``exp_avg_sq`` change in place."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        exp_avg += (1 - beta1) * (g - exp_avg)  # = beta1 m + (1 - beta1) g, as torch's lerp
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g
        step_size = lr / (1 - beta1 ** step)
        denominator = get_array_module(p).sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
        p -= step_size * (exp_avg / denominator)

    @staticmethod
    def _step_block(block: list[Any], t: Any, u: Any, group: dict[str, Any], step: int) -> None:
        """The same update on one cache block of ``p, g, m, v``; ``t``, ``u`` are scratch."""
        p, g, exp_avg, exp_avg_sq = block
        lr, (beta1, beta2) = group["lr"], group["betas"]
        xp = get_array_module(p)
        if group["weight_decay"] != 0:
            g = xp.add(g, xp.multiply(group["weight_decay"], p, out=u), out=u)  # g + wd * p
        exp_avg += xp.multiply(1 - beta1, xp.subtract(g, exp_avg, out=t), out=t)
        exp_avg_sq *= beta2
        exp_avg_sq += xp.multiply(xp.multiply(1 - beta2, g, out=t), g, out=t)
        step_size = lr / (1 - beta1 ** step)
        denominator = xp.divide(xp.sqrt(exp_avg_sq, out=t), math.sqrt(1 - beta2 ** step), out=t)
        denominator += group["eps"]
        p -= xp.multiply(step_size, xp.divide(exp_avg, denominator, out=t), out=t)
