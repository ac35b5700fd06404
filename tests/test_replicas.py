"""check_replicas names the first parameter whose copies differ, and the ranks that hold the odd one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minipar
from minipar import nn
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, ReplicaMismatchError, check_replicas


def make_model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.timeout(60)
def test_identical_replicas_pass() -> None:
    assert run_local(lambda comm: check_replicas(make_model(), comm), 3) == [None, None, None]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [2, 4])
def test_one_flipped_bit_on_one_rank_is_named_with_the_parameter(size: int) -> None:
    def body(comm: Any) -> None:
        model = make_model()
        if comm.rank == size - 1:
            bits = model[2].weight.array.view(np.uint32)
            bits[1, 3] ^= 1  # the lowest mantissa bit of one element
        check_replicas(model, comm)

    with pytest.raises(ReplicaMismatchError, match=rf"'2.weight' differs on rank\(s\) \[{size - 1}\]"):
        run_local(body, size)


@pytest.mark.timeout(60)
def test_ddp_check_every_catches_a_rank_whose_weights_were_changed() -> None:
    def body(comm: Any) -> None:
        ddp = DistributedDataParallel(make_model(), comm=comm, check_every=2)
        x, y = minipar.tensor(np.ones((3, 4), dtype=np.float32)), np.array([0, 1, 0])
        for step in range(4):
            if step == 1 and comm.rank == 1:
                ddp.module[0].bias.array[0] += 1.0
            F.cross_entropy(ddp(x), y).backward()

    with pytest.raises(ReplicaMismatchError, match=r"'0.bias' differs on rank\(s\) \[1\]"):
        run_local(body, 2)


def test_check_every_must_be_a_positive_step_count() -> None:
    with pytest.raises(ValueError, match="check_every must be None or a positive number of steps, got 0"):
        run_local(lambda comm: DistributedDataParallel(make_model(), comm=comm, check_every=0), 1)
