"""Schedules made of schedules (SequentialLR, ChainedScheduler), and the one driven by a metric
(ReduceLROnPlateau).

    warmup = optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    decay = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=95)
    scheduler = optim.lr_scheduler.SequentialLR(opt, [warmup, decay], milestones=[5])

    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=3)
    for epoch in ...: train(...); plateau.step(validation_loss)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from minipar.optim.lr_scheduler_base import LRScheduler, checked_param_groups, group_values


def _checked_parts(owner: str, optimizer: Any, schedulers: Sequence[Any]) -> None:
    if len(schedulers) < 1:
        raise ValueError(f"{owner} expects at least one scheduler, but got none")
    for index, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(
                f"{owner}: the scheduler at index {index} ({type(scheduler).__name__}) has no "
                "`optimizer` attribute"
            )
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support ReduceLROnPlateau (its step needs a metric), got one "
                f"at index {index}"
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but the "
                f"{type(scheduler).__name__} at index {index} has another one"
            )


class _CompositeScheduler(LRScheduler):
    """State-dict handling for a scheduler of schedulers: each part saves its own state dict."""

    _schedulers: list[LRScheduler]
    _not_saved = ("optimizer", "_schedulers")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        parts = state.pop("_schedulers")
        if len(parts) != len(self._schedulers):
            raise ValueError(
                f"state dict holds {len(parts)} schedulers, {type(self).__name__} has {len(self._schedulers)}"
            )
        super().load_state_dict(state)
        for scheduler, part in zip(self._schedulers, parts, strict=True):
            scheduler.load_state_dict(part)


class SequentialLR(_CompositeScheduler):
    """``schedulers[i]`` runs for ``milestones[i-1] <= t < milestones[i]``.

    At a milestone the next scheduler starts from its own epoch 0 (its closed form at t=0, from
    the groups' ``initial_lr``); between milestones the active one steps as usual. The
    constructor rewinds every part by one epoch and re-runs the first part's initial step, so
    the parts' own constructor steps leave no trace (as in PyTorch).
    """

    def __init__(
        self, optimizer: Any, schedulers: list[LRScheduler], milestones: list[int], last_epoch: int = -1
    ) -> None:
        groups = checked_param_groups(optimizer, "SequentialLR")
        _checked_parts("SequentialLR", optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR expects one milestone fewer than schedulers, got {len(schedulers)} "
                f"schedulers and {len(milestones)} milestones"
            )
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in groups:  # undo the parts' constructor steps ...
            group["lr"] = group["initial_lr"]
        self._rewind(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()  # ... and take the first one's again
        self._last_lr = first.get_last_lr()

    def _rewind(self, scheduler: Any) -> None:
        """Every (nested) part's ``last_epoch`` one back."""
        if scheduler is not self and not hasattr(scheduler, "_schedulers"):
            if hasattr(scheduler, "last_epoch"):
                scheduler.last_epoch -= 1
            return
        for part in scheduler._schedulers:
            self._rewind(part)

    def step(self) -> None:  # type: ignore[override]
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # a fresh start: the part's epoch 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_CompositeScheduler):
    """Every part steps, in order, each step: the rate is the product of all their factors."""

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Any | None = None) -> None:
        if optimizer is None and len(schedulers) > 0:
            optimizer = getattr(schedulers[0], "optimizer", None)
        _checked_parts("ChainedScheduler", optimizer, schedulers)
        checked_param_groups(optimizer, "ChainedScheduler")
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = group_values(optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = group_values(self.optimizer, "lr")


class ReduceLROnPlateau(LRScheduler):
    """Times ``factor`` when the metric has not improved for more than ``patience`` steps.

    "Improved" (mode, threshold_mode): min/rel ``a < best * (1 - threshold)``, min/abs
    ``a < best - threshold``, max/rel ``a > best * (1 + threshold)``, max/abs ``a > best + threshold``.
    On a reduction ``lr = max(lr * factor, min_lr)``, skipped when it would change lr by
    ``eps`` or less; then ``cooldown`` steps pass in which bad epochs are not counted.
    """

    def __init__(
        self,
        optimizer: Any,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau's factor should be < 1.0, got {factor!r}")
        groups = checked_param_groups(optimizer, "ReduceLROnPlateau")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"expected {len(groups)} min_lrs (one per param group), got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = group_values(optimizer, "lr")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown: expected 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown: expected 'rel' or 'abs'")
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than the threshold."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return current < best * (1.0 - self.threshold)
        if self.mode == "min":
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (self.threshold + 1.0)
        return current > best + self.threshold

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one value of the watched metric (a number, or a one-element Tensor/array)."""
        try:
            current = float(metrics.item() if hasattr(metrics, "item") else metrics)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"ReduceLROnPlateau.step expects a number (the metric), got {type(metrics).__name__}: {error}"
            ) from None
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during a cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = group_values(self.optimizer, "lr")

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):  # a param group was added since
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"the optimizer has {len(groups)} param groups but ReduceLROnPlateau was "
                    f"given {len(self.min_lrs)} min_lrs: set `min_lrs` to one per group"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr
