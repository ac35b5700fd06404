"""DDP's join(): ranks with 3, 5 and 4 batches train like one process on each step's union of batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minipar
from minipar import nn, optim
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel

BATCHES = [3, 5, 4]  # per rank
ROWS = 4  # per batch, equal on every rank


def make_model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16, dtype=np.float64), nn.Tanh(), nn.Linear(16, 3, dtype=np.float64))


def batch(rank: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 * rank + step)
    return rng.standard_normal((ROWS, 5)), rng.integers(0, 3, ROWS)


def one_process() -> list[np.ndarray]:
    model = make_model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(max(BATCHES)):
        parts = [batch(rank, step) for rank, count in enumerate(BATCHES) if step < count]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        opt.zero_grad()
        F.cross_entropy(model(minipar.tensor(x)), y).backward()
        opt.step()
    return [p.array.copy() for p in model.parameters()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [False, True])
def test_uneven_inputs_under_join_equal_one_process_on_each_steps_union(overlap: bool) -> None:
    def body(comm: Any) -> list[np.ndarray]:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-3, overlap=overlap)
        opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        with ddp.join():
            for step in range(BATCHES[comm.rank]):
                x, y = batch(comm.rank, step)
                opt.zero_grad()
                F.cross_entropy(ddp(minipar.tensor(x)), y).backward()
                opt.step()
        return [p.array.copy() for p in ddp.parameters()]

    expected = one_process()
    for rank_params in run_local(body, len(BATCHES)):  # every rank ends with the same model
        for got, want in zip(rank_params, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_join_refuses_find_unused_parameters() -> None:
    def body(comm: Any) -> None:
        DistributedDataParallel(make_model(), comm=comm, find_unused_parameters=True).join()

    with pytest.raises(ValueError, match="find_unused_parameters=True is not supported"):
        run_local(body, 2)


@pytest.mark.timeout(60)
def test_zero_under_join_equals_one_process_on_each_steps_union() -> None:
    """A rank that ran out of batches keeps stepping its shard (with the others' average)."""
    from minipar.parallel import ZeroOptimizer

    def body(comm: Any) -> list[np.ndarray]:
        model = make_model()
        zero = ZeroOptimizer(optim.SGD, model.parameters(), comm, lr=0.1, momentum=0.9)
        with zero.join():
            for step in range(BATCHES[comm.rank]):
                x, y = batch(comm.rank, step)
                zero.zero_grad()
                F.cross_entropy(model(minipar.tensor(x)), y).backward()
                zero.step()
        return [p.array.copy() for p in model.parameters()]

    expected = one_process()
    for rank_params in run_local(body, len(BATCHES)):
        for got, want in zip(rank_params, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
