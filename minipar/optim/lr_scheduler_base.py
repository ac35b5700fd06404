"""The learning-rate scheduler base class: one ``step()`` per epoch (or per batch) rewrites ``lr``.

    opt = optim.SGD(model.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...); opt.step()            # the optimizer steps first,
        scheduler.step()                  # then the schedule moves on

A scheduler knows the optimizer only through ``optimizer.param_groups``, a list of
dicts: it reads and writes each group's ``"lr"`` (OneCycleLR also ``"momentum"`` or
``"betas"``), and stores the starting rate as ``"initial_lr"`` in the group, as PyTorch does,
so a scheduler built later on the same optimizer (``SequentialLR``'s parts) starts from it.

Two forms of every rule. PyTorch computes a new rate *from the current one* (the chainable
or recursive form: ``lr_t = lr_{t-1} * gamma``), so several schedulers may act on one
optimizer and each multiplies in its own factor. Each class's docstring gives the plain
closed form (``lr_t = base_lr * gamma ** t``) as well; ``step(epoch)`` and ``SequentialLR``
at a milestone use it. On one scheduler alone the two agree to rounding (a test checks).

The constructor takes the first step itself: ``last_epoch`` goes from -1 to 0 and the
optimizer holds the epoch-0 rate before any training, exactly as in PyTorch, so the float
sequences match PyTorch's step by step.

State dicts hold plain numbers, lists, dicts and strings only (never functions), so
``minipar.save(scheduler.state_dict(), path)`` writes them without pickling.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any


def checked_param_groups(optimizer: Any, owner: str) -> list[dict[str, Any]]:
    """``optimizer.param_groups`` if it is a non-empty list of dicts holding ``"lr"``; else TypeError."""
    groups = getattr(optimizer, "param_groups", None)
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, dict) and "lr" in g for g in groups)
    ):
        raise TypeError(
            f"{owner} expects an Optimizer (param_groups: a list of dicts with 'lr'), "
            f"got {type(optimizer).__name__}"
        )
    return groups


def cycles_beta1(optimizer: Any) -> bool:
    """For ``cycle_momentum``: True if the momentum to cycle is beta1 (``betas``), False for
    ``momentum``; ValueError (PyTorch's words) if the optimizer has neither."""
    defaults = getattr(optimizer, "defaults", {})
    if "momentum" not in defaults and "betas" not in defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return "betas" in defaults


def set_momentum(group: dict[str, Any], momentum: float, beta1: bool) -> None:
    """Write a cycled momentum into ``group``: beta1 of its ``betas``, or its ``momentum``."""
    if beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def per_group(name: str, optimizer: Any, value: Any) -> list[Any]:
    """One value per parameter group: a list/tuple must have one entry per group, a scalar repeats."""
    count = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{name} must have one value per param group: expected {count}, got {len(value)}"
            )
        return list(value)
    return [value] * count


def group_values(optimizer: Any, key: str) -> list[Any]:
    """``[group[key] for every param group]``."""
    return [group[key] for group in optimizer.param_groups]


class LRScheduler:
    """Base class: holds ``optimizer``, ``base_lrs``, ``last_epoch``; subclasses define ``get_lr()``.

    ``get_lr()`` returns the rates for epoch ``self.last_epoch`` (already advanced), usually
    computed from the groups' current rates; ``_get_closed_form_lr()``, where defined, computes
    them from ``base_lrs`` alone. ``get_last_lr()`` is what the last step wrote.

    ``last_epoch=-1`` starts fresh (each group's ``initial_lr`` is set from its ``lr`` unless
    already there); ``last_epoch=k >= 0`` resumes and needs ``initial_lr`` in every group.
    """

    _is_initial: bool = False  # True only while the constructor's own first step runs
    _not_saved: tuple[str, ...] = (
        "optimizer",
    )  # attributes that are not state (the optimizer is saved by its owner)

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        groups = checked_param_groups(optimizer, type(self).__name__)
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{index}] when resuming a "
                        f"scheduler with last_epoch={last_epoch}: load the optimizer's state dict first"
                    )
        self.base_lrs: list[float] = group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The constructor's step: epoch -1 -> 0 (or k -> k+1 on resume)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial  # back to the class attribute, False; not part of the state

    def get_lr(self) -> list[float]:
        raise NotImplementedError(f"{type(self).__name__} must define get_lr()")

    def get_last_lr(self) -> list[float]:
        """The rate of each param group as the last step left it."""
        return self._last_lr

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (``epoch`` given: jump there, by the closed form; deprecated as in torch)."""
        self._step_count += 1
        if epoch is not None:
            warnings.warn(
                "passing an epoch to scheduler.step() is deprecated (as in PyTorch); it uses "
                "the closed form where the scheduler has one",
                UserWarning,
                stacklevel=2,
            )
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_get_closed_form_lr", None)
            lrs = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = group_values(self.optimizer, "lr")

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but ``_not_saved`` ones, copied: plain numbers, lists, dicts, strings."""
        return {key: copy.deepcopy(value) for key, value in vars(self).items() if key not in self._not_saved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned (also after ``minipar.save``/``load``)."""
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"{type(self).__name__}.load_state_dict expects a dict, got {type(state_dict).__name__}"
            )
        self.__dict__.update(copy.deepcopy(state_dict))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={getattr(self, '_last_lr', None)})"
        )


class _LRScheduler(LRScheduler):
    """The old name of ``LRScheduler``, kept (as in PyTorch) for code that subclasses it."""
