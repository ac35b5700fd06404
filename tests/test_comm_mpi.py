"""minipar.comm under real MPI: every collective against MPI.Allreduce and closed forms.

Each MPI launch costs about a second, so this file runs *itself* under
``mpiexec`` once per world size (p = 1..5): the ``__main__`` part below checks
every collective, dtype and awkward length and prints one ``OK <check>`` line
per check on rank 0; the pytest tests then read that report.

    mpiexec -n 3 python -m mpi4py tests/test_comm_mpi.py     # the same checks by hand
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from mpirun import REPO, assert_ok, requires_mpi, run_mpi

pytestmark = pytest.mark.timeout(240)  # besides run_mpi's own MPIEXEC_TIMEOUT deadline
WORLD_SIZES = [1, 2, 3, 4, 5]
ALGORITHMS = ["ring", "naive", "tree", "recursive_doubling", "auto"]


# ----- the pytest side ------------------------------------------------------------------
@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda p: f"p{p}")
def report(request: pytest.FixtureRequest) -> str:
    """Rank 0's output of one launch of this file at p = request.param."""
    p = request.param
    out = assert_ok(run_mpi(__file__, p, timeout=90))
    assert f"ALL CHECKS RAN p={p}" in out, out
    return out


def check_passed(report: str, name: str) -> None:
    lines = [line for line in report.splitlines() if line.split(" ")[1:2] == [name]]
    assert lines, f"check {name!r} did not report:\n{report}"
    assert lines[0].startswith("OK "), "\n".join(lines)


@requires_mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreduce_matches_mpi_and_closed_form_for_any_length_dtype_and_op(
    report: str, algorithm: str
) -> None:
    check_passed(report, f"allreduce[{algorithm}]")


@requires_mpi
def test_ring_allreduce_results_are_bit_identical_on_every_rank(report: str) -> None:
    check_passed(report, "bit_identical")


@requires_mpi
def test_ring_allreduce_sends_exactly_2n_minus_own_and_right_chunks(report: str) -> None:
    check_passed(report, "ring_counters")


@requires_mpi
def test_one_pass_and_slabbed_ring_are_bit_identical_and_logged_under_mpi(report: str) -> None:
    check_passed(report, "ring_forms")


@requires_mpi
@pytest.mark.parametrize("name", ["reduce_scatter", "allgather", "broadcast"])
def test_sharded_collectives_and_broadcast_match_closed_forms(report: str, name: str) -> None:
    check_passed(report, name)


@requires_mpi
@pytest.mark.parametrize(
    "name", ["point_to_point", "background_thread", "split", "big_message_pieces", "size_mismatch"]
)
def test_point_to_point_split_and_message_checks(report: str, name: str) -> None:
    check_passed(report, name)


@requires_mpi
def test_cupy_arrays_travel_through_mpi() -> None:
    from minipar.backend import cupy_available

    if not cupy_available():
        pytest.skip("CuPy with a GPU is not available (staging through host memory is untested)")
    out = assert_ok(run_mpi("""
        import cupy, minipar.comm as mc
        comm = mc.world()
        x = cupy.full(1000, comm.rank + 1.0)
        mc.ring_allreduce(comm, x)
        assert float(x[0]) == 3.0
        print("OK cupy", comm.rank)
    """, 2))
    assert "OK cupy" in out


@requires_mpi
@pytest.mark.parametrize("lesson", ["02_point_to_point.py", "03_ring_allreduce.py"])
def test_lesson_runs_at_the_rank_count_its_docstring_names(lesson: str) -> None:
    path = REPO / "lessons" / lesson
    first_line = path.read_text().split("\n", 1)[0]
    match = re.search(r"mpiexec -n (\d+)", first_line)
    assert match, f"{lesson}: the docstring's first line must give the launch line"
    out = assert_ok(run_mpi(path, int(match.group(1)), timeout=120))
    assert "bytes sent per rank" in out


# ----- the MPI side: run under mpiexec ----------------------------------------------------
def _main() -> None:  # noqa: C901 - one long list of checks, read top to bottom
    from mpi4py import MPI

    import minipar.comm as mc
    from minipar.comm import mpi_backend

    comm = mc.world()
    assert isinstance(comm, mc.MPICommunicator), type(comm)
    world = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    failures: dict[str, list[str]] = {}
    order: list[str] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        if name not in failures:
            failures[name] = []
            order.append(name)
        if not ok:
            failures[name].append(f"rank {rank}: {detail}")

    def identical_everywhere(x: np.ndarray) -> bool:
        raw = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
        low, high = raw.copy(), raw.copy()
        world.Allreduce(MPI.IN_PLACE, low, MPI.MIN)
        world.Allreduce(MPI.IN_PLACE, high, MPI.MAX)
        return bool(np.array_equal(low, high))

    lengths = sorted({0, 1, max(p - 1, 1), p + 1, 1000, 1000003})
    dtypes = [np.float32, np.float64, np.int64]
    rng = np.random.default_rng(rank)
    for algorithm in ALGORITHMS:
        name = f"allreduce[{algorithm}]"
        for dtype in dtypes:
            for n in lengths:
                ops = ["sum"] if n > 10000 else ["sum", "max", "min"]
                ops += ["mean"] if np.dtype(dtype).kind == "f" and n <= 10000 else []
                base = (np.arange(n) % 1000).astype(dtype)  # exact in every dtype
                for op in ops:
                    x = (rank + 1) * base  # closed forms: sum_r (r+1) = p(p+1)/2, etc.
                    expected = {
                        "sum": (p * (p + 1) // 2) * base, "max": p * base, "min": base,
                        "mean": ((p * (p + 1) // 2) * base) / p,
                    }[op]
                    got = mc.allreduce(comm, x, op=op, algorithm=algorithm)
                    check(name, got is x and np.array_equal(x, expected),
                          f"{op} {np.dtype(dtype)} n={n}: wrong result")
                    check("bit_identical", identical_everywhere(x), f"{algorithm} {op} n={n}")
            # random data: compare with MPI's own Allreduce (sum order may differ: allclose)
            x = rng.standard_normal(1001).astype(dtype) if dtype != np.int64 else \
                rng.integers(-1000, 1000, 1001)
            reference = np.empty_like(x)
            world.Allreduce(x, reference, MPI.SUM)
            mc.allreduce(comm, x, algorithm=algorithm)
            check(name, np.allclose(x, reference, rtol=1e-5, atol=1e-5), "differs from MPI")
            check("bit_identical", identical_everywhere(x), f"{algorithm} random")
        # any shape: a (3, 5) array all-reduces like its flat view
        matrix = np.full((3, 5), rank + 1.0)
        mc.allreduce(comm, matrix, algorithm=algorithm)
        check(name, matrix.shape == (3, 5) and (matrix == p * (p + 1) / 2).all(), "2-D")

    # ring counters: 2N - c_r - c_{r+1} elements, c from numpy.array_split
    for n in [0, 1, p - 1, p + 1, 1000, 1003]:
        sizes = [len(part) for part in np.array_split(np.arange(n), p)]
        x = np.ones(n, dtype=np.float32)
        comm.reset_counters()
        mc.ring_allreduce(comm, x)
        expect = 0 if p == 1 else 2 * n - sizes[rank] - sizes[(rank + 1) % p]
        check("ring_counters", comm.bytes_sent == 4 * expect,
              f"n={n}: sent {comm.bytes_sent} bytes, expected {4 * expect}")
        if n % p == 0:
            check("ring_counters", expect == 2 * (p - 1) * n // p, "formula")

    # the one-pass ring and the slabbed one (several slabs: SLAB_BYTES lowered) give the same
    # bits; the one-pass ring's log holds its 2(p-1) messages
    from minipar.comm import ring

    saved_slab, ring.SLAB_BYTES = ring.SLAB_BYTES, 4096
    try:
        for n in [0, 1, p + 1, 1003, 100_003]:
            x = rng.standard_normal(n).astype(np.float32)
            y = x.copy()
            with mc.message_log(comm) as log:
                mc.ring_allreduce(comm, x, op="mean", slabs=False)
            mc.ring_allreduce(comm, y, op="mean", slabs=True)
            check("ring_forms", x.tobytes() == y.tobytes() and identical_everywhere(x), f"n={n}")
            expected = 2 * (p - 1) if p > 1 and n else 0
            check("ring_forms", len(log) == expected, f"n={n}: {len(log)} messages logged")
    finally:
        ring.SLAB_BYTES = saved_slab

    # reduce_scatter: a view of shard `rank`; allgather: shards of unequal length
    for n in [0, 1, p + 1, 1003]:
        for dtype in dtypes:
            base = (np.arange(n) % 1000).astype(dtype)
            x = (rank + 1) * base
            shard = mc.reduce_scatter(comm, x)
            mine = np.array_split((p * (p + 1) // 2) * base, p)[rank]
            is_view = shard.size == 0 or np.shares_memory(shard, x)
            check("reduce_scatter", np.array_equal(shard, mine) and is_view, f"n={n} {dtype}")
            full = mc.allgather(comm, np.array_split(base, p)[rank].copy())
            check("allgather", np.array_equal(full, base), f"n={n} {np.dtype(dtype)} no out")
            out = np.empty(n, dtype=dtype)
            got = mc.allgather(comm, np.array_split(base, p)[rank].copy(), out=out)
            check("allgather", got is out and np.array_equal(out, base), f"n={n} with out")
    for root in range(p):
        for n in [0, 1, 1000]:
            x = np.arange(n, dtype=np.float64) + 7 if rank == root else np.zeros(n)
            mc.broadcast(comm, x, root=root)
            check("broadcast", np.array_equal(x, np.arange(n) + 7.0), f"root={root} n={n}")

    # point to point: send/recv, isend/irecv, sendrecv round the ring
    right, left = (rank + 1) % p, (rank - 1) % p
    incoming = np.empty(5, dtype=np.int64)
    comm.sendrecv(np.full(5, rank), right, incoming, left)
    check("point_to_point", (incoming == left).all(), "sendrecv")
    requests = [comm.irecv(incoming, left, tag=3), comm.isend(np.full(5, 10 * rank), right, 3)]
    for request in requests:
        request.wait()
    check("point_to_point", (incoming == 10 * left).all(), "isend/irecv")
    if p > 1:
        if rank == 0:
            comm.send(np.arange(4.0), 1, tag=9)
        elif rank == 1:
            got = comm.recv(np.empty(4), 0, tag=9)
            check("point_to_point", np.array_equal(got, np.arange(4.0)), "send/recv")
    else:
        check("point_to_point", True)
    comm.barrier()

    # MPI_THREAD_MULTIPLE: a collective on a background thread while the main thread computes
    import threading

    check("background_thread", comm.thread_multiple, "MPI is not THREAD_MULTIPLE")
    bucket = np.full(300_000, rank + 1.0)
    worker = threading.Thread(target=mc.ring_allreduce, args=(comm, bucket))
    worker.start()
    product = np.ones((300, 300)) @ np.ones((300, 300))
    worker.join()
    check("background_thread", (bucket == p * (p + 1) / 2).all() and product[0, 0] == 300, "")

    # split: even and odd ranks, numbered by descending key
    sub = comm.split(rank % 2, key=-rank)
    members = [r for r in range(p) if r % 2 == rank % 2]
    check("split", sub.size == len(members) and sub.rank == sorted(members, reverse=True)
          .index(rank), f"size {sub.size} rank {sub.rank}")
    total = mc.allreduce(sub, np.array([float(rank)]))
    check("split", total[0] == sum(members), "allreduce within the split")
    check("split", comm.split(None) is None, "color None")

    # messages longer than MAX_MESSAGE_BYTES go in pieces
    saved, mpi_backend.MAX_MESSAGE_BYTES = mpi_backend.MAX_MESSAGE_BYTES, 1000
    try:
        x = np.arange(5003, dtype=np.float64) * (rank + 1)
        mc.ring_allreduce(comm, x)
        check("big_message_pieces", np.array_equal(x, np.arange(5003) * (p * (p + 1) / 2)), "")
        y = np.empty(3001, dtype=np.float32)
        comm.sendrecv(np.full(3001, rank, dtype=np.float32), right, y, left)
        check("big_message_pieces", (y == left).all(), "sendrecv in pieces")
    finally:
        mpi_backend.MAX_MESSAGE_BYTES = saved

    # a receive buffer of the wrong size raises ValueError naming both sizes
    if p > 1:
        if rank == 0:
            comm.send(np.zeros(2), 1, tag=11)  # 16 bytes into a 24-byte buffer
            comm.send(np.zeros(4), 1, tag=12)  # 32 bytes into a 24-byte buffer
        elif rank == 1:
            for tag in (11, 12):
                try:
                    comm.recv(np.empty(3), 0, tag=tag)
                    check("size_mismatch", False, f"tag {tag}: no error")
                except ValueError as error:
                    check("size_mismatch", "24" in str(error), str(error))
    check("size_mismatch", True)
    comm.barrier()

    everything = world.gather(failures, root=0)
    if rank == 0:
        for name in order:
            problems = [item for per_rank in everything for item in per_rank.get(name, [])]
            print(("OK " if not problems else "FAIL ") + name + " " + "; ".join(problems[:5]))
        print(f"ALL CHECKS RAN p={p}")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _main()
