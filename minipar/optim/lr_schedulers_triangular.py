"""CyclicLR: the rate runs up and down between two bounds (Smith, "Cyclical Learning Rates", 2017).

scheduler = optim.lr_scheduler.CyclicLR(opt, base_lr=0.001, max_lr=0.1, step_size_up=200)
for x, y in loader: ...; opt.step(); scheduler.step()      # CyclicLR steps once per batch
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable
from typing import Any

from minipar.optim.lr_scheduler_base import (
    LRScheduler,
    checked_param_groups,
    cycles_beta1,
    per_group,
    set_momentum,
)

MODES = ("triangular", "triangular2", "exp_range")


class CyclicLR(LRScheduler):
    """``lr_t = base_lr + (max_lr - base_lr) * h(t) * scale(...)`` with ``h`` a triangle wave.

    With ``T = step_size_up + step_size_down``, ``cycle = floor(1 + t / T)`` and
    ``x = 1 + t / T - cycle`` (where in the cycle, 0..1), the triangle is ``h = x / r`` on the way
    up (``x <= r``, ``r = step_size_up / T``) and ``h = (x - 1) / (r - 1)`` on the way down.
    ``scale`` is 1 ("triangular"), ``1 / 2 ** (cycle - 1)`` ("triangular2": the height halves
    every cycle), ``gamma ** t`` ("exp_range"), or ``scale_fn`` of ``cycle`` or of ``t``
    (``scale_mode``). With ``cycle_momentum`` the momentum runs the other way:
    ``max_momentum - (max_momentum - base_momentum) * h * scale``.
    """

    _not_saved = ("optimizer", "_scale_fn_custom")

    def __init__(
        self,
        optimizer: Any,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        groups = checked_param_groups(optimizer, "CyclicLR")
        base_lrs = per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for group, group_base_lr in zip(groups, base_lrs, strict=True):
                group["lr"] = group_base_lr
        self.max_lrs = per_group("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in MODES and scale_fn is None:
            raise ValueError(f"CyclicLR's mode must be one of {MODES} (or give a scale_fn), got {mode!r}")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        if scale_fn is None:  # the built-in modes fix what the scale is a function of
            self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = cycles_beta1(optimizer)
            self.base_momentums = per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = per_group("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for group, group_max, group_base in zip(
                    groups, self.max_momentums, self.base_momentums, strict=True
                ):
                    self._set_momentum(group, group_max)
                    group["max_momentum"] = group_max
                    group["base_momentum"] = group_base
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs  # the lower bound, whatever initial_lr the groups held before

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        set_momentum(group, momentum, self.use_beta1)

    def scale_fn(self, x: float) -> float:
        """The height of the triangle at ``x`` (a cycle number or a step, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def get_lr(self) -> list[float]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            height = x / self.step_ratio
        else:
            height = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [
            base_lr + (max_lr - base_lr) * height * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for group, base_momentum, max_momentum in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                self._set_momentum(group, max_momentum - (max_momentum - base_momentum) * height * scale)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """As the base's; a custom ``scale_fn`` is saved as None (a function) or its attributes."""
        state = super().state_dict()
        fn = self._scale_fn_custom
        has_attributes = fn is not None and not isinstance(fn, types.FunctionType) and hasattr(fn, "__dict__")
        state["_scale_fn_custom"] = copy.deepcopy(vars(fn)) if has_attributes else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        attributes = state.pop("_scale_fn_custom", None)
        super().load_state_dict(state)
        if attributes is not None and self._scale_fn_custom is not None:
            vars(self._scale_fn_custom).update(attributes)
