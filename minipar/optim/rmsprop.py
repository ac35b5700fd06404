"""RMSprop with PyTorch's exact update: momentum, centering, weight decay, ``maximize``.

    opt = optim.RMSprop(model.parameters(), lr=1e-2, alpha=0.99)

One readable form: whole arrays, the formula line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _check_flags, _check_number


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), PyTorch's algorithm. For each parameter p with gradient g:

        g = -g if maximize else g
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2            (state "square_avg")
        centered:  m = alpha * m + (1 - alpha) * g   (state "grad_avg")
                   avg = sqrt(v - m^2) + eps         (divide by the standard deviation)
        else:      avg = sqrt(v) + eps               (divide by the root mean square)
        momentum > 0:  b = momentum * b + g / avg;  p = p - lr * b   (state "momentum_buffer")
        else:          p = p - lr * g / avg

    Each weight's step is scaled by a running estimate of its gradient's size, so
    steep and flat directions move at similar speeds. State per parameter:
    ``step``, ``square_avg`` (and ``momentum_buffer``, ``grad_avg``), PyTorch's keys.
    ``capturable``, ``foreach`` and ``differentiable`` are accepted and ignored.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        for name, value in (("lr", lr), ("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay),
                            ("momentum", momentum)):
            _check_number(name, value, 0.0)
        _check_flags("RMSprop", centered=centered, capturable=capturable, foreach=foreach,
                     maximize=maximize, differentiable=differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _new_state(self, param: Any, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_array_module(param.array)
        state = dict(step=0, square_avg=xp.zeros_like(param.array))
        if group["momentum"] > 0:
            state["momentum_buffer"] = xp.zeros_like(param.array)
        if group["centered"]:
            state["grad_avg"] = xp.zeros_like(param.array)
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._evaluate(closure)
        for param, group, state in self._stepped_params():
            self._step_readable(param.array, param.grad.array, state, group)
        return loss

    @staticmethod
    def _step_readable(p: Any, g: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        """The formula on whole arrays: ``p`` and the state arrays change in place."""
        alpha = group["alpha"]
        xp = get_array_module(p)
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (g - grad_avg)  # = alpha m + (1 - alpha) g, as torch's lerp
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if group["momentum"] > 0:
            buffer = state["momentum_buffer"]
            buffer *= group["momentum"]
            buffer += g / avg
            p -= group["lr"] * buffer
        else:
            p -= group["lr"] * (g / avg)
