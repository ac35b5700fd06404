"""minipar.distributed has torch.distributed's shape: spawned thread ranks or mpiexec, collectives
on Tensors in place, closed forms from rank and size."""

from __future__ import annotations

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
import minipar.distributed as dist
import minipar.multiprocessing as mp
from minipar import nn
from minipar.nn import functional as F


def collectives(rank: int, world_size: int, results: dict) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    assert dist.is_initialized() and dist.get_rank() == rank and dist.get_world_size() == world_size
    p = world_size
    out = {}
    for name, op, want in (("sum", dist.ReduceOp.SUM, p * (p - 1) / 2),
                           ("avg", dist.ReduceOp.AVG, (p - 1) / 2),
                           ("max", dist.ReduceOp.MAX, p - 1), ("min", dist.ReduceOp.MIN, 0)):
        t = minipar.tensor(np.full(5, float(rank)))
        dist.all_reduce(t, op=op)
        out[name] = (t.array.tolist(), [want] * 5)
    b = minipar.tensor(np.full(3, float(rank)))
    dist.broadcast(b, src=p - 1)
    out["broadcast"] = (b.array.tolist(), [p - 1.0] * 3)
    gathered = [minipar.tensor(np.zeros(2)) for _ in range(p)]
    dist.all_gather(gathered, minipar.tensor(np.array([rank, 10.0 * rank])))
    out["all_gather"] = ([g.array.tolist() for g in gathered], [[r, 10.0 * r] for r in range(p)])
    into = minipar.tensor(np.zeros(2 * p))
    dist.all_gather_into_tensor(into, minipar.tensor(np.array([rank, -rank], dtype=np.float64)))
    out["all_gather_into_tensor"] = (into.array.tolist(), [v for r in range(p) for v in (r, -r)])
    full = minipar.tensor(np.arange(3.0 * p) + rank)
    mine = minipar.tensor(np.zeros(3))
    dist.reduce_scatter_tensor(mine, full)
    expected = (np.arange(3.0 * p) * p + p * (p - 1) / 2)[3 * rank:3 * rank + 3]
    out["reduce_scatter_tensor"] = (mine.array.tolist(), expected.tolist())
    token = minipar.tensor(np.array([float(rank)]))
    if rank == 0:
        dist.send(token, dst=1)
    elif rank == 1:
        dist.recv(token, src=0)
    out["send_recv"] = (token.array.tolist(), [0.0 if rank in (0, 1) else float(rank)])
    evens = dist.new_group([r for r in range(p) if r % 2 == 0])
    if rank % 2 == 0:
        x = minipar.tensor(np.ones(1))
        dist.all_reduce(x, group=evens)
        out["new_group"] = (x.array.tolist(), [float(len(range(0, p, 2)))])
    else:
        out["new_group"] = (evens, None)
    dist.barrier()
    dist.destroy_process_group()
    results[rank] = out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_collectives_on_spawned_ranks_equal_their_closed_forms(world_size: int) -> None:
    results: dict = {}
    mp.spawn(collectives, args=(world_size, results), nprocs=world_size, join=True)
    for rank in range(world_size):
        for name, (got, want) in results[rank].items():
            assert got == want, f"rank {rank} {name}: {got} != {want}"
    assert not dist.is_initialized()  # the spawned threads' groups ended with them


def ddp_from_the_process_group(rank: int, world_size: int, results: dict) -> None:
    dist.init_process_group("nccl")  # any backend name: the collectives are minipar's
    minipar.manual_seed(rank)  # each spawned rank's stream is its own: DDP broadcasts rank 0's model
    model = nn.parallel.DistributedDataParallel(nn.Linear(3, 2, dtype=np.float64))
    x = minipar.tensor(np.full((2, 3), float(rank + 1)))
    F.mse_loss(model(x), minipar.tensor(np.zeros((2, 2)))).backward()
    results[rank] = [p.grad.array.copy() for p in model.parameters()]


@pytest.mark.timeout(60)
def test_ddp_takes_its_communicator_from_the_initialised_process_group() -> None:
    results: dict = {}
    mp.spawn(ddp_from_the_process_group, args=(2, results), nprocs=2)
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)  # averaged, identical on both ranks


def test_spawn_without_join_returns_a_context_and_errors_reach_join() -> None:
    def fails(rank: int) -> None:
        if rank == 1:
            raise RuntimeError("rank 1 failed")

    context = mp.spawn(fails, nprocs=2, join=False)
    with pytest.raises(RuntimeError, match="rank 1 failed"):
        context.join()


def test_collectives_before_init_say_so() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(ValueError, match="SUM, AVG, MAX or MIN"):
        dist.all_reduce(minipar.tensor(np.ones(2)), op=dist.ReduceOp.PRODUCT)


MPI_SCRIPT = """
import os
import numpy as np
import minipar
import minipar.distributed as dist
dist.init_process_group("gloo")
rank, size = dist.get_rank(), dist.get_world_size()
assert (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) == (rank, size), os.environ
assert "LOCAL_RANK" in os.environ
t = minipar.tensor(np.full(4, float(rank + 1)))
dist.all_reduce(t)
assert t.array.tolist() == [size * (size + 1) / 2] * 4, t
if rank == 0:
    print("ok", size)
"""


@requires_mpi
@pytest.mark.timeout(90)
def test_under_mpiexec_the_process_group_is_the_mpi_world_and_the_environment_is_set() -> None:
    assert "ok 3" in assert_ok(run_mpi(MPI_SCRIPT, 3, timeout=60))
