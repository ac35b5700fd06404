"""SGD and Adam follow PyTorch's trajectories step for step; state dicts resume training exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minipar
import minipar.nn.functional as F
from minipar import nn, optim
from minipar.optim import optimizer as optimizer_module

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.3}),
    ("Adam", {}),
    ("Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'}" for name, kwargs in CONFIGS]


def gradient_of(param: np.ndarray, step: int) -> np.ndarray:
    """A fixed, parameter-dependent gradient both libraries are handed (a smooth non-quadratic loss)."""
    return np.sin(3 * param + step) + 0.1 * param ** 3


def step_both_and_compare(ours, theirs, our_opt, their_opt, steps):
    """Feed both optimizers the same gradients for ``steps`` steps; parameters must agree."""
    for step in range(steps):
        for mine, reference in zip(ours, theirs):
            mine.grad = minipar.tensor(gradient_of(mine.array, step))
            reference.grad = torch.tensor(gradient_of(reference.detach().numpy(), step))
        our_opt.step()
        their_opt.step()
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.array, reference.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("blocked", [False, True], ids=["readable", "blocked"])
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_update_rule_equals_torch_given_the_same_gradients_for_30_steps(name, kwargs, blocked, monkeypatch):
    monkeypatch.setattr(optimizer_module, "BLOCK_ELEMENTS", 5)  # blocked: blocks of 5, 5, 2 and 4
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 4)), rng.standard_normal((4,))]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    our_opt = getattr(optim, name)(ours, **kwargs, blocked=blocked)
    their_opt = getattr(torch.optim, name)(theirs, **kwargs)
    step_both_and_compare(ours, theirs, our_opt, their_opt, steps=30)


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_cache_blocked_step_is_bit_identical_to_the_readable_whole_array_step(name, kwargs, monkeypatch):
    """Same float operations in the same order: equal bit for bit, not just to rounding."""
    monkeypatch.setattr(optimizer_module, "BLOCK_ELEMENTS", 7)  # a (5, 6) parameter: blocks 7, 7, 7, 7, 2
    start = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    readable = nn.Parameter(start.copy())
    blocked = nn.Parameter(start.copy())
    fallback = nn.Parameter(np.asfortranarray(start))  # not C-contiguous: the blocked code on whole arrays
    assert not fallback.array.flags.c_contiguous
    optimizers = [getattr(optim, name)([param], **kwargs, blocked=is_blocked)
                  for param, is_blocked in ((readable, False), (blocked, True), (fallback, True))]
    for step in range(10):
        for param, opt in zip((readable, blocked, fallback), optimizers):
            param.grad = minipar.tensor(gradient_of(param.array, step))
            opt.step()
        np.testing.assert_array_equal(blocked.array, readable.array)
        np.testing.assert_array_equal(fallback.array, readable.array)
    assert blocked.array.dtype == np.float32


def mlp(lib):
    return lib.Sequential(lib.Linear(8, 16), lib.Tanh(), lib.Linear(16, 16), lib.GELU(), lib.Linear(16, 5))


def batches(count=30, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((12, 8)), rng.integers(0, 5, 12)) for _ in range(count)]


def train_both_and_compare(ours, theirs, our_opt, their_opt, data) -> None:
    """The same batches through both models and optimizers; every parameter must agree (1e-12)."""
    for x, y in data:
        our_opt.zero_grad()
        F.cross_entropy(ours(minipar.tensor(x)), y).backward()
        our_opt.step()
        their_opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        their_opt.step()
    their_params = dict(theirs.named_parameters())
    for param_name, param in ours.named_parameters():
        np.testing.assert_allclose(param.array, their_params[param_name].detach().numpy(),
                                   rtol=1e-12, atol=1e-13, err_msg=param_name)


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=IDS)
def test_training_trajectory_equals_torch_after_30_steps(name, kwargs):
    torch.manual_seed(0)  # a fixed start, not whatever earlier tests left (test_optimizers_torch says why)
    theirs = mlp(torch.nn).double()
    ours = mlp(nn).double()
    ours.load_state_dict(theirs.state_dict())
    our_opt = getattr(optim, name)(ours.parameters(), **kwargs)
    their_opt = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    train_both_and_compare(ours, theirs, our_opt, their_opt, batches())


def test_parameter_groups_with_their_own_lr_match_torch():
    rng = np.random.default_rng(1)
    start = [rng.standard_normal((2, 3)), rng.standard_normal((3,))]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    our_opt = optim.Adam([{"params": [ours[0]], "lr": 0.1}, {"params": [ours[1]]}], lr=0.01)
    their_opt = torch.optim.Adam([{"params": [theirs[0]], "lr": 0.1}, {"params": [theirs[1]]}], lr=0.01)
    step_both_and_compare(ours, theirs, our_opt, their_opt, steps=10)


def test_per_parameter_state_has_torch_keys():
    for name, kwargs in (("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {})):
        ours = nn.Parameter(np.ones(3))
        theirs = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        our_opt = getattr(optim, name)([ours], **kwargs)
        their_opt = getattr(torch.optim, name)([theirs], **kwargs)
        ours.grad, theirs.grad = minipar.tensor(np.ones(3)), torch.ones(3, dtype=torch.float64)
        our_opt.step()
        their_opt.step()
        our_state, their_state = our_opt.state_dict(), their_opt.state_dict()
        assert set(our_state["state"][0]) == set(their_state["state"][0])
        assert our_state["param_groups"][0]["params"] == their_state["param_groups"][0]["params"]
        for key in ("lr", "weight_decay"):
            assert our_state["param_groups"][0][key] == their_state["param_groups"][0][key]
    assert our_state["state"][0]["step"] == 1


def test_zero_grad_sets_grads_to_none():
    param = nn.Parameter(np.ones(2))
    param.grad = minipar.tensor(np.ones(2))
    opt = optim.Adam([param])
    opt.zero_grad()
    assert param.grad is None


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_a_parameter_listed_twice_is_an_error_not_a_double_step(name):
    """D3: one group or two, a repeated parameter would move twice per step."""
    weight = nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="more than once"):
        getattr(optim, name)([weight, weight], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        getattr(optim, name)([{"params": [weight]}, {"params": [weight]}], lr=0.1)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_a_nan_learning_rate_or_a_group_without_params_is_rejected(name):
    weight = nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match=r"lr must be a number >= 0(\.0)?, got nan"):
        getattr(optim, name)([weight], lr=float("nan"))
    with pytest.raises(ValueError, match="a parameter group is a dict with a 'params' list"):
        getattr(optim, name)([{"lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="group lr must be a number >= 0, got nan"):
        getattr(optim, name)([{"params": [weight], "lr": float("nan")}], lr=0.1)


def net_class(lib, functional):
    """The same user-written model class over torch.nn.Module or minipar's nn.Module."""

    class Net(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = lib.Linear(8, 16)
            self.fc2 = lib.Linear(16, 5)

        def forward(self, x):
            return self.fc2(functional.relu(self.fc1(x)))

    return Net


def test_an_nn_module_subclass_and_optimizer_type_hints_train_as_in_torch():
    def make_optimizer(module: nn.Module, library) -> optim.Optimizer:  # both usable as annotations
        return library.AdamW(module.parameters(), lr=1e-2)

    torch.manual_seed(0)
    theirs = net_class(torch.nn, torch.nn.functional)().double()
    ours = net_class(nn, F)().double()
    assert isinstance(ours, nn.Module) and [n for n, _ in ours.named_parameters()] == [
        n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    our_opt, their_opt = make_optimizer(ours, optim), make_optimizer(theirs, torch.optim)
    assert isinstance(our_opt, optim.Optimizer)
    train_both_and_compare(ours, theirs, our_opt, their_opt, batches(20))
