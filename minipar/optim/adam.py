"""Adam with PyTorch's exact update: L2 or decoupled weight decay, AMSGrad, ``maximize``.

    opt = optim.Adam(model.parameters(), lr=1e-3)

Two forms of the same update, chosen by ``blocked``: the readable one first (whole
arrays, the formula line by line), then the cache-blocked one (``optimizer.py`` says
what blocking buys). They perform the same float operations in the same order, so
their results are bit-identical (``tests/test_optim.py`` checks it). ``AdamW``
(``adamw.py``) is this class with ``decoupled_weight_decay=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _blocks, _check_betas, _check_flags, _check_number, _Scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), PyTorch's algorithm. For each parameter p with gradient g,
    at step t = 1, 2, ...:

        g = -g if maximize else g
        g = g + weight_decay * p                      (L2 penalty in the gradient), or with
        p = p * (1 - lr * weight_decay)               decoupled_weight_decay (AdamW) instead
        m = beta1 * m + (1 - beta1) * g               (state "exp_avg")
        v = beta2 * v + (1 - beta2) * g^2             (state "exp_avg_sq")
        v_max = max(v_max, v); v = v_max              (amsgrad only: state "max_exp_avg_sq")
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The division by 1 - beta^t (bias correction) undoes the pull of m and v
    towards their zero start. AMSGrad (Reddi et al., 2018) divides by the largest
    second moment seen so far, so a parameter's step size never grows back.
    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (and
    ``max_exp_avg_sq``), PyTorch's keys. ``foreach``, ``capturable``,
    ``differentiable`` and ``fused`` are accepted and ignored (``optimizer.py``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False, blocked: bool = True) -> None:
        name = type(self).__name__
        _check_number("lr", lr, 0.0)
        _check_number("eps", eps, 0.0)
        _check_number("weight_decay", weight_decay, 0.0)
        _check_betas(name, betas)
        _check_flags(name, amsgrad=amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
                     differentiable=differentiable, fused=fused,
                     decoupled_weight_decay=decoupled_weight_decay)
        self.blocked = bool(blocked)
        super().__init__(params, dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable,
            fused=fused, decoupled_weight_decay=decoupled_weight_decay))

    def _new_state(self, param: Any, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_array_module(param.array)
        state = dict(step=0, exp_avg=xp.zeros_like(param.array), exp_avg_sq=xp.zeros_like(param.array))
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.zeros_like(param.array)
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._evaluate(closure)
        scratch = _Scratch()
        for param, group, state in self._stepped_params():
            arrays = [param.array, param.grad.array, state["exp_avg"], state["exp_avg_sq"]]
            if group["amsgrad"]:
                arrays.append(state["max_exp_avg_sq"])
            if not self.blocked:
                self._step_readable(*arrays, group=group, step=state["step"])
                continue
            for block in _blocks(*arrays):
                self._step_block(block, *scratch.pair(block[0]), group, state["step"])
        return loss

    @staticmethod
    def _step_readable(p: Any, g: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *,
                       group: dict[str, Any], step: int) -> None:
        """The formula on whole arrays: ``p`` and the moments change in place."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        xp = get_array_module(p)
        if group["maximize"]:
            g = -g
        if weight_decay != 0 and group["decoupled_weight_decay"]:
            p *= 1 - lr * weight_decay  # AdamW: shrink the weights, outside the moments
        elif weight_decay != 0:
            g = g + weight_decay * p
        exp_avg += (1 - beta1) * (g - exp_avg)  # = beta1 m + (1 - beta1) g, as torch's lerp
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g
        second_moment = exp_avg_sq
        if max_exp_avg_sq is not None:  # amsgrad
            xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq
        step_size = lr / (1 - beta1 ** step)
        denominator = xp.sqrt(second_moment) / math.sqrt(1 - beta2 ** step) + eps
        p -= step_size * (exp_avg / denominator)

    @staticmethod
    def _step_block(block: list[Any], t: Any, u: Any, group: dict[str, Any], step: int) -> None:
        """The same update on one cache block of ``p, g, m, v`` (and ``v_max``); ``t``, ``u`` scratch."""
        p, g, exp_avg, exp_avg_sq = block[:4]
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        xp = get_array_module(p)
        if group["maximize"]:
            g = xp.negative(g, out=u)
        if weight_decay != 0 and group["decoupled_weight_decay"]:
            p *= 1 - lr * weight_decay
        elif weight_decay != 0:
            g = xp.add(g, xp.multiply(weight_decay, p, out=t), out=u)  # g + wd * p
        exp_avg += xp.multiply(1 - beta1, xp.subtract(g, exp_avg, out=t), out=t)
        exp_avg_sq *= beta2
        exp_avg_sq += xp.multiply(xp.multiply(1 - beta2, g, out=t), g, out=t)
        second_moment = exp_avg_sq
        if len(block) == 5:  # amsgrad
            second_moment = xp.maximum(block[4], exp_avg_sq, out=block[4])
        step_size = lr / (1 - beta1 ** step)
        denominator = xp.divide(xp.sqrt(second_moment, out=t), math.sqrt(1 - beta2 ** step), out=t)
        denominator += group["eps"]
        p -= xp.multiply(step_size, xp.divide(exp_avg, denominator, out=t), out=t)
