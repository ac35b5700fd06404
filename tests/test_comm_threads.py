"""minipar.comm on the thread backend (run_local): fast, so it carries the property tests."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpirun import REPO

import minipar.comm as mc

ALGORITHMS = ["ring", "naive", "tree", "recursive_doubling", "auto"]
DTYPES = [np.float32, np.float64, np.int64]


def awkward_lengths(p: int) -> list[int]:
    return sorted({0, 1, max(p - 1, 1), p, p + 1, 1000, 1003})


def chunk_sizes(n: int, p: int) -> list[int]:
    return [len(part) for part in np.array_split(np.arange(n), p)]


def test_run_local_returns_each_ranks_result_in_rank_order() -> None:
    assert mc.run_local(lambda comm: (comm.rank, comm.size), 3) == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreduce_matches_closed_forms_for_every_op_dtype_and_awkward_length(
    p: int, algorithm: str
) -> None:
    def body(comm: mc.Communicator) -> None:
        for dtype in DTYPES:
            for n in awkward_lengths(p):
                base = (np.arange(n) % 1000).astype(dtype)
                ops = ["sum", "max", "min"] + (["mean"] if np.dtype(dtype).kind == "f" else [])
                for op in ops:
                    x = (comm.rank + 1) * base
                    expected = {
                        "sum": (p * (p + 1) // 2) * base, "max": p * base, "min": base,
                        "mean": ((p * (p + 1) // 2) * base) / p,
                    }[op]
                    assert mc.allreduce(comm, x, op=op, algorithm=algorithm) is x
                    np.testing.assert_array_equal(x, expected, err_msg=f"{op} {dtype} n={n}")

    mc.run_local(body, p)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreduce_of_random_floats_is_bit_identical_on_every_rank(algorithm: str) -> None:
    def body(comm: mc.Communicator) -> bytes:
        x = np.random.default_rng(comm.rank).standard_normal(1001).astype(np.float32)
        x[:4] = [0.0, -0.0, 0.0, -0.0] if comm.rank % 2 else [-0.0, 0.0, -0.0, 0.0]
        for op in ["sum", "max", "min", "mean"]:
            mc.allreduce(comm, x, op=op, algorithm=algorithm)
        return x.tobytes()

    for p in [2, 3, 5]:
        results = mc.run_local(body, p)
        assert all(result == results[0] for result in results)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), p=st.integers(1, 7))
def test_ring_allreduce_matches_sum_for_any_length_and_rank_count(n: int, p: int) -> None:
    def body(comm: mc.Communicator) -> np.ndarray:
        return mc.ring_allreduce(comm, np.arange(n, dtype=np.int64) * (comm.rank + 1))

    for result in mc.run_local(body, p):
        np.testing.assert_array_equal(result, np.arange(n) * (p * (p + 1) // 2))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), p=st.integers(1, 7))
def test_ring_allreduce_sends_exactly_2n_minus_own_and_right_neighbours_chunk(n: int, p: int
                                                                                ) -> None:
    # reduce-scatter sends every chunk but our own, all-gather every chunk but our right
    # neighbour's: 2N - c_r - c_{r+1} elements, which is 2(p-1)/p * N when p divides N.
    sizes = chunk_sizes(n, p)

    def body(comm: mc.Communicator) -> int:
        mc.ring_allreduce(comm, np.ones(n, dtype=np.float64))
        return comm.bytes_sent

    for rank, sent in enumerate(mc.run_local(body, p)):
        expected = 0 if p == 1 else 2 * n - sizes[rank] - sizes[(rank + 1) % p]
        assert sent == 8 * expected
        if n % p == 0:
            assert expected == 2 * (p - 1) * n // p


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), p=st.integers(1, 6), slab_bytes=st.integers(1, 200))
def test_ring_in_slabs_gives_the_same_bits_and_bytes_as_one_pass(n: int, p: int,
                                                                 slab_bytes: int) -> None:
    from minipar.comm import ring

    def body(comm: mc.Communicator) -> tuple[bytes, int, bytes, bytes]:
        x = np.random.default_rng(comm.rank).standard_normal(n)
        mc.ring_allreduce(comm, x, op="mean")
        shard = mc.reduce_scatter(comm, np.arange(n, dtype=np.float64) * (comm.rank + 1))
        full = mc.allgather(comm, shard.copy(), out=np.empty(n))
        return x.tobytes(), comm.bytes_sent, shard.tobytes(), full.tobytes()

    one_pass = mc.run_local(body, p)
    saved, ring.SLAB_BYTES = ring.SLAB_BYTES, slab_bytes
    try:
        in_slabs = mc.run_local(body, p)
    finally:
        ring.SLAB_BYTES = saved
    assert in_slabs == one_pass


def test_naive_allreduce_root_sends_p_minus_1_copies_and_others_one() -> None:
    def body(comm: mc.Communicator) -> int:
        mc.naive_allreduce(comm, np.ones(1000, dtype=np.float32))
        return comm.bytes_sent

    assert mc.run_local(body, 4) == [3 * 4000, 4000, 4000, 4000]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 200), p=st.integers(1, 6))
def test_reduce_scatter_returns_a_view_of_this_ranks_array_split_shard(n: int, p: int) -> None:
    def body(comm: mc.Communicator) -> None:
        x = np.arange(n, dtype=np.float64) * (comm.rank + 1)
        shard = mc.reduce_scatter(comm, x)
        expected = np.array_split(np.arange(n) * (p * (p + 1) / 2), p)[comm.rank]
        np.testing.assert_array_equal(shard, expected)
        assert shard.size == 0 or np.shares_memory(shard, x)

    mc.run_local(body, p)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 200), p=st.integers(1, 6))
def test_allgather_joins_unequal_shards_with_and_without_out(n: int, p: int) -> None:
    full = np.arange(n, dtype=np.int64) * 3

    def body(comm: mc.Communicator) -> None:
        shard = np.array_split(full, p)[comm.rank].copy()
        np.testing.assert_array_equal(mc.allgather(comm, shard), full)
        out = np.empty(n, dtype=np.int64)
        assert mc.allgather(comm, shard, out=out) is out
        np.testing.assert_array_equal(out, full)

    mc.run_local(body, p)


def test_allgather_rejects_shards_that_do_not_follow_array_split() -> None:
    def body(comm: mc.Communicator) -> None:
        mc.allgather(comm, np.zeros(3 if comm.rank == 0 else 1))

    with pytest.raises(ValueError, match="array_split"):
        mc.run_local(body, 2)


@pytest.mark.parametrize("p", [1, 2, 3, 5, 6])
def test_broadcast_copies_the_roots_array_from_every_root(p: int) -> None:
    def body(comm: mc.Communicator) -> None:
        for root in range(p):
            x = np.arange(7.0) if comm.rank == root else np.zeros(7)
            mc.broadcast(comm, x, root=root)
            np.testing.assert_array_equal(x, np.arange(7.0))

    mc.run_local(body, p)


def test_collectives_work_on_any_contiguous_shape_and_return_the_same_array() -> None:
    def body(comm: mc.Communicator) -> None:
        x = np.full((2, 3, 4), float(comm.rank))
        assert mc.ring_allreduce(comm, x) is x
        assert x.shape == (2, 3, 4) and (x == 3.0).all()

    mc.run_local(body, 3)


def test_send_copies_so_the_sender_may_reuse_its_buffer() -> None:
    def body(comm: mc.Communicator) -> np.ndarray | None:
        if comm.rank == 0:
            buffer = np.arange(4.0)
            comm.send(buffer, 1)
            buffer[:] = -1  # must not change what rank 1 receives
            return None
        return comm.recv(np.empty(4), 0)

    np.testing.assert_array_equal(mc.run_local(body, 2)[1], np.arange(4.0))


def test_irecv_matches_messages_in_posting_order_like_mpi() -> None:
    def body(comm: mc.Communicator) -> list[float]:
        if comm.rank == 0:
            for value in range(3):
                comm.isend(np.array([float(value)]), 1, tag=5).wait()
            return []
        buffers = [np.empty(1) for _ in range(3)]
        requests = [comm.irecv(buffer, 0, tag=5) for buffer in buffers]
        for request in reversed(requests):  # waiting out of order changes nothing
            request.wait()
        return [float(buffer[0]) for buffer in buffers]

    assert mc.run_local(body, 2)[1] == [0.0, 1.0, 2.0]


def test_sendrecv_round_a_ring_does_not_deadlock() -> None:
    def body(comm: mc.Communicator) -> int:
        incoming = np.empty(1, dtype=np.int64)
        comm.sendrecv(np.array([comm.rank]), (comm.rank + 1) % comm.size, incoming,
                      (comm.rank - 1) % comm.size)
        return int(incoming[0])

    assert mc.run_local(body, 4) == [3, 0, 1, 2]


def test_split_numbers_ranks_by_key_and_keeps_messages_apart() -> None:
    def body(comm: mc.Communicator) -> tuple[int, int, float]:
        sub = comm.split(comm.rank % 2, key=-comm.rank)
        total = mc.allreduce(sub, np.array([float(comm.rank)]))
        assert comm.split(None) is None
        return sub.rank, sub.size, float(total[0])

    assert mc.run_local(body, 5) == [(2, 3, 6.0), (1, 2, 4.0), (1, 3, 6.0), (0, 2, 4.0),
                                     (0, 3, 6.0)]


def test_barrier_and_counters_reset() -> None:
    def body(comm: mc.Communicator) -> tuple[int, int]:
        comm.barrier()  # uncounted
        mc.ring_allreduce(comm, np.ones(6))
        counted = (comm.bytes_sent, comm.messages_sent)
        comm.reset_counters()
        assert (comm.bytes_sent, comm.messages_sent) == (0, 0)
        return counted

    assert mc.run_local(body, 3) == [(64, 4)] * 3  # 2N - c_r - c_{r+1} = 12 - 4 elements


def test_a_collective_may_run_on_a_background_thread_while_the_main_thread_computes() -> None:
    # what DDP does: the bucket all-reduce runs on a comm thread during backward's matmuls
    def body(comm: mc.Communicator) -> float:
        bucket = np.full(100_000, comm.rank + 1.0)
        worker = threading.Thread(target=mc.ring_allreduce, args=(comm, bucket))
        worker.start()
        product = np.ones((200, 200)) @ np.ones((200, 200))
        worker.join()
        return float(bucket[0] + product[0, 0] - 200)

    assert mc.run_local(body, 3) == [6.0, 6.0, 6.0]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_world_outside_mpiexec_is_a_size_one_communicator_that_all_reduces() -> None:
    result = _python(
        "import numpy as np, minipar.comm as mc; c = mc.world(); x = np.ones(3);"
        "mc.allreduce(c, x); assert c is mc.world(); print(c.backend, c.size, x.sum())"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mpi", "1", "3.0"]


def test_world_without_mpi4py_falls_back_to_a_size_one_thread_communicator() -> None:
    result = _python(
        "import sys; sys.modules['mpi4py'] = None\n"
        "import numpy as np, minipar.comm as mc; c = mc.world(); x = np.ones(3);"
        "mc.ring_allreduce(c, x); print(c.backend, c.size, x.sum())"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["threads", "1", "3.0"]


def test_cupy_arrays_all_reduce_on_the_thread_backend() -> None:
    from minipar.backend import cupy_available

    if not cupy_available():
        pytest.skip("CuPy with a GPU is not available")
    import cupy  # type: ignore[import-not-found]

    def body(comm: mc.Communicator) -> float:
        x = cupy.full(1000, comm.rank + 1.0)
        mc.ring_allreduce(comm, x)
        return float(x[0])

    assert mc.run_local(body, 2) == [3.0, 3.0]
