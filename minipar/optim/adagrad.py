"""Adagrad with PyTorch's exact update: learning-rate decay, weight decay, ``maximize``.

    opt = optim.Adagrad(model.parameters(), lr=1e-2)

One readable form: whole arrays, the formula line by line. (Sparse gradients,
which PyTorch's Adagrad also takes, do not exist in minipar.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _check_flags, _check_number


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), PyTorch's algorithm. For each parameter p with gradient g,
    at step t = 1, 2, ...:

        g = -g if maximize else g
        g = g + weight_decay * p
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s = s + g^2                                  (state "sum", starts at initial_accumulator_value)
        p = p - lr_t * g / (sqrt(s) + eps)

    The sum only grows, so each weight's step shrinks with the gradients it has
    already seen: rarely-updated weights keep large steps. As in PyTorch the state
    (``step``, ``sum``) is created for every parameter when the optimizer is built.
    ``foreach``, ``differentiable`` and ``fused`` are accepted and ignored.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 foreach: bool | None = None, *, maximize: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        for name, value in (("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                            ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)):
            _check_number(name, value, 0.0)
        _check_flags("Adagrad", foreach=foreach, maximize=maximize, differentiable=differentiable,
                     fused=fused)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      fused=fused))
        for group in self.param_groups:  # PyTorch makes Adagrad's state at construction
            for param in group["params"]:
                self.state[param].update(self._new_state(param, group))

    def _new_state(self, param: Any, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_array_module(param.array)  # (a group added later gets it at its first step)
        return dict(step=0, sum=xp.full_like(param.array, group["initial_accumulator_value"]))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._evaluate(closure)
        for param, group, state in self._stepped_params():
            self._step_readable(param.array, param.grad.array, state, group)
        return loss

    @staticmethod
    def _step_readable(p: Any, g: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        """The formula on whole arrays: ``p`` and ``sum`` change in place."""
        xp = get_array_module(p)
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        lr_t = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += g * g
        std = xp.sqrt(state["sum"]) + group["eps"]
        p -= lr_t * (g / std)
