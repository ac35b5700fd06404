"""Adam with PyTorch's exact update."""


from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _blocks, _check_number, _Scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with PyTorch's exact update and L2 weight decay.

    For each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + weight_decay * p                      (L2 penalty in the gradient, not AdamW)
        m = beta1 * m + (1 - beta1) * g               (state "exp_avg")
        v = beta2 * v + (1 - beta2) * g^2             (state "exp_avg_sq")
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The division by 1 - beta^t (bias correction) undoes the pull of m and v
    towards their zero start. State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``, PyTorch's keys.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        _check_number("lr", lr, 0.0)
        _check_number("eps", eps, 0.0)
        _check_number("weight_decay", weight_decay, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam betas must be a pair (beta1, beta2), got {betas!r}")
        for index, beta in enumerate(betas):
            _check_number(f"betas[{index}]", beta, 0.0)
            if not beta < 1:
                raise ValueError(f"Adam betas[{index}] must be in [0, 1), got {beta!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        scratch = _Scratch()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.get(param)
                if state is None:
                    xp = get_array_module(param.data)
                    state = self.state[param] = {"step": 0, "exp_avg": xp.zeros_like(param.data),
                                                 "exp_avg_sq": xp.zeros_like(param.data)}
                state["step"] += 1
                for block in _blocks(param.data, param.grad, state["exp_avg"], state["exp_avg_sq"]):
                    self._update(block, *scratch.pair(block[0]), group, state["step"])

    @staticmethod
    def _update(block: list[Any], t: Any, u: Any, group: dict[str, Any], step: int) -> None:
        """One block of ``p, g, m, v`` (m, v and p in place); ``t``, ``u`` are scratch."""
        p, g, exp_avg, exp_avg_sq = block
        lr, (beta1, beta2) = group["lr"], group["betas"]
        xp = get_array_module(p)
        if group["weight_decay"] != 0:
            g = xp.add(g, xp.multiply(p, group["weight_decay"], out=u), out=u)  # g + wd * p
        exp_avg += xp.multiply(xp.subtract(g, exp_avg, out=t), 1 - beta1, out=t)  # = b1 m + (1-b1) g
        exp_avg_sq *= beta2
        exp_avg_sq += xp.multiply(xp.multiply(g, 1 - beta2, out=t), g, out=t)
        step_size = lr / (1 - beta1 ** step)
        denominator = xp.divide(xp.sqrt(exp_avg_sq, out=t), math.sqrt(1 - beta2 ** step), out=t)
        denominator += group["eps"]
        p -= xp.multiply(xp.divide(exp_avg, denominator, out=t), step_size, out=t)


