"""minipar.optim.lr_scheduler against torch.optim.lr_scheduler: the same 50-step float trajectories.

Each case is one function ``build(lr_scheduler, optimizer)`` that is called once with minipar's
module and a minipar optimizer, once with torch's and a torch optimizer (two param groups, lrs
0.1 and 0.03), so both sides are built by the same line of code. Every step compares
``get_last_lr()``, each group's ``lr`` and its momentum (``momentum`` or ``betas[0]``), float64
Python floats, to 1e-12 relative.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch

import minipar
import minipar.optim.lr_scheduler
from minipar import nn, optim
from minipar.optim import lr_scheduler

STEPS = 50
REL = 1e-12
# A metric that falls, stalls, wobbles and rises: plateaus of several lengths for ReduceLROnPlateau.
METRICS = [
    1.0 / (1 + i // 6) + 0.002 * ((i * 7) % 3) + (0.05 if i in (20, 21) else 0.0) for i in range(STEPS + 1)
]


def two_groups(module: Any, kind: str) -> Any:
    """An optimizer (minipar's or torch's) over a Linear(3, 2): weight and bias in groups of lr 0.1, 0.03."""
    if module is lr_scheduler:
        layer = nn.Linear(3, 2)
        weight, bias = layer.weight, layer.bias
        optimizers: Any = optim
    else:
        weight, bias = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(2))
        optimizers = torch.optim
    groups = [{"params": [weight], "lr": 0.1}, {"params": [bias], "lr": 0.03}]
    if kind == "adam":
        return optimizers.Adam(groups, lr=0.1, betas=(0.9, 0.999))
    return optimizers.SGD(groups, lr=0.1, momentum=0.9)


def momentum_of(group: dict[str, Any]) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


def trajectory(
    module: Any, build: Callable[[Any, Any], Any], kind: str = "sgd", steps: int = STEPS
) -> list[Any]:
    """[(get_last_lr, group lrs, group momenta)] after construction and after each of ``steps`` steps."""
    optimizer = two_groups(module, kind)
    scheduler = build(module, optimizer)

    def record() -> tuple[list[float], list[float], list[float]]:
        groups = optimizer.param_groups
        return (list(scheduler.get_last_lr()), [g["lr"] for g in groups], [momentum_of(g) for g in groups])

    seen = [record()]
    for step in range(steps):
        if module is not lr_scheduler:
            optimizer.step()  # no gradients: a no-op that keeps torch from warning about the order
        if isinstance(scheduler, module.ReduceLROnPlateau):
            scheduler.step(METRICS[step])
        else:
            scheduler.step()
        seen.append(record())
    return seen


def assert_same_trajectory(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for step, (mine, torch_values) in enumerate(zip(ours, theirs)):
        for name, a_list, b_list in zip(("get_last_lr", "lr", "momentum"), mine, torch_values):
            assert len(a_list) == len(b_list), (
                f"step {step}: {name} has {len(a_list)} values, torch {len(b_list)}"
            )
            for a, b in zip(a_list, b_list):
                assert type(a) is float, f"step {step}: {name} is a {type(a).__name__}, expected a float"
                assert abs(a - b) <= REL * max(abs(a), abs(b)), f"step {step}: {name} {a!r} != torch's {b!r}"


CASES: dict[str, tuple[Callable[[Any, Any], Any], str]] = {
    "StepLR(7)": (lambda L, o: L.StepLR(o, 7), "sgd"),
    "StepLR(3, gamma=0.5)": (lambda L, o: L.StepLR(o, step_size=3, gamma=0.5), "sgd"),
    "MultiStepLR([10, 30])": (lambda L, o: L.MultiStepLR(o, [10, 30]), "sgd"),
    "MultiStepLR(repeated milestone)": (lambda L, o: L.MultiStepLR(o, [5, 20, 20, 35], gamma=0.5), "sgd"),
    "ExponentialLR(0.9)": (lambda L, o: L.ExponentialLR(o, 0.9), "sgd"),
    "ExponentialLR(0.97) on Adam": (lambda L, o: L.ExponentialLR(o, gamma=0.97), "adam"),
    "CosineAnnealingLR(50)": (lambda L, o: L.CosineAnnealingLR(o, T_max=50), "sgd"),
    "CosineAnnealingLR(10, eta_min) periodic": (
        lambda L, o: L.CosineAnnealingLR(o, 10, eta_min=0.001),
        "sgd",
    ),
    "CosineAnnealingLR(7)": (lambda L, o: L.CosineAnnealingLR(o, 7), "adam"),
    "LambdaLR(one lambda)": (lambda L, o: L.LambdaLR(o, lambda e: 0.95**e), "sgd"),
    "LambdaLR(one per group)": (
        lambda L, o: L.LambdaLR(o, [lambda e: 1.0 / (e + 1), lambda e: min(1.0, (e + 1) / 10)]),
        "sgd",
    ),
    "LinearLR()": (lambda L, o: L.LinearLR(o), "sgd"),
    "LinearLR(warm-up over 20)": (
        lambda L, o: L.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20),
        "sgd",
    ),
    "LinearLR(decay to 0.0 over 50)": (lambda L, o: L.LinearLR(o, 1.0, 0.0, total_iters=50), "sgd"),
    "OneCycleLR(cos, SGD momentum)": (lambda L, o: L.OneCycleLR(o, max_lr=0.5, total_steps=50), "sgd"),
    "OneCycleLR(linear, epochs x steps, per-group max_lr)": (
        lambda L, o: L.OneCycleLR(o, [0.5, 0.2], epochs=5, steps_per_epoch=10, anneal_strategy="linear"),
        "sgd",
    ),
    "OneCycleLR(three_phase)": (
        lambda L, o: L.OneCycleLR(
            o, 1.0, total_steps=50, pct_start=0.25, three_phase=True, div_factor=10.0, final_div_factor=100.0
        ),
        "sgd",
    ),
    "OneCycleLR(Adam betas)": (
        lambda L, o: L.OneCycleLR(o, 0.01, total_steps=60, base_momentum=[0.8, 0.85], max_momentum=0.9),
        "adam",
    ),
    "OneCycleLR(no cycle_momentum)": (
        lambda L, o: L.OneCycleLR(o, 0.3, total_steps=50, cycle_momentum=False, three_phase=True),
        "adam",
    ),
    "ReduceLROnPlateau()": (lambda L, o: L.ReduceLROnPlateau(o, patience=3), "sgd"),
    "ReduceLROnPlateau(default patience)": (lambda L, o: L.ReduceLROnPlateau(o), "sgd"),
    "ReduceLROnPlateau(max, abs, cooldown)": (
        lambda L, o: L.ReduceLROnPlateau(
            o, mode="max", factor=0.5, patience=2, threshold=0.01, threshold_mode="abs", cooldown=2
        ),
        "sgd",
    ),
    "ReduceLROnPlateau(min_lrs, eps)": (
        lambda L, o: L.ReduceLROnPlateau(o, patience=0, factor=0.5, min_lr=[0.01, 0.001], eps=1e-3),
        "sgd",
    ),
    "ReduceLROnPlateau(rel threshold, cooldown)": (
        lambda L, o: L.ReduceLROnPlateau(o, patience=1, cooldown=3, threshold=0.1),
        "adam",
    ),
    "SequentialLR(warm-up then cosine)": (
        lambda L, o: L.SequentialLR(
            o, [L.LinearLR(o, 0.1, total_iters=5), L.CosineAnnealingLR(o, T_max=45)], milestones=[5]
        ),
        "sgd",
    ),
    "SequentialLR(three parts)": (
        lambda L, o: L.SequentialLR(
            o,
            [L.ConstantLR(o, factor=0.5, total_iters=3), L.ExponentialLR(o, 0.9), L.StepLR(o, 5, gamma=0.5)],
            milestones=[10, 30],
        ),
        "sgd",
    ),
    "SequentialLR(lambda then milestones)": (
        lambda L, o: L.SequentialLR(
            o, [L.LambdaLR(o, lambda e: (e + 1) / 8), L.MultiStepLR(o, [4, 12])], milestones=[8]
        ),
        "adam",
    ),
    "ConstantLR()": (lambda L, o: L.ConstantLR(o), "sgd"),
    "ConstantLR(0.5, 10)": (lambda L, o: L.ConstantLR(o, factor=0.5, total_iters=10), "sgd"),
    "MultiplicativeLR": (lambda L, o: L.MultiplicativeLR(o, lambda e: 0.95), "sgd"),
    "MultiplicativeLR(per group)": (
        lambda L, o: L.MultiplicativeLR(o, [lambda e: 0.9, lambda e: 1 + 0.01 * e]),
        "sgd",
    ),
    "CosineAnnealingWarmRestarts(10)": (lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10), "sgd"),
    "CosineAnnealingWarmRestarts(5, 2, eta_min)": (
        lambda L, o: L.CosineAnnealingWarmRestarts(o, 5, T_mult=2, eta_min=1e-4),
        "sgd",
    ),
    "PolynomialLR()": (lambda L, o: L.PolynomialLR(o), "sgd"),
    "PolynomialLR(30, power 2)": (lambda L, o: L.PolynomialLR(o, total_iters=30, power=2.0), "sgd"),
    "ChainedScheduler": (
        lambda L, o: L.ChainedScheduler([L.ConstantLR(o, 0.1, 2), L.ExponentialLR(o, 0.9)]),
        "sgd",
    ),
    "ChainedScheduler(optimizer=)": (
        lambda L, o: L.ChainedScheduler([L.StepLR(o, 4), L.LinearLR(o, 0.5, total_iters=8)], optimizer=o),
        "sgd",
    ),
    "CyclicLR(triangular)": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=7), "sgd"),
    "CyclicLR(triangular2, asymmetric, per group)": (
        lambda L, o: L.CyclicLR(o, [0.01, 0.001], [0.1, 0.05], 4, step_size_down=9, mode="triangular2"),
        "sgd",
    ),
    "CyclicLR(exp_range, Adam betas)": (
        lambda L, o: L.CyclicLR(o, 0.001, 0.01, 5, mode="exp_range", gamma=0.97, base_momentum=0.85),
        "adam",
    ),
    "CyclicLR(scale_fn per iteration, no momentum)": (
        lambda L, o: L.CyclicLR(
            o,
            0.01,
            0.1,
            6,
            scale_fn=lambda x: 1 / (1 + 0.1 * x),
            scale_mode="iterations",
            cycle_momentum=False,
        ),
        "sgd",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trajectory_matches_torch_for_50_steps(name: str) -> None:
    build, kind = CASES[name]
    ours = trajectory(lr_scheduler, build, kind)
    theirs = trajectory(torch.optim.lr_scheduler, build, kind)
    assert_same_trajectory(ours, theirs)


# ----- state dicts: plain data, saved with minipar.save, resuming the same trajectory ------------
RESUMED = [
    "StepLR(3, gamma=0.5)",
    "MultiStepLR(repeated milestone)",
    "CosineAnnealingLR(10, eta_min) periodic",
    "LambdaLR(one per group)",
    "LinearLR(warm-up over 20)",
    "OneCycleLR(three_phase)",
    "OneCycleLR(Adam betas)",
    "ReduceLROnPlateau(max, abs, cooldown)",
    "SequentialLR(warm-up then cosine)",
    "SequentialLR(three parts)",
    "CosineAnnealingWarmRestarts(5, 2, eta_min)",
    "ChainedScheduler",
    "MultiplicativeLR(per group)",
    "CyclicLR(triangular2, asymmetric, per group)",
]


def assert_plain(value: Any, where: str = "state") -> None:
    """Only numbers, strings, bools, None, lists, tuples and dicts: nothing that would need pickle."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_plain(key, f"{where} key")
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_plain(item, f"{where}[{index}]")
    else:
        assert value is None or type(value) in (int, float, str, bool), f"{where} is a {type(value).__name__}"


def step_ours(scheduler: Any, step: int) -> None:
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(METRICS[step])
    else:
        scheduler.step()


@pytest.mark.parametrize("name", RESUMED)
def test_state_dict_saved_with_minipar_save_resumes_the_identical_trajectory(
    name: str, tmp_path: Any
) -> None:
    build, kind = CASES[name]
    optimizer = two_groups(lr_scheduler, kind)
    scheduler = build(lr_scheduler, optimizer)
    for step in range(20):
        step_ours(scheduler, step)
    assert_plain(scheduler.state_dict())
    minipar.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "run.npz"
    )
    uninterrupted = []
    for step in range(20, STEPS):
        step_ours(scheduler, step)
        uninterrupted.append((scheduler.get_last_lr(), [momentum_of(g) for g in optimizer.param_groups]))

    # A new run: build everything as before, then load the saved state over it.
    saved = minipar.load(tmp_path / "run.npz")
    optimizer = two_groups(lr_scheduler, kind)
    scheduler = build(lr_scheduler, optimizer)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    resumed = []
    for step in range(20, STEPS):
        step_ours(scheduler, step)
        resumed.append((scheduler.get_last_lr(), [momentum_of(g) for g in optimizer.param_groups]))
    assert resumed == uninterrupted  # bit for bit


def test_lambda_lr_state_dict_holds_no_functions_but_a_callable_objects_attributes() -> None:
    class Warmup:
        def __init__(self, steps: int) -> None:
            self.steps = steps

        def __call__(self, epoch: int) -> float:
            return min(1.0, (epoch + 1) / self.steps)

    optimizer = two_groups(lr_scheduler, "sgd")
    scheduler = lr_scheduler.LambdaLR(optimizer, [lambda e: 0.5, Warmup(10)])
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [None, {"steps": 10}]
    restored = lr_scheduler.LambdaLR(two_groups(lr_scheduler, "sgd"), [lambda e: 0.5, Warmup(3)])
    restored.load_state_dict(state)
    assert restored.lr_lambdas[1].steps == 10


def test_chainable_form_agrees_with_the_closed_form_in_the_docstring() -> None:
    builds = [
        lambda o: lr_scheduler.StepLR(o, 4, gamma=0.5),
        lambda o: lr_scheduler.MultiStepLR(o, [3, 9, 9, 30]),
        lambda o: lr_scheduler.ConstantLR(o, 0.25, 6),
        lambda o: lr_scheduler.LinearLR(o, 0.2, 0.9, 17),
        lambda o: lr_scheduler.ExponentialLR(o, 0.93),
        lambda o: lr_scheduler.PolynomialLR(o, 40, 1.5),
        lambda o: lr_scheduler.CosineAnnealingLR(o, 12, eta_min=0.002),
    ]
    for build in builds:
        scheduler = build(two_groups(lr_scheduler, "sgd"))
        for _ in range(STEPS):
            scheduler.step()
            for chained, closed in zip(scheduler.get_last_lr(), scheduler._get_closed_form_lr()):
                assert abs(chained - closed) <= 1e-12 * max(abs(closed), 1e-3), (
                    type(scheduler).__name__,
                    chained,
                    closed,
                )


def test_step_with_an_epoch_jumps_there_by_the_closed_form_as_torch_does() -> None:
    values = []
    for module in (lr_scheduler, torch.optim.lr_scheduler):
        optimizer = two_groups(module, "sgd")
        scheduler = module.CosineAnnealingWarmRestarts(optimizer, 4, T_mult=2)
        restarts = module.StepLR(two_groups(module, "sgd"), 3)
        with pytest.warns(UserWarning):
            restarts.step(10)
        scheduler.step(13.5)
        values.append((scheduler.get_last_lr(), scheduler.T_cur, scheduler.T_i, restarts.get_last_lr()))
    assert values[0] == values[1]


def test_reduce_lr_on_plateau_takes_a_minipar_tensor_metric() -> None:
    optimizer = two_groups(lr_scheduler, "sgd")
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
    scheduler.step(minipar.ones(3).sum())  # 3.0
    scheduler.step(minipar.ones(4).sum())  # worse, patience 0: reduce now
    assert scheduler.get_last_lr() == pytest.approx([0.01, 0.003], rel=1e-15)
    with pytest.raises(TypeError, match="metric"):
        scheduler.step("low")


# ----- bad arguments: the same exception type as torch -----------------------------------------
BAD = {
    "OneCycleLR without total_steps or epochs": (lambda L, o: L.OneCycleLR(o, 0.1), ValueError),
    "OneCycleLR with epochs only": (lambda L, o: L.OneCycleLR(o, 0.1, epochs=3), ValueError),
    "OneCycleLR total_steps=0": (lambda L, o: L.OneCycleLR(o, 0.1, total_steps=0), ValueError),
    "OneCycleLR steps_per_epoch=-1": (
        lambda L, o: L.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1),
        ValueError,
    ),
    "OneCycleLR int pct_start": (lambda L, o: L.OneCycleLR(o, 0.1, total_steps=10, pct_start=1), ValueError),
    "OneCycleLR anneal 'cosine'": (
        lambda L, o: L.OneCycleLR(o, 0.1, 10, anneal_strategy="cosine"),
        ValueError,
    ),
    "OneCycleLR one max_lr for two groups": (lambda L, o: L.OneCycleLR(o, [0.1], total_steps=10), ValueError),
    "LinearLR start_factor=0": (lambda L, o: L.LinearLR(o, start_factor=0), ValueError),
    "LinearLR end_factor=1.5": (lambda L, o: L.LinearLR(o, end_factor=1.5), ValueError),
    "ConstantLR factor=2": (lambda L, o: L.ConstantLR(o, factor=2.0), ValueError),
    "LambdaLR one lambda list for two groups": (lambda L, o: L.LambdaLR(o, [lambda e: 1.0]), ValueError),
    "MultiplicativeLR not callable": (lambda L, o: L.MultiplicativeLR(o, 0.5), TypeError),
    "ReduceLROnPlateau factor=1": (lambda L, o: L.ReduceLROnPlateau(o, factor=1.0), ValueError),
    "ReduceLROnPlateau mode='lowest'": (lambda L, o: L.ReduceLROnPlateau(o, mode="lowest"), ValueError),
    "ReduceLROnPlateau threshold_mode='pct'": (
        lambda L, o: L.ReduceLROnPlateau(o, threshold_mode="pct"),
        ValueError,
    ),
    "ReduceLROnPlateau one min_lr for two groups": (
        lambda L, o: L.ReduceLROnPlateau(o, min_lr=[0.1]),
        ValueError,
    ),
    "WarmRestarts T_0=0": (lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=0), ValueError),
    "WarmRestarts T_0=2.5": (lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=2.5), ValueError),
    "WarmRestarts T_mult=0": (lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=0), ValueError),
    "SequentialLR no schedulers": (lambda L, o: L.SequentialLR(o, [], []), ValueError),
    "SequentialLR too many milestones": (lambda L, o: L.SequentialLR(o, [L.StepLR(o, 2)], [3]), ValueError),
    "SequentialLR with ReduceLROnPlateau": (
        lambda L, o: L.SequentialLR(o, [L.StepLR(o, 2), L.ReduceLROnPlateau(o)], [3]),
        ValueError,
    ),
    "SequentialLR another optimizer's scheduler": (
        lambda L, o: L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(two_groups(L, "sgd"), 2)], [3]),
        ValueError,
    ),
    "CyclicLR mode='sawtooth'": (lambda L, o: L.CyclicLR(o, 0.01, 0.1, mode="sawtooth"), ValueError),
    "CyclicLR two max_lrs for one bound": (lambda L, o: L.CyclicLR(o, 0.01, [0.1, 0.2, 0.3]), ValueError),
    "ChainedScheduler no schedulers": (lambda L, o: L.ChainedScheduler([], optimizer=o), ValueError),
    "StepLR on a list of parameters": (lambda L, o: L.StepLR(o.param_groups[0]["params"], 3), TypeError),
    "ExponentialLR on a model-like object": (lambda L, o: L.ExponentialLR(object(), 0.9), TypeError),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_raise_the_same_exception_type_as_torch(name: str) -> None:
    build, error = BAD[name]
    for module in (lr_scheduler, torch.optim.lr_scheduler):
        with pytest.raises(error):
            build(module, two_groups(module, "sgd"))


def test_stepping_one_cycle_past_total_steps_is_a_value_error_as_in_torch() -> None:
    for module in (lr_scheduler, torch.optim.lr_scheduler):
        optimizer = two_groups(module, "sgd")
        scheduler = module.OneCycleLR(optimizer, 0.1, total_steps=10)
        for _ in range(10):
            if module is not lr_scheduler:
                optimizer.step()
            scheduler.step()  # steps 1..10: fine (step 10 ends the last phase)
        with pytest.raises(ValueError, match="total steps is 10"):
            scheduler.step()


def test_resuming_with_last_epoch_needs_initial_lr_in_every_group_as_in_torch() -> None:
    for module in (lr_scheduler, torch.optim.lr_scheduler):
        with pytest.raises(KeyError, match="initial_lr"):
            module.StepLR(two_groups(module, "sgd"), 3, last_epoch=4)


def test_bad_argument_messages_name_what_was_expected_and_what_came() -> None:
    optimizer = two_groups(lr_scheduler, "sgd")
    with pytest.raises(ValueError, match=r"total_steps OR \(epochs AND steps_per_epoch\).*epochs=3"):
        lr_scheduler.OneCycleLR(optimizer, 0.1, epochs=3)
    with pytest.raises(TypeError, match="expects an Optimizer.*got dict"):
        lr_scheduler.StepLR({"lr": 0.1}, 3)
    with pytest.raises(ValueError, match="positive integer step_size, got 0"):
        lr_scheduler.StepLR(optimizer, 0)  # torch fails later, with ZeroDivisionError, on the first step


# ----- names: importable and spelled as torch.optim.lr_scheduler ---------------------------------
def test_lr_scheduler_is_importable_as_torch_optim_lr_scheduler_would_be() -> None:
    import importlib

    assert importlib.import_module("minipar.optim.lr_scheduler") is lr_scheduler
    assert minipar.optim.lr_scheduler is lr_scheduler and optim.lr_scheduler.StepLR is lr_scheduler.StepLR
    assert issubclass(lr_scheduler._LRScheduler, lr_scheduler.LRScheduler)
    for name in ("get_last_lr", "step", "state_dict", "load_state_dict"):
        assert callable(getattr(lr_scheduler.LRScheduler, name))
    scheduler = lr_scheduler.StepLR(two_groups(lr_scheduler, "sgd"), 3)
    assert scheduler.last_epoch == 0 and scheduler.base_lrs == [0.1, 0.03]
    assert [g["initial_lr"] for g in scheduler.optimizer.param_groups] == [0.1, 0.03]


def test_every_torch_scheduler_name_exists_with_torchs_parameters_and_defaults() -> None:
    def parameters(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    names = set(torch.optim.lr_scheduler.__all__)
    assert names <= set(lr_scheduler.__all__)
    for name in sorted(names - {"LRScheduler"}):
        assert parameters(getattr(lr_scheduler, name)) == parameters(
            getattr(torch.optim.lr_scheduler, name)
        ), name
