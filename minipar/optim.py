"""Optimizers with PyTorch's exact update rules and state-dict layout.

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss.backward(); opt.step(); opt.zero_grad()

A state dict is ``{"state": {index: {...arrays...}}, "param_groups": [{...,
"params": [indices]}]}`` as in PyTorch, so it saves without pickling.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.tensor import Tensor


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses define ``step``."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        groups = list(params)
        if len(groups) == 0:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = list(group["params"])
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(
                    f"{type(self).__name__} expects Tensors/Parameters, got "
                    f"{type(param).__name__} at position {index}"
                )
            if not param.requires_grad:
                raise ValueError(f"parameter {index} does not require grad: nothing to optimize")
        full = {**self.defaults, **group, "params": params}
        self.param_groups.append(full)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none or param.grad is None:
                    param.grad = None
                else:
                    param.grad[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Parameters become indices in group order; state arrays are copied."""
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
                indices.append(index_of[id(param)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index_of[id(param)]] = {
                        k: (v.copy() if hasattr(v, "copy") else v)
                        for k, v in self.state[param].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(groups)} parameter groups, optimizer has "
                f"{len(self.param_groups)}"
            )
        params = [p for group in self.param_groups for p in group["params"]]
        saved_count = sum(len(g["params"]) for g in groups)
        if saved_count != len(params):
            raise ValueError(f"state dict holds {saved_count} parameters, optimizer has {len(params)}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for key, value in state_dict["state"].items():
            param = params[int(key)]
            self.state[param] = {k: copy.deepcopy(v) for k, v in value.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum and weight decay.

    g = grad + weight_decay * p
    b = g (first step), else b = momentum * b + (1 - dampening) * g
    g = g + momentum * b if nesterov else b
    p = p - lr * g
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      dampening=dampening, nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            weight_decay, dampening = group["weight_decay"], group["dampening"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if weight_decay != 0:
                    grad = grad + weight_decay * param.data
                if momentum != 0:
                    state = self.state.setdefault(param, {})
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = state["momentum_buffer"] = grad.copy()
                    else:
                        buffer *= momentum
                        buffer += (1 - dampening) * grad
                    grad = grad + momentum * buffer if group["nesterov"] else buffer
                param.data -= lr * grad


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
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                state = self.state.get(param)
                if state is None:
                    xp = get_array_module(param.data)
                    state = self.state[param] = {"step": 0, "exp_avg": xp.zeros_like(param.data),
                                                 "exp_avg_sq": xp.zeros_like(param.data)}
                state["step"] += 1
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if weight_decay != 0:
                    grad = grad + weight_decay * param.data
                exp_avg += (1 - beta1) * (grad - exp_avg)  # = beta1 * m + (1 - beta1) * g
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                step_size = lr / (1 - beta1 ** step)
                denominator = get_array_module(exp_avg_sq).sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step)
                denominator += eps
                param.data -= step_size * (exp_avg / denominator)


def _check_number(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")
