"""Adadelta with PyTorch's exact update: weight decay, ``maximize``.

    opt = optim.Adadelta(model.parameters(), lr=1.0, rho=0.9)

One readable form: whole arrays, the formula line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _check_flags, _check_number


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012), PyTorch's algorithm. For each parameter p with gradient g:

        g = -g if maximize else g
        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g^2                       (state "square_avg")
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta^2                   (state "acc_delta")
        p = p - lr * delta

    The step is the ratio of two running root mean squares, of past updates and
    of past gradients, so its units are those of p and ``lr=1.0`` is the natural
    default. State per parameter: ``step``, ``square_avg``, ``acc_delta``.
    ``foreach``, ``capturable`` and ``differentiable`` are accepted and ignored.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False) -> None:
        for name, value in (("lr", lr), ("rho", rho), ("eps", eps), ("weight_decay", weight_decay)):
            _check_number(name, value, 0.0)
        if not rho <= 1:
            raise ValueError(f"Adadelta rho must be in [0, 1], got {rho!r}")
        _check_flags("Adadelta", foreach=foreach, capturable=capturable, maximize=maximize,
                     differentiable=differentiable)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, capturable=capturable, foreach=foreach,
                                      differentiable=differentiable))

    def _new_state(self, param: Any, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_array_module(param.array)
        return dict(step=0, square_avg=xp.zeros_like(param.array), acc_delta=xp.zeros_like(param.array))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._evaluate(closure)
        for param, group, state in self._stepped_params():
            self._step_readable(param.array, param.grad.array, state, group)
        return loss

    @staticmethod
    def _step_readable(p: Any, g: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        """The formula on whole arrays: ``p`` and the two running averages change in place."""
        rho, eps = group["rho"], group["eps"]
        xp = get_array_module(p)
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg *= rho
        square_avg += (1 - rho) * g * g
        delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * g
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        p -= group["lr"] * delta
