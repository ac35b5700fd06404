"""LocalSGD and DiLoCo against one process simulating every replica, and against DDP.

Claims: with H = 1 and plain SGD local SGD follows DDP's trajectory (1e-12, float64);
with H > 1 the replicas drift for H - 1 steps and then hold the mean of what they
would have held; DiLoCo's outer Nesterov step is the formula in its paper; every rank
sends 1/H of DDP's bytes per step (the counters and the message log). Ranks are threads.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import minipar
from minipar import nn, optim
from minipar.comm import message_log, run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, LocalSGD

pytestmark = pytest.mark.timeout(120)
STEPS, BATCH, LR = 8, 6, 0.2
RNG = np.random.default_rng(11)
X = RNG.normal(size=(STEPS, 4, BATCH, 5))  # (step, rank, batch, features)
Y = RNG.integers(0, 3, size=(STEPS, 4, BATCH))


def make_model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8, dtype=np.float64), nn.Tanh(), nn.Linear(8, 3, dtype=np.float64))


def local_step(model, opt, step: int, rank: int) -> None:
    opt.zero_grad()
    F.cross_entropy(model(minipar.tensor(X[step, rank])), Y[step, rank]).backward()
    opt.step()


def weights(model) -> list[np.ndarray]:
    return [param.array.copy() for param in model.parameters()]


def run_local_sgd(p: int, sync_every: int, outer=None, steps: int = STEPS) -> list[list[list[np.ndarray]]]:
    """Each rank's weights after every step."""
    def body(comm):
        model = make_model()
        local = LocalSGD(model, comm, sync_every=sync_every, outer_optimizer=outer)
        opt = optim.SGD(model.parameters(), lr=LR)
        history = []
        for step in range(steps):
            local_step(model, opt, step, comm.rank)
            local.step()
            history.append(weights(model))
        return history

    return run_local(body, p)


def simulate(p: int, sync_every: int, outer_lr: float | None = None, momentum: float = 0.0
             ) -> list[list[list[np.ndarray]]]:
    """One process, p replicas; the averaging (and DiLoCo's Nesterov step) written out in NumPy."""
    replicas = [make_model() for _ in range(p)]
    opts = [optim.SGD(model.parameters(), lr=LR) for model in replicas]
    theta = weights(replicas[0])  # DiLoCo's global parameters
    buffers = None
    history: list[list[list[np.ndarray]]] = [[] for _ in range(p)]
    for step in range(STEPS):
        for rank in range(p):
            local_step(replicas[rank], opts[rank], step, rank)
        if (step + 1) % sync_every == 0:
            average = [sum(w) / p for w in zip(*(weights(model) for model in replicas))]
            if outer_lr is None:
                theta = average
            else:
                delta = [t - a for t, a in zip(theta, average)]  # the outer gradient
                buffers = delta if buffers is None else [momentum * b + d for b, d in zip(buffers, delta)]
                theta = [t - outer_lr * (d + momentum * b) for t, d, b in zip(theta, delta, buffers)]
            for model in replicas:
                for param, value in zip(model.parameters(), theta):
                    param.array[...] = value
        for rank in range(p):
            history[rank].append(weights(replicas[rank]))
    return history


def assert_histories_close(got, want) -> None:
    for rank_got, rank_want in zip(got, want):
        for step_got, step_want in zip(rank_got, rank_want):
            for a, b in zip(step_got, step_want):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3])
def test_local_sgd_every_step_with_plain_sgd_follows_ddp(p) -> None:
    def ddp_body(comm):
        model = DistributedDataParallel(make_model(), comm=comm)
        opt = optim.SGD(model.parameters(), lr=LR)
        history = []
        for step in range(STEPS):
            local_step(model, opt, step, comm.rank)
            history.append(weights(model))
        return history

    assert_histories_close(run_local_sgd(p, sync_every=1), run_local(ddp_body, p))


@pytest.mark.parametrize("p,sync_every", [(2, 3), (3, 4), (4, 2)])
def test_replicas_drift_for_h_steps_then_hold_their_mean(p, sync_every) -> None:
    got = run_local_sgd(p, sync_every)
    assert_histories_close(got, simulate(p, sync_every))
    assert not np.array_equal(got[0][0][0], got[1][0][0])  # step 1: the replicas differ
    synced = got[0][sync_every - 1]
    assert all(np.array_equal(a, b) for other in got[1:] for a, b in zip(other[sync_every - 1], synced))


def test_diloco_outer_nesterov_step_matches_the_formula() -> None:
    outer = functools.partial(optim.SGD, lr=0.7, momentum=0.9, nesterov=True)
    assert_histories_close(run_local_sgd(3, 2, outer=outer), simulate(3, 2, outer_lr=0.7, momentum=0.9))


def test_diloco_with_outer_sgd_of_lr_one_is_plain_local_sgd() -> None:
    outer = functools.partial(optim.SGD, lr=1.0)
    assert_histories_close(run_local_sgd(2, 4, outer=outer), run_local_sgd(2, 4))


@pytest.mark.parametrize("sync_every", [1, 4])
def test_local_sgd_sends_one_hth_of_ddps_bytes_per_step(sync_every) -> None:
    steps = 8

    def body(comm):
        ddp_model = DistributedDataParallel(make_model(), comm=comm)
        ddp_opt = optim.SGD(ddp_model.parameters(), lr=LR)
        comm.reset_counters()
        for step in range(steps):
            local_step(ddp_model, ddp_opt, step, comm.rank)
        ddp_bytes = comm.bytes_sent
        model = make_model()
        local = LocalSGD(model, comm, sync_every=sync_every)
        opt = optim.SGD(model.parameters(), lr=LR)
        comm.reset_counters()
        with message_log(comm) as log:
            for step in range(steps):
                local_step(model, opt, step, comm.rank)
                local.step()
        return ddp_bytes, comm.bytes_sent, sum(m.nbytes for m in log), len(log), local.syncs

    p = 3
    n = sum(param.array.size for param in make_model().parameters())
    for ddp_bytes, local_bytes, logged_bytes, messages, syncs in run_local(body, p):
        assert local_bytes * sync_every == ddp_bytes
        assert logged_bytes == local_bytes
        assert syncs == steps // sync_every
        assert messages == syncs * 2 * (p - 1)  # one ring all-reduce per sync
        assert abs(local_bytes - syncs * 2 * (p - 1) / p * n * 8) <= syncs * 2 * (p - 1) * 8


def test_bad_arguments_raise_naming_what_was_expected() -> None:
    def body(comm):
        model = make_model()
        with pytest.raises(ValueError, match="sync_every must be an int >= 1"):
            LocalSGD(model, comm, sync_every=0)
        with pytest.raises(TypeError, match="outer_optimizer must be a function"):
            LocalSGD(model, comm, outer_optimizer=3)
        with pytest.raises(TypeError, match="must return a minipar.optim Optimizer"):
            LocalSGD(model, comm, outer_optimizer=lambda params: "sgd")
        with pytest.raises(TypeError, match="Module"):
            LocalSGD([1, 2], comm)
        return True

    assert run_local(body, 2) == [True, True]
