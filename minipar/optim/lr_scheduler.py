"""Learning-rate schedules with PyTorch's names, signatures and float-for-float trajectories.

    from minipar.optim import lr_scheduler        # as torch.optim.lr_scheduler
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train_one_epoch(model, opt)                # ... opt.step() inside
        scheduler.step()                           # lr for the next epoch

With ``t = last_epoch`` and ``base_lr`` the group's ``initial_lr``:

    ===========================  ==============================================================
    LambdaLR(lr_lambda)          base_lr * lr_lambda(t)
    MultiplicativeLR(lr_lambda)  lr_{t-1} * lr_lambda(t)
    StepLR(step_size, gamma)     base_lr * gamma ** (t // step_size)
    MultiStepLR(milestones, g)   base_lr * g ** (milestones passed)
    ConstantLR(factor, T)        base_lr * factor until T, then base_lr
    LinearLR(start, end, T)      base_lr * (start + (end - start) * min(t, T) / T)
    ExponentialLR(gamma)         base_lr * gamma ** t
    PolynomialLR(T, power)       base_lr * (1 - min(t, T) / T) ** power
    CosineAnnealingLR(T, eta)    eta + (base_lr - eta) * (1 + cos(pi t / T)) / 2
    CosineAnnealingWarmRestarts  the same within each period T_0, T_0 T_mult, ...
    OneCycleLR(max_lr, T)        up to max_lr, then down to max_lr / div / final_div
    CyclicLR(base_lr, max_lr)    a triangle wave between the two (height scaled per mode)
    ReduceLROnPlateau            times factor when the metric stops improving
    SequentialLR, ChainedScheduler   one after another / all at once
    ===========================  ==============================================================

The base class and how a step works (the constructor's first step, chainable and closed forms,
state dicts that ``minipar.save`` writes without pickling) are in ``lr_scheduler_base.py``.
"""

from minipar.optim.lr_scheduler_base import LRScheduler, _LRScheduler
from minipar.optim.lr_schedulers_composite import ChainedScheduler, ReduceLROnPlateau, SequentialLR
from minipar.optim.lr_schedulers_cyclic import CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR
from minipar.optim.lr_schedulers_decay import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    PolynomialLR,
    StepLR,
)
from minipar.optim.lr_schedulers_triangular import CyclicLR

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "_LRScheduler",
]
