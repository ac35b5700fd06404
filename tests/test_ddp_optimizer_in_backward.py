"""``DistributedDataParallel.apply_optimizer_in_backward``: the step inside backward, bucket by bucket.

Each bucket's parameters are stepped by an optimizer of their own as soon as their
average has arrived; that must train exactly as one process with one optimizer over
all parameters (1e-9 after 25 SGD-momentum steps, replicas bit-identical), overlapped
or not, with buckets of one or several parameters, and step nothing inside no_sync().
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_data_parallel import REFERENCE, STEPS, X, Y, assert_matches_reference, make_model, shard, weights

import minipar
from minipar import optim
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel


def train_in_backward(comm: Any, steps: int = STEPS, **ddp_kwargs: Any) -> list[np.ndarray]:
    ddp = DistributedDataParallel(make_model(), comm=comm, **ddp_kwargs)
    ddp.apply_optimizer_in_backward(optim.SGD, lr=0.1, momentum=0.9)  # as train_one_process's
    x, y = shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size)
    for _ in range(steps):
        ddp.zero_grad()
        F.cross_entropy(ddp(minipar.tensor(x)), y).backward()  # no opt.step(): backward stepped
    return weights(ddp)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("bucket_cap_mb", [1e-6, 25])  # one parameter per bucket; one bucket
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_optimizer_in_backward_matches_one_process_after_25_steps(world_size: int, bucket_cap_mb: float,
                                                                   overlap: bool) -> None:
    per_rank = run_local(lambda comm: train_in_backward(comm, bucket_cap_mb=bucket_cap_mb, overlap=overlap),
                         world_size)
    assert_matches_reference(per_rank, REFERENCE)


@pytest.mark.timeout(60)
def test_optimizer_in_backward_with_find_unused_parameters_matches_one_process() -> None:
    per_rank = run_local(lambda comm: train_in_backward(comm, bucket_cap_mb=1e-6,
                                                        find_unused_parameters=True), 2)
    assert_matches_reference(per_rank, REFERENCE)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [1, 2])
def test_no_step_inside_no_sync_and_one_step_for_the_accumulated_gradient(world_size: int) -> None:
    def body(comm: Any) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6)
        ddp.apply_optimizer_in_backward(optim.SGD, lr=0.1)
        x, y = shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size)
        start = weights(ddp)
        with ddp.no_sync():
            F.cross_entropy(ddp(minipar.tensor(x)), y).backward()
        after_no_sync = weights(ddp)
        F.cross_entropy(ddp(minipar.tensor(x)), y).backward()  # syncs the sum of both, steps once
        return start, after_no_sync, weights(ddp)

    for start, after_no_sync, after in run_local(body, world_size):
        assert all(np.array_equal(a, b) for a, b in zip(start, after_no_sync))
        # one plain SGD step from the gradient of two identical backwards: w - 0.1 * 2 g
        reference = make_model()
        loss = F.cross_entropy(reference(minipar.tensor(X)), Y)
        loss.backward()
        for got, w, param in zip(after, start, reference.parameters()):
            np.testing.assert_allclose(got, w - 0.1 * 2 * param.grad.array, rtol=0, atol=1e-12)


def test_optimizer_in_backward_rejects_bad_input() -> None:
    def body(comm: Any) -> None:
        ddp = DistributedDataParallel(make_model(), comm=comm)
        with pytest.raises(TypeError, match="optimizer class"):
            ddp.apply_optimizer_in_backward(optim.SGD(make_model().parameters(), lr=0.1))
        ddp.apply_optimizer_in_backward(optim.SGD, lr=0.1)
        with pytest.raises(RuntimeError, match="already"):
            ddp.apply_optimizer_in_backward(optim.SGD, lr=0.1)

    run_local(body, 2)
