"""Schedules that follow a curve: cosine annealing (with warm restarts) and the one-cycle policy.

scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=len(loader) * epochs)
for x, y in loader: ...; opt.step(); scheduler.step()      # OneCycleLR steps once per batch
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from minipar.optim.lr_scheduler_base import (
    LRScheduler,
    checked_param_groups,
    cycles_beta1,
    group_values,
    per_group,
    set_momentum,
)


class CosineAnnealingLR(LRScheduler):
    """``lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` (SGDR without restarts).

    Recursive form (PyTorch's), so other schedulers' factors carry through:
    ``lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi t / T_max)) / (1 + cos(pi (t-1) / T_max))``,
    and at the bottom of each period (``(t - 1 - T_max) % (2 T_max) == 0``, where the ratio is 0/0)
    ``lr_t = lr_{t-1} + (base_lr - eta_min) * (1 - cos(pi / T_max)) / 2``. Past ``T_max`` the rate
    climbs back up: the curve is periodic with period ``2 T_max``.
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:  # noqa: N803
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Real) or T_max <= 0:
            raise ValueError(f"CosineAnnealingLR expects a positive T_max, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        t, period = self.last_epoch, self.T_max
        if (t - 1 - period) % (2 * period) == 0:  # leaving the minimum: the ratio below would be 0/0
            return [
                group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / period)) / 2
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / period)) / (1 + math.cos(math.pi * (t - 1) / period))
        return [ratio * (group["lr"] - self.eta_min) + self.eta_min for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class CosineAnnealingWarmRestarts(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` (SGDR, Loshchilov & Hutter).

    ``T_cur`` counts epochs since the last restart; a restart comes when it reaches ``T_i``, and the
    next period is ``T_i * T_mult`` (``T_0`` first). ``step(epoch)`` accepts fractional epochs.
    """

    def __init__(
        self,
        optimizer: Any,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,  # noqa: N803
        last_epoch: int = -1,
    ) -> None:
        if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0!r}")
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult!r}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, (float, int)):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min!r} of type {type(eta_min).__name__}"
            )
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
            for base_lr in self.base_lrs
        ]

    def step(self, epoch: float | None = None) -> None:
        """One epoch on (``T_cur += 1``, restarting at ``T_i``), or straight to a (fractional) ``epoch``."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        elif epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch!r}")
        elif epoch < self.T_0:
            self.T_i, self.T_cur = self.T_0, epoch
        elif self.T_mult == 1:
            self.T_cur = epoch % self.T_0
        else:  # restarts so far: the n with T_0 (T_mult^n - 1) / (T_mult - 1) <= epoch
            n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
            self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
            self.T_i = self.T_0 * self.T_mult**n
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = group_values(self.optimizer, "lr")


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up to ``max_lr``, then anneal far below the start.

    With ``T = total_steps`` (or ``epochs * steps_per_epoch``), ``initial_lr = max_lr / div_factor``
    and ``min_lr = initial_lr / final_div_factor``, the phases end at step

        two phases:   pct_start*T - 1: initial_lr -> max_lr;   T - 1: max_lr -> min_lr
        three_phase:  pct_start*T - 1: initial_lr -> max_lr;   2*pct_start*T - 2: max_lr -> initial_lr;
                      T - 1: initial_lr -> min_lr

    and within a phase from step ``a`` to ``b``, with ``pct = (t - a) / (b - a)``, the rate goes
    from ``start`` to ``end`` as ``end + (start - end) * (1 + cos(pi * pct)) / 2`` ("cos") or
    ``start + (end - start) * pct`` ("linear"). With ``cycle_momentum`` the momentum (SGD's
    ``momentum`` or Adam's ``betas[0]``) runs the other way, ``max_momentum -> base_momentum``
    while the rate climbs. Stepping past ``total_steps`` is a ValueError.
    """

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        groups = checked_param_groups(optimizer, "OneCycleLR")
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if isinstance(pct_start, bool) or not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}"
            )
        self._anneal_func_type = anneal_strategy
        warmup_end = float(pct_start * self.total_steps) - 1
        # Each phase: [end step, group key it starts from, key it ends at, momentum start key, end key].
        if three_phase:
            self._schedule_phases = [
                [warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [
                    float(2 * pct_start * self.total_steps) - 2,
                    "max_lr",
                    "initial_lr",
                    "base_momentum",
                    "max_momentum",
                ],
                [self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"],
            ]
        else:
            self._schedule_phases = [
                [warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"],
            ]
        max_lrs = per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, group_max_lr in zip(groups, max_lrs, strict=True):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = cycles_beta1(optimizer)
            max_momentums = per_group("max_momentum", optimizer, max_momentum)
            base_momentums = per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for group, group_max, group_base in zip(groups, max_momentums, base_momentums, strict=True):
                    self._set_momentum(group, group_max)
                    group["max_momentum"] = group_max
                    group["base_momentum"] = group_base
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        set_momentum(group, momentum, self.use_beta1)

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        """Cosine from ``start`` (pct=0) to ``end`` (pct=1)."""
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    @staticmethod
    def _annealing_linear(start: float, end: float, pct: float) -> float:
        """Straight line from ``start`` (pct=0) to ``end`` (pct=1)."""
        return (end - start) * pct + start

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        return self._annealing_linear(start, end, pct)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"Tried to step {step} times. The specified number of total steps is {self.total_steps}"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            phase_start = 0.0
            for index, (phase_end, lr_from, lr_to, momentum_from, momentum_to) in enumerate(
                self._schedule_phases
            ):
                if (
                    step <= phase_end or index == len(self._schedule_phases) - 1
                ):  # the phase holding this step
                    pct = (step - phase_start) / (phase_end - phase_start)
                    lrs.append(self._anneal(group[lr_from], group[lr_to], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[momentum_from], group[momentum_to], pct))
                    break
                phase_start = phase_end
        return lrs


def _total_steps(total_steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> int:
    """``total_steps``, or else ``epochs * steps_per_epoch``; each a positive int."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if total_steps is not None:
        if not positive_int(total_steps):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps!r}")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if not positive_int(epochs):
            raise ValueError(f"Expected positive integer epochs, but got {epochs!r}")
        if not positive_int(steps_per_epoch):
            raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch!r}")
        return epochs * steps_per_epoch
    raise ValueError(
        "OneCycleLR needs either total_steps OR (epochs AND steps_per_epoch), got "
        f"total_steps={total_steps!r}, epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}"
    )
