"""Every optimizer, in every setting tried, follows PyTorch's trajectory for 50 training steps.

The oracle is ``torch.optim`` with the same arguments, on the same float64 MLP, fed the
same batches: parameters must agree to 1e-12 relative after 50 steps. Optimizers with a
readable and a cache-blocked form are checked in both, and the two forms bit for bit.

The starting weights are drawn from a fixed seed, not from whatever state earlier tests left
torch's generator in. The comparison is only as sharp as the trajectory is well conditioned:
RMSprop's first step is ``lr * g / (sqrt(1 - alpha) * |g| + eps)``, whose slope in ``g`` is
``lr * eps / (sqrt(1 - alpha) * |g| + eps) ** 2`` -- about 3e4 at the defaults when a gradient
entry lands near 1e-7. There a matmul summed in another order (NumPy's BLAS and torch's
differ, and differ again by CPU) moves the weights by 1e-13. With seed 0 the worst config
stays below 4% of the tolerance when every gradient entry gets 1e-17 of absolute noise; one
seed in sixty (43) puts RMSprop's defaults past it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minipar
import minipar.nn.functional as F
from minipar import nn, optim
from minipar.optim import optimizer as optimizer_module

CONFIGS = [
    ("SGD", {"lr": 0.05, "maximize": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "maximize": True}),
    ("Adam", {"lr": 1e-2, "amsgrad": True}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.05, "maximize": True}),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.8, 0.95)}),
    ("AdamW", {"lr": 1e-2, "amsgrad": True, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.9, "momentum": 0.8}),
    ("RMSprop", {"lr": 1e-3, "centered": True}),
    ("RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.5, "weight_decay": 1e-2, "eps": 1e-6}),
    ("RMSprop", {"lr": 1e-3, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("Adagrad", {"lr": 0.05, "weight_decay": 1e-2, "eps": 1e-6, "maximize": True}),
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5}),
    ("Adadelta", {"weight_decay": 1e-2, "maximize": True}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'}" for name, kwargs in CONFIGS]
TWO_FORMS = ("SGD", "Adam", "AdamW")  # optimizers with a readable and a cache-blocked step
FORMS = [(name, kwargs, blocked) for name, kwargs in CONFIGS
         for blocked in ((False, True) if name in TWO_FORMS else (None,))]
FORM_IDS = [f"{i}-{'blocked' if b else 'readable' if b is False else 'one-form'}"
            for (name, kwargs, b), i in zip(FORMS, [i for i, c in zip(IDS, CONFIGS)
                                                   for _ in ((0, 1) if c[0] in TWO_FORMS else (0,))])]


def mlp(lib):
    return lib.Sequential(lib.Linear(8, 16), lib.Tanh(), lib.Linear(16, 16), lib.GELU(), lib.Linear(16, 5))


def batches(count=50, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((12, 8)), rng.integers(0, 5, 12)) for _ in range(count)]


def our_optimizer(name, params, kwargs, blocked=None):
    extra = {} if blocked is None else {"blocked": blocked}
    return getattr(optim, name)(params, **kwargs, **extra)


def train_both(name, kwargs, blocked=None, steps=50, their_kwargs=None):
    """Train the same MLP with both libraries; returns (ours, theirs) after ``steps`` steps.

    With ``maximize=True`` the objective is the negated loss, so training still converges
    (ascending the loss itself diverges, and a diverging run amplifies rounding)."""
    sign = -1.0 if kwargs.get("maximize") else 1.0
    torch.manual_seed(0)  # the module docstring says why the start is fixed
    theirs = mlp(torch.nn).double()
    ours = mlp(nn).double()
    ours.load_state_dict(theirs.state_dict())
    our_opt = our_optimizer(name, ours.parameters(), kwargs, blocked)
    their_opt = getattr(torch.optim, name)(theirs.parameters(), **(their_kwargs or kwargs))
    for x, y in batches(steps):
        our_opt.zero_grad()
        (sign * F.cross_entropy(ours(minipar.tensor(x)), y)).backward()
        our_opt.step()
        their_opt.zero_grad()
        (sign * torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))).backward()
        their_opt.step()
    return ours, theirs


def assert_same_parameters(ours, theirs):
    their_params = dict(theirs.named_parameters())
    for param_name, param in ours.named_parameters():
        np.testing.assert_allclose(param.array, their_params[param_name].detach().numpy(),
                                   rtol=1e-12, atol=1e-13, err_msg=param_name)


@pytest.mark.parametrize("name, kwargs, blocked", FORMS, ids=FORM_IDS)
def test_training_trajectory_equals_torch_after_50_steps(name, kwargs, blocked, monkeypatch):
    monkeypatch.setattr(optimizer_module, "BLOCK_ELEMENTS", 37)  # blocked: several blocks per weight
    ours, theirs = train_both(name, kwargs, blocked)
    assert_same_parameters(ours, theirs)


@pytest.mark.parametrize("name, kwargs", [c for c in CONFIGS if c[0] in TWO_FORMS],
                         ids=[i for i, c in zip(IDS, CONFIGS) if c[0] in TWO_FORMS])
def test_blocked_step_is_bit_identical_to_the_readable_step_with_amsgrad_maximize_and_decoupled_decay(
        name, kwargs, monkeypatch):
    monkeypatch.setattr(optimizer_module, "BLOCK_ELEMENTS", 7)  # a (5, 6) weight: blocks 7, 7, 7, 7, 2
    start = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    params = [nn.Parameter(start.copy()) for _ in range(2)]
    optimizers = [getattr(optim, name)([p], **kwargs, blocked=b) for p, b in zip(params, (False, True))]
    sign = -1.0 if kwargs.get("maximize") else 1.0  # maximize: ascend the negated objective
    for step in range(12):
        for param, opt in zip(params, optimizers):
            param.grad = minipar.tensor(sign * (np.sin(3 * param.array + step) + 0.1 * param.array ** 3))
            opt.step()
        np.testing.assert_array_equal(params[1].array, params[0].array)


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_state_dict_has_torchs_state_keys_and_group_keys(name, kwargs):
    ours, theirs = train_both(name, kwargs, steps=1)
    our_opt = getattr(optim, name)(ours.parameters(), **kwargs)
    their_opt = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    for opt, model, lib in ((our_opt, ours, minipar), (their_opt, theirs, torch)):
        for param in model.parameters():
            param.grad = lib.ones_like(param)
        opt.step()
    mine, reference = our_opt.state_dict(), their_opt.state_dict()
    assert sorted(mine["state"]) == sorted(reference["state"])
    for index in reference["state"]:
        assert set(mine["state"][index]) == set(reference["state"][index])
        if "step" in reference["state"][index]:
            assert mine["state"][index]["step"] == int(reference["state"][index]["step"])
    assert set(mine["param_groups"][0]) == set(reference["param_groups"][0])
    for key, value in reference["param_groups"][0].items():
        expected = tuple(value) if isinstance(value, (tuple, list)) and key != "params" else value
        assert mine["param_groups"][0][key] == expected, key


@pytest.mark.parametrize("name, kwargs", [CONFIGS[i] for i in (1, 3, 7, 11, 14, 18)],
                         ids=[IDS[i] for i in (1, 3, 7, 11, 14, 18)])
def test_state_dict_round_trip_continues_exactly_like_uninterrupted_training(name, kwargs):
    data = batches(16, seed=3)

    def train(model, opt, steps):
        for x, y in steps:
            opt.zero_grad()
            F.cross_entropy(model(minipar.tensor(x)), y).backward()
            opt.step()

    minipar.manual_seed(0)
    model = mlp(nn).double()
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    train(model, opt, data[:8])
    model_state = {k: v.copy() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    train(model, opt, data[8:])

    minipar.manual_seed(1)
    resumed = mlp(nn).double()
    resumed.load_state_dict(model_state)
    resumed_opt = getattr(optim, name)(resumed.parameters(), **kwargs)
    resumed_opt.load_state_dict(opt_state)
    train(resumed, resumed_opt, data[8:])
    for (param_name, param), (_, other) in zip(model.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(param.array, other.array, err_msg=param_name)


@pytest.mark.parametrize("name", ["AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_parameter_groups_with_their_own_settings_match_torch(name):
    overrides = {"AdamW": {"lr": 0.05, "weight_decay": 0.3}, "RMSprop": {"lr": 0.02, "momentum": 0.5},
                 "Adagrad": {"lr": 0.2, "lr_decay": 0.1}, "Adadelta": {"lr": 0.3, "rho": 0.5}}[name]
    rng = np.random.default_rng(1)
    start = [rng.standard_normal((2, 3)), rng.standard_normal((3,))]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    our_opt = getattr(optim, name)([{"params": [ours[0]], **overrides}, {"params": [ours[1]]}])
    their_opt = getattr(torch.optim, name)([{"params": [theirs[0]], **overrides}, {"params": [theirs[1]]}])
    for step in range(20):
        for mine, reference in zip(ours, theirs):
            mine.grad = minipar.tensor(np.sin(3 * mine.array + step))
            reference.grad = torch.tensor(np.sin(3 * reference.detach().numpy() + step))
        our_opt.step()
        their_opt.step()
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.array, reference.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, flags", [
    ("SGD", {"foreach": True, "differentiable": False, "fused": False}),
    ("Adam", {"foreach": False, "capturable": True, "differentiable": False, "fused": None}),
    ("AdamW", {"foreach": True, "capturable": False, "fused": None}),
    ("RMSprop", {"foreach": True, "capturable": True, "differentiable": False}),
    ("Adagrad", {"foreach": True, "differentiable": False, "fused": None}),
    ("Adadelta", {"foreach": True, "capturable": True, "differentiable": False}),
])
def test_pytorchs_implementation_switches_are_accepted_and_change_nothing(name, flags):
    ours, theirs = train_both(name, {"lr": 0.01, **flags}, steps=10, their_kwargs={"lr": 0.01})
    assert_same_parameters(ours, theirs)
    with pytest.raises(TypeError, match="foreach must be a bool or None, got 'yes'"):
        getattr(optim, name)(ours.parameters(), foreach="yes")


def test_step_with_a_closure_returns_its_loss_and_steps_like_torch():
    theirs = mlp(torch.nn).double()
    ours = mlp(nn).double()
    ours.load_state_dict(theirs.state_dict())
    our_opt = optim.RMSprop(ours.parameters(), lr=1e-3)
    their_opt = torch.optim.RMSprop(theirs.parameters(), lr=1e-3)
    for x, y in batches(5):
        def our_closure(x=x, y=y):
            our_opt.zero_grad()
            loss = F.cross_entropy(ours(minipar.tensor(x)), y)
            loss.backward()
            return loss

        def their_closure(x=x, y=y):
            their_opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
            loss.backward()
            return loss

        with minipar.no_grad():  # the closure re-enables gradients, as torch's step does
            our_loss = our_opt.step(our_closure)
        their_loss = their_opt.step(their_closure)
        assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-12)
    assert_same_parameters(ours, theirs)


@pytest.mark.parametrize("call, error, message", [
    (lambda p: optim.AdamW(p, lr=-1.0), ValueError, r"lr must be a number >= 0(\.0)?, got -1"),
    (lambda p: optim.AdamW(p, betas=(0.9, 1.0)), ValueError, r"AdamW betas\[1\] must be in \[0, 1\)"),
    (lambda p: optim.RMSprop(p, alpha=-0.5), ValueError, "alpha must be a number >= 0"),
    (lambda p: optim.Adagrad(p, lr_decay=float("nan")), ValueError, "lr_decay must be a number >= 0"),
    (lambda p: optim.Adadelta(p, rho=1.5), ValueError, r"rho must be in \[0, 1\], got 1.5"),
    (lambda p: optim.Adam(p, amsgrad="no"), TypeError, "amsgrad must be a bool or None"),
])
def test_bad_hyperparameters_are_rejected_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call([nn.Parameter(np.zeros(3))])


def momentum_optimizer(base):
    """The same user-written optimizer class over torch.optim.Optimizer or optim.Optimizer."""

    class EmaMomentum(base):
        def __init__(self, params, lr=0.01, beta=0.9):
            super().__init__(params, {"lr": lr, "beta": beta})

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]  # an empty dict on first access, as in torch
                    if len(state) == 0:
                        state["buf"] = p.grad.clone()
                    else:
                        state["buf"].mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                    p.data.add_(state["buf"], alpha=-group["lr"])
            return None

    return EmaMomentum


def test_a_user_written_optimizer_subclass_trains_like_the_same_class_on_torch():
    theirs = mlp(torch.nn).double()
    ours = mlp(nn).double()
    ours.load_state_dict(theirs.state_dict())
    our_opt: optim.Optimizer = momentum_optimizer(optim.Optimizer)(ours.parameters(), lr=0.1)
    their_opt = momentum_optimizer(torch.optim.Optimizer)(theirs.parameters(), lr=0.1)
    assert isinstance(our_opt, optim.Optimizer)
    for step, (x, y) in enumerate(batches(20)):
        if step == 10:  # a schedule's way: change the rate through param_groups
            our_opt.param_groups[0]["lr"] = their_opt.param_groups[0]["lr"] = 0.03
        our_opt.zero_grad()
        F.cross_entropy(ours(minipar.tensor(x)), y).backward()
        our_opt.step()
        their_opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        their_opt.step()
    assert_same_parameters(ours, theirs)
    saved = our_opt.state_dict()
    assert set(saved["state"]) == set(their_opt.state_dict()["state"]) == set(range(6))
    assert saved["param_groups"][0]["lr"] == 0.03 and saved["param_groups"][0]["beta"] == 0.9
    live = our_opt.state[next(iter(ours.parameters()))]["buf"]
    assert saved["state"][0]["buf"] is not live  # a snapshot, not the live buffer
    np.testing.assert_array_equal(np.asarray(saved["state"][0]["buf"]), np.asarray(live))


def test_the_base_optimizer_step_says_what_a_subclass_must_define():
    with pytest.raises(NotImplementedError, match=r"Optimizer must define step\(closure=None\)"):
        optim.Optimizer([nn.Parameter(np.zeros(2))], {"lr": 0.1}).step()
