"""Data parallelism (minipar.parallel.data_parallel): DDP and the naive form against one process.

The oracle is one process training on the whole global batch in float64: with the
loss a mean over the batch, p ranks that average their gradients must take the same
steps (1e-9 after 25 SGD-momentum steps), and every rank must hold bit-identical
weights. Most tests run the ranks as threads (``run_local``); one launches mpiexec.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn, optim
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.observe import trace
from minipar.parallel import DistributedDataParallel, NaiveDataParallel
from minipar.parallel.data_parallel import ddp as dp_module
from minipar.random import generator

GLOBAL_BATCH = 36  # 3 micro-batches of 12, each divisible by 1, 2, 3 and 4: equal shares
STEPS = 25
RNG = np.random.default_rng(1234)
X = RNG.normal(size=(GLOBAL_BATCH, 6))
Y = RNG.integers(0, 3, GLOBAL_BATCH)


def make_model(seed: int = 0) -> nn.Module:
    minipar.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12, dtype=np.float64), nn.ReLU(),
                         nn.Linear(12, 12, dtype=np.float64), nn.ReLU(),
                         nn.Linear(12, 3, dtype=np.float64))


def shard(array: np.ndarray, rank: int, size: int) -> np.ndarray:
    return np.array_split(array, size)[rank]


def weights(model: Any) -> list[np.ndarray]:
    return [param.array.copy() for param in model.parameters()]


def train_one_process(steps: int = STEPS, model: nn.Module | None = None) -> list[np.ndarray]:
    model = model if model is not None else make_model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(minipar.tensor(X)), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return weights(model)


def train_wrapped(model: Any, comm: Any, steps: int = STEPS, after_backward: Any = None) -> list[np.ndarray]:
    """``steps`` SGD-momentum steps of a data-parallel wrapper on this rank's shard; its weights."""
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size)
    for _ in range(steps):
        loss = F.cross_entropy(model(minipar.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
    return weights(model)


def train_ddp(comm: Any, steps: int = STEPS, seed: int = 0, **ddp_kwargs: Any) -> list[np.ndarray]:
    return train_wrapped(DistributedDataParallel(make_model(seed), comm=comm, **ddp_kwargs), comm, steps)


def assert_matches_reference(per_rank: list[list[np.ndarray]], reference: list[np.ndarray]) -> None:
    for rank, rank_weights in enumerate(per_rank):
        for got, expected in zip(rank_weights, reference):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=f"rank {rank}")
    for rank_weights in per_rank[1:]:  # replicas are bit-identical, not merely close
        assert all(np.array_equal(a, b) for a, b in zip(rank_weights, per_rank[0]))


REFERENCE = train_one_process()


# ----- equivalence with one process -------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ddp_matches_single_process_after_25_steps(world_size: int, overlap: bool) -> None:
    per_rank = run_local(lambda comm: train_ddp(comm, overlap=overlap), world_size)
    assert_matches_reference(per_rank, REFERENCE)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ddp_with_one_bucket_per_parameter_matches_single_process(world_size: int) -> None:
    def body(comm: Any) -> Any:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6)
        assert ddp.bucket_layout == [[name] for name, _ in reversed(list(ddp.named_parameters()))]
        return train_ddp(comm, bucket_cap_mb=1e-6)

    assert_matches_reference(run_local(body, world_size), REFERENCE)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_no_sync_over_3_micro_steps_matches_single_process(world_size: int) -> None:
    micro = 3  # 36 samples -> 3 micro-batches of 12, each split over the ranks

    def body(comm: Any) -> tuple[list[np.ndarray], list[int]]:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-3)
        opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        bytes_per_micro_step = []
        for _ in range(STEPS):
            opt.zero_grad()
            for m in range(micro):
                x = shard(np.array_split(X, micro)[m], comm.rank, comm.size)
                y = shard(np.array_split(Y, micro)[m], comm.rank, comm.size)
                before = comm.bytes_sent
                if m < micro - 1:
                    with ddp.no_sync():
                        (F.cross_entropy(ddp(minipar.tensor(x)), y) / micro).backward()
                else:
                    (F.cross_entropy(ddp(minipar.tensor(x)), y) / micro).backward()
                bytes_per_micro_step.append(comm.bytes_sent - before)
            opt.step()
        return weights(ddp), bytes_per_micro_step[:micro]

    results = run_local(body, world_size)
    assert_matches_reference([w for w, _ in results], REFERENCE)
    for _, sent in results:  # no_sync really sends nothing; the last micro-step syncs
        assert sent[:2] == [0, 0]
        assert (sent[2] > 0) == (world_size > 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_starting_from_different_weights_end_equal(world_size: int) -> None:
    def body(comm: Any) -> list[np.ndarray]:
        return train_ddp(comm, seed=100 + comm.rank)  # rank 0's init is seed 100

    assert_matches_reference(run_local(body, world_size), train_one_process(model=make_model(100)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3])
def test_naive_data_parallel_matches_single_process(world_size: int) -> None:
    def body(comm: Any) -> list[np.ndarray]:
        model = NaiveDataParallel(make_model(7 + comm.rank), comm)
        return train_wrapped(model, comm, after_backward=model.allreduce_gradients)

    assert_matches_reference(run_local(body, world_size), train_one_process(model=make_model(7)))


class Branchy(nn.Module):
    """out = head(relu(body(x)) [+ extra(x)]): ``extra`` is used only when asked."""

    def __init__(self, seed: int = 0, swap: bool = False) -> None:
        super().__init__()
        minipar.manual_seed(seed)
        self.body = nn.Linear(6, 12, dtype=np.float64)
        self.extra = nn.Linear(6, 12, dtype=np.float64)
        self.head = nn.Linear(12, 3, dtype=np.float64)
        self.swap = swap

    def forward(self, x: Any, use_extra: bool = False) -> Any:
        hidden = self.body(x).relu()
        if use_extra:  # swap changes the graph's order, hence the order hooks fire in
            hidden = self.extra(x) + hidden if self.swap else hidden + self.extra(x)
        return self.head(hidden)


def branchy_reference(uses_extra: list[bool]) -> tuple[list[np.ndarray], list[bool]]:
    """One process: loss = (1/p) sum_r loss_r, shard r using ``extra`` when uses_extra[r]."""
    model = Branchy()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    p = len(uses_extra)
    for _ in range(STEPS):
        losses = [F.cross_entropy(model(minipar.tensor(shard(X, r, p)), uses_extra[r]), shard(Y, r, p))
                  for r in range(p)]
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        opt.zero_grad()
        (total / p).backward()
        opt.step()
    return weights(model), [param.grad is None for param in model.parameters()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pattern", ["nobody", "rank 0 only", "all, hooks in rank-dependent order"])
@pytest.mark.parametrize("overlap", [True, False])
def test_unused_parameters_are_handled_like_one_process(pattern: str, overlap: bool) -> None:
    p = 3
    uses_extra = {"nobody": [False] * p, "rank 0 only": [True, False, False],
                  "all, hooks in rank-dependent order": [True] * p}[pattern]

    def body(comm: Any) -> tuple[list[np.ndarray], list[bool]]:
        model = Branchy(swap=comm.rank % 2 == 1)
        ddp = DistributedDataParallel(model, comm=comm, bucket_cap_mb=1e-6, overlap=overlap,
                                      find_unused_parameters=True)
        opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        x, y = shard(X, comm.rank, p), shard(Y, comm.rank, p)
        for _ in range(STEPS):
            loss = F.cross_entropy(ddp(minipar.tensor(x), uses_extra[comm.rank]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return weights(model), [param.grad is None for param in model.parameters()]

    reference, reference_none = branchy_reference(uses_extra)
    results = run_local(body, p)
    assert_matches_reference([w for w, _ in results], reference)
    assert all(none == reference_none for _, none in results)


@pytest.mark.timeout(60)
def test_unused_parameter_without_find_unused_raises_naming_it() -> None:
    def body(comm: Any) -> None:
        ddp = DistributedDataParallel(Branchy(), comm=comm)
        F.cross_entropy(ddp(minipar.tensor(X[:4])), Y[:4]).backward()

    with pytest.raises(RuntimeError, match=r"extra\.weight.*find_unused_parameters=True"):
        run_local(body, 2)


@pytest.mark.timeout(60)
def test_averaged_gradients_live_in_the_buckets_with_no_copy_back() -> None:
    model = make_model()
    F.cross_entropy(model(minipar.tensor(X)), Y).backward()
    expected = [param.grad for param in model.parameters()]

    def body(comm: Any) -> None:
        x, y = minipar.tensor(shard(X, comm.rank, 3)), shard(Y, comm.rank, 3)
        packed = DistributedDataParallel(make_model(), comm=comm)  # one bucket: .grad are views of it
        solo = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6)  # one parameter each
        after = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6, overlap=False)
        for ddp in (packed, solo, after):
            F.cross_entropy(ddp(x), y).backward()
            for got, want in zip((param.grad for param in ddp.parameters()), expected):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert len(packed.buckets) == 1
        assert all(np.shares_memory(param.grad.array, packed.buckets[0].buffer.flat)
                   for param in packed.parameters())
        # one parameter per bucket, overlapped or not: the engine's own array is reduced in place,
        # no buffer at all
        for ddp in (solo, after):
            assert all(bucket.flat is bucket.params[0].grad.array and bucket.buffer is None
                       for bucket in ddp.buckets)

    run_local(body, 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [False, True])
def test_the_plain_copying_bucket_trains_bit_identically_to_the_in_place_one(overlap: bool) -> None:
    """reduce_in_place=False copies even one-parameter buckets into a flat buffer; same numbers."""

    def body(comm: Any) -> list[np.ndarray]:
        trained = []
        for in_place in (True, False):
            ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6, overlap=overlap,
                                          reduce_in_place=in_place)
            opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
            for _ in range(5):
                x, y = minipar.tensor(shard(X, comm.rank, 2)), shard(Y, comm.rank, 2)
                opt.zero_grad()
                F.cross_entropy(ddp(x), y).backward()
                opt.step()
            copied = all(b.buffer is not None and b.flat is b.buffer.flat for b in ddp.buckets)
            assert copied != in_place  # the plain form always copies; in place never does here
            trained.append([p.array.copy() for p in ddp.parameters()])
        for in_place_param, copied_param in zip(*trained):
            np.testing.assert_array_equal(in_place_param, copied_param)
        return trained[0]

    run_local(body, 2)


class SlowIdentity(minipar.Function):
    """y = x; its backward waits 50 ms before reading the gradient it was handed."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        return x.copy()

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> np.ndarray:
        time.sleep(0.05)  # time for a communication thread to modify ``grad`` if it were allowed to
        return grad.copy()


class Positions(nn.Module):
    """x + positions, a learned (rows, features) table: Add hands x and the table one gradient array."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(generator().normal(size=(12, 12)))

    def forward(self, x: Any) -> Any:
        return x + self.table


class WithPositions(nn.Module):
    """head(relu(slow(body(x)) + positions)); the table's bucket launches before body's."""

    def __init__(self) -> None:
        super().__init__()
        minipar.manual_seed(3)
        self.body = nn.Linear(6, 12, dtype=np.float64)
        self.positions = Positions()
        self.head = nn.Linear(12, 3, dtype=np.float64)

    def forward(self, x: Any) -> Any:
        return self.head(self.positions(SlowIdentity.apply(self.body(x))).relu())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlap", [True, False])
def test_in_backward_allreduce_never_modifies_a_gradient_array_backward_still_reads(overlap: bool) -> None:
    p, steps = 3, 3  # 36 rows: 12 per rank, the positions' first dimension

    reference = WithPositions()
    opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        losses = [F.cross_entropy(reference(minipar.tensor(shard(X, r, p))), shard(Y, r, p))
                  for r in range(p)]
        opt.zero_grad()
        ((losses[0] + losses[1] + losses[2]) / p).backward()
        opt.step()

    def body(comm: Any) -> list[np.ndarray]:
        # positions: a bucket of its own, all-reduced in place as soon as the hook fires
        ddp = DistributedDataParallel(WithPositions(), comm=comm, bucket_cap_mb=1e-6, overlap=overlap)
        opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        for _ in range(steps):
            loss = F.cross_entropy(ddp(minipar.tensor(shard(X, comm.rank, p))), shard(Y, comm.rank, p))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return weights(ddp)

    assert_matches_reference(run_local(body, p), weights(reference))


# ----- the communication thread ---------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("failing_ranks", [(0, 1), (1,)])
def test_error_in_communication_thread_surfaces_in_backward(monkeypatch: pytest.MonkeyPatch,
                                                            failing_ranks: tuple[int, ...]) -> None:
    real_allreduce = dp_module.allreduce

    def flaky_allreduce(comm: Any, array: Any, *args: Any, **kwargs: Any) -> Any:
        if comm.rank in failing_ranks and array.size == 3:  # the head's bias: the first bucket
            raise OSError(f"link down on rank {comm.rank}")
        return real_allreduce(comm, array, *args, **kwargs)

    monkeypatch.setattr(dp_module, "allreduce", flaky_allreduce)

    def body(comm: Any) -> None:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6, overlap=True)
        F.cross_entropy(ddp(minipar.tensor(X)), Y).backward()

    with pytest.raises(OSError, match="link down") as info:
        run_local(body, 2, timeout=20)
    assert any("communication thread" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.timeout(60)
def test_trace_shows_bucket_allreduces_on_the_comm_thread_in_bucket_order() -> None:
    def body(comm: Any) -> int:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6)
        for _ in range(2):
            F.cross_entropy(ddp(minipar.tensor(shard(X, comm.rank, 2))), shard(Y, comm.rank, 2)).backward()
        return len(ddp.buckets)

    trace.enable()
    try:
        buckets = run_local(body, 2)[0]
        events = trace.events()
    finally:
        trace.disable()
        trace.clear()
    for rank in range(2):
        spans = [e for e in events if e["rank"] == rank and e["name"].startswith("allreduce bucket")]
        assert all(e["cat"] == "comm" and e["tid"] == f"ddp-comm-rank{rank}" for e in spans)
        assert [e["name"] for e in spans] == [f"allreduce bucket {i}" for i in range(buckets)] * 2


# ----- interface and bad input ----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_ddp_passes_the_module_interface_through() -> None:
    def body(comm: Any) -> None:
        model = make_model()
        ddp = DistributedDataParallel(model, comm=comm)
        assert ddp.module is model
        assert list(ddp.state_dict()) == list(model.state_dict())
        assert [id(p) for p in ddp.parameters()] == [id(p) for p in model.parameters()]
        with minipar.no_grad():
            np.testing.assert_array_equal(ddp(minipar.tensor(X)).array, model(minipar.tensor(X)).array)
        assert ddp.eval() is ddp and not model.training and ddp.train().training
        assert "DistributedDataParallel" in repr(ddp)

    run_local(body, 2)


@pytest.mark.timeout(60)
def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(TypeError, match="Communicator.*got str"):
        DistributedDataParallel(make_model(), comm="not a communicator")
    with pytest.raises(TypeError, match=r"as a keyword: DistributedDataParallel\(module, comm=comm\)"):
        run_local(lambda comm: DistributedDataParallel(make_model(), comm), 1)
    with pytest.raises(TypeError, match="Communicator"):
        NaiveDataParallel(make_model(), None)

    def body(comm: Any) -> None:
        with pytest.raises(ValueError, match="no parameters"):
            DistributedDataParallel(nn.ReLU(), comm=comm)
        with pytest.raises(TypeError, match="Module, got list"):
            DistributedDataParallel([1, 2], comm=comm)
        with pytest.raises(ValueError, match="bucket_cap_mb"):
            DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=0)

    run_local(body, 1)

    def different_models(comm: Any) -> None:
        DistributedDataParallel(make_model() if comm.rank == 0 else Branchy(), comm=comm)

    with pytest.raises(ValueError, match="same model"):
        run_local(different_models, 2, timeout=20)


# ----- real processes -------------------------------------------------------------------------------
MPI_SCRIPT = """
import numpy as np, minipar
from minipar.comm import world, allgather
import test_data_parallel as t

comm = world()
for kwargs in ({}, {"bucket_cap_mb": 1e-6}, {"overlap": False}):
    got = t.train_ddp(comm, seed=comm.rank, **kwargs)
    want = t.train_one_process(model=t.make_model(0))
    err = max(np.abs(a - b).max() for a, b in zip(got, want))
    flat = np.concatenate([w.ravel() for w in got])
    everyone = allgather(comm, flat).reshape(comm.size, -1)
    identical = all(np.array_equal(row, everyone[0]) for row in everyone)
    assert err < 1e-9 and identical, (kwargs, err, identical)
    if comm.rank == 0:
        print("OK", comm.size, comm.backend, kwargs, f"{err:.1e}", flush=True)
"""


@requires_mpi
@pytest.mark.timeout(120)
def test_ddp_under_mpiexec_matches_single_process_on_3_ranks() -> None:
    from mpirun import REPO

    out = assert_ok(run_mpi(MPI_SCRIPT, n=3, timeout=90,
                            env={"PYTHONPATH": f"{REPO}/tests:{REPO}"}))
    assert out.count("OK 3 mpi") == 3


@pytest.mark.timeout(60)
def test_a_parameter_frozen_on_one_rank_only_fails_at_construction_naming_it() -> None:
    """D9: used to fail later, as a byte-count mismatch inside a bucket's all-reduce."""

    def body(comm: Any) -> None:
        model = make_model()
        if comm.rank == 1:
            model[0].bias.requires_grad_(False)
        DistributedDataParallel(model, comm=comm)

    with pytest.raises(ValueError, match=r"rank 1 has requires_grad different from rank 0 for \['0.bias'\]"):
        run_local(body, 2)
