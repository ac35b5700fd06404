"""ZeRO stage 1 (minipar.parallel.zero): sharded optimizer state against plain Adam on one process.

Oracles: one process running plain ``optim.Adam`` on the whole batch (float64,
1e-9 after 25 steps); DDP's measured bytes and the ring formula 2(p-1)/p * Ψ for
the bytes sent; plain Adam's state for the memory (1/p of it per rank, within 1%,
measured with tracemalloc under mpiexec, by array sizes under run_local).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mpirun import REPO, assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn, optim
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, ZeroOptimizer
from minipar.parallel.zero import reshard_state_dicts

GLOBAL_BATCH = 24
STEPS = 25
RNG = np.random.default_rng(99)
X = RNG.normal(size=(GLOBAL_BATCH, 5))
Y = RNG.integers(0, 12, GLOBAL_BATCH)
ADAM = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01)


def array_split_bounds(length: int, parts: int) -> list[int]:
    """The oracle for shard ownership: offsets of numpy's own ``array_split``."""
    return np.cumsum([0] + [len(part) for part in np.array_split(np.arange(length), parts)]).tolist()


def make_model(seed: int = 0) -> nn.Module:
    """5 -> 12 -> 12 -> 12: Ψ = 72 + 156 + 156 = 384 elements, divisible by 1, 2, 3 and 4."""
    minipar.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12, dtype=np.float64), nn.Tanh(),
                         nn.Linear(12, 12, dtype=np.float64), nn.Tanh(),
                         nn.Linear(12, 12, dtype=np.float64))


PSI = sum(param.array.size for param in make_model().parameters())


def shard(array: np.ndarray, rank: int, size: int) -> np.ndarray:
    return np.array_split(array, size)[rank]


def weights(model: nn.Module) -> list[np.ndarray]:
    return [param.array.copy() for param in model.parameters()]


def step(model: Any, opt: Any, x: np.ndarray, y: np.ndarray) -> None:
    loss = F.cross_entropy(model(minipar.tensor(x)), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def plain_adam(steps: int = STEPS) -> list[np.ndarray]:
    model = make_model()
    opt = optim.Adam(model.parameters(), **ADAM)
    for _ in range(steps):
        step(model, opt, X, Y)
    return weights(model)


REFERENCE = plain_adam()


def train_zero(comm: Any, steps: int = STEPS, seed: int = 0) -> tuple[nn.Module, ZeroOptimizer]:
    model = make_model(seed)
    opt = ZeroOptimizer(optim.Adam, model.parameters(), comm, **ADAM)
    for _ in range(steps):
        step(model, opt, shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size))
    return model, opt


def assert_matches(per_rank: list[list[np.ndarray]], reference: list[np.ndarray]) -> None:
    for rank, rank_weights in enumerate(per_rank):
        for got, expected in zip(rank_weights, reference):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=f"rank {rank}")
        assert all(np.array_equal(a, b) for a, b in zip(rank_weights, per_rank[0]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_zero_adam_matches_plain_adam_on_one_process(world_size: int) -> None:
    def body(comm: Any) -> list[np.ndarray]:
        model, _ = train_zero(comm, seed=comm.rank)  # ranks start different: rank 0's weights win
        return weights(model)

    assert_matches(run_local(body, world_size), REFERENCE)


@pytest.mark.timeout(60)
def test_zero_sgd_momentum_matches_plain_sgd() -> None:
    reference_model = make_model()
    reference_opt = optim.SGD(reference_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        step(reference_model, reference_opt, X, Y)

    def body(comm: Any) -> list[np.ndarray]:
        model = make_model()
        opt = ZeroOptimizer(optim.SGD, model.parameters(), comm, lr=0.1, momentum=0.9)
        for _ in range(STEPS):
            step(model, opt, shard(X, comm.rank, 3), shard(Y, comm.rank, 3))
        return weights(model)

    assert_matches(run_local(body, 3), weights(reference_model))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_optimizer_state_per_rank_is_one_pth_of_plain_adam(world_size: int) -> None:
    plain_state = 2 * PSI * 8  # exp_avg + exp_avg_sq, float64

    def body(comm: Any) -> tuple[int, tuple[int, int]]:
        _, opt = train_zero(comm, steps=1)
        state = opt.state_dict()["state"][0]
        return sum(v.nbytes for v in state.values() if hasattr(v, "nbytes")), opt.shard_bounds

    results = run_local(body, world_size)
    bounds = array_split_bounds(PSI, world_size)
    for rank, (nbytes, owned) in enumerate(results):
        assert owned == (bounds[rank], bounds[rank + 1])
        assert nbytes == plain_state // world_size  # Ψ divisible by p: exactly 1/p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_bytes_sent_equal_ddp_and_the_ring_formula(world_size: int) -> None:
    def body(comm: Any) -> tuple[int, int]:
        x, y = shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size)
        model = make_model()
        opt = ZeroOptimizer(optim.Adam, model.parameters(), comm, **ADAM)
        comm.reset_counters()
        step(model, opt, x, y)
        zero_bytes = comm.bytes_sent
        ddp = DistributedDataParallel(make_model(), comm=comm)  # one 25 MiB bucket
        ddp_opt = optim.Adam(ddp.parameters(), **ADAM)
        comm.reset_counters()
        step(ddp, ddp_opt, x, y)
        return zero_bytes, comm.bytes_sent

    formula = 2 * (world_size - 1) * PSI * 8 // world_size
    assert run_local(body, world_size) == [(formula, formula)] * world_size


@pytest.mark.timeout(60)
def test_state_dict_holds_only_this_shard_and_round_trips() -> None:
    def body(comm: Any) -> list[np.ndarray]:
        model, opt = train_zero(comm, steps=10)
        saved = opt.state_dict()
        lo, hi = opt.shard_bounds
        assert saved["zero"] == {"stage": 1, "world_size": 4, "rank": comm.rank, "total_length": PSI,
                                 "shard_bounds": array_split_bounds(PSI, 4)}
        assert saved["state"][0]["exp_avg"].shape == (hi - lo,) and saved["state"][0]["step"] == 10
        resumed = ZeroOptimizer(optim.Adam, model.parameters(), comm, **ADAM)
        resumed.load_state_dict(saved)
        for _ in range(STEPS - 10):
            step(model, resumed, shard(X, comm.rank, 4), shard(Y, comm.rank, 4))
        return weights(model)

    assert_matches(run_local(body, 4), REFERENCE)


@pytest.mark.timeout(60)
def test_state_dicts_resharded_from_4_to_2_ranks_continue_training_exactly() -> None:
    def first_part(comm: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        model, opt = train_zero(comm, steps=10)
        return model.state_dict(), opt.state_dict()

    saved = run_local(first_part, 4)
    resharded = reshard_state_dicts([opt_state for _, opt_state in saved], 2)

    def second_part(comm: Any) -> list[np.ndarray]:
        model = make_model()
        model.load_state_dict(saved[0][0])
        opt = ZeroOptimizer(optim.Adam, model.parameters(), comm, **ADAM)
        opt.load_state_dict(resharded[comm.rank])
        for _ in range(STEPS - 10):
            step(model, opt, shard(X, comm.rank, 2), shard(Y, comm.rank, 2))
        return weights(model)

    assert_matches(run_local(second_part, 2), REFERENCE)


@pytest.mark.timeout(60)
def test_bad_input_raises_clear_errors() -> None:
    params = list(make_model().parameters())
    with pytest.raises(TypeError, match="Communicator.*got str"):
        ZeroOptimizer(optim.Adam, params, "comm")

    def body(comm: Any) -> None:
        with pytest.raises(TypeError, match="optimizer class"):
            ZeroOptimizer(optim.Adam(params), params, comm)
        with pytest.raises(ValueError, match="empty parameter list"):
            ZeroOptimizer(optim.Adam, [], comm)
        with pytest.raises(TypeError, match="parameter groups are not supported"):
            ZeroOptimizer(optim.Adam, [{"params": params}], comm)
        mixed = [nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros(3, dtype=np.float32))]
        with pytest.raises(ValueError, match="share dtype"):
            ZeroOptimizer(optim.Adam, mixed, comm)
        opt = ZeroOptimizer(optim.Adam, make_model().parameters(), comm)
        with pytest.raises(ValueError, match="world size, rank, total length"):
            opt.load_state_dict({**opt.state_dict(), "zero": {"world_size": 2, "rank": 0,
                                                               "total_length": PSI}})
        with pytest.raises(ValueError, match="'zero' entry is missing"):
            opt.load_state_dict(optim.Adam(params).state_dict())

    run_local(body, 1)


MPI_SCRIPT = """
import os
import tracemalloc
import numpy as np
import minipar
from minipar import nn, optim
from minipar.comm import world
import test_zero as t

comm = world()
minipar.manual_seed(0)
big = nn.Sequential(nn.Linear(256, 256, dtype=np.float64), nn.Tanh(), nn.Linear(256, 256, dtype=np.float64))
x = np.random.default_rng(comm.rank).normal(size=(8, 256))

def optimizer_state_bytes(opt, model):
    tracemalloc.start(10)  # enough frames to see minipar/optim/ behind numpy's zeros_like
    (model(minipar.tensor(x)) ** 2).mean().backward()
    opt.step()  # the first step allocates the state; its temporaries are gone by the snapshot
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, os.path.join(os.path.dirname(optim.__file__), "*"), all_frames=True)])
    tracemalloc.stop()
    return sum(stat.size for stat in snapshot.statistics("filename"))

plain = optimizer_state_bytes(optim.Adam(big.parameters()), big)
sharded = optimizer_state_bytes(t.ZeroOptimizer(optim.Adam, big.parameters(), comm), big)
assert abs(sharded - plain / comm.size) <= 0.01 * plain / comm.size, (plain, sharded)
model, opt = t.train_zero(comm)
err = max(np.abs(a - b).max() for a, b in zip(t.weights(model), t.REFERENCE))
assert err < 1e-9, err
passed = np.ones(1)  # every rank got here: sum the flags, so only rank 0 prints (no interleaving)
from minipar.comm import allreduce
allreduce(comm, passed)
if comm.rank == 0:
    print("OK ranks", int(passed[0]), comm.backend, plain, sharded, f"{err:.1e}", flush=True)
"""


@requires_mpi
@pytest.mark.timeout(120)
def test_zero_under_mpiexec_matches_adam_with_one_pth_of_the_memory_measured_by_tracemalloc() -> None:
    out = assert_ok(run_mpi(MPI_SCRIPT, n=4, timeout=90, env={"PYTHONPATH": f"{REPO}/tests:{REPO}"}))
    assert "OK ranks 4 mpi " in out
