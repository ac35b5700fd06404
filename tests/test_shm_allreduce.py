"""allreduce(..., algorithm="shm"): shared memory on one host, bit-identical to the ring, no messages.

Thread ranks read each other's arrays; MPI ranks share an MPI-3 window, in two
forms (``shm.py``'s plain one and ``shm_pipeline.py``'s pieces) that must agree
with the ring and with each other. Arrays made by ``shared_empty`` (``shm_arrays.py``)
are all-reduced where they lie, with the same bits. The MPI checks run this file under mpiexec
(``__main__`` prints ``OK <check>`` lines):

    mpiexec -n 3 python -m mpi4py tests/test_shm_allreduce.py
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from mpirun import assert_ok, run_mpi

import minipar.comm as mc
from minipar.comm.shm_arrays import shared_empty

pytestmark = pytest.mark.timeout(120)
LENGTHS = [0, 1, 3, 1001, 70_001]


def both(xs: np.ndarray, op: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    p = len(xs)
    shm = mc.run_local(lambda c: mc.allreduce(c, xs[c.rank].copy(), op=op, algorithm="shm"), p)
    ring = mc.run_local(lambda c: mc.allreduce(c, xs[c.rank].copy(), op=op, algorithm="ring"), p)
    return shm, ring


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_shm_allreduce_is_bit_identical_to_the_ring_for_any_length(p: int, n: int, dtype: type) -> None:
    xs = (np.random.default_rng(n + p).standard_normal((p, n)) * 100).astype(dtype)
    for op in ("sum", "max", "min") + (("mean",) if dtype != np.int64 else ()):
        shm, ring = both(xs, op)
        for rank in range(p):
            assert np.array_equal(shm[rank], ring[rank]), (op, rank)


def test_shm_allreduce_matches_the_closed_form() -> None:
    base = np.arange(1000, dtype=np.float64)
    got = mc.run_local(lambda c: mc.allreduce(c, (c.rank + 1) * base, algorithm="shm"), 4)
    for x in got:
        assert np.array_equal(x, 10 * base)


def test_shm_allreduce_sends_no_messages() -> None:
    def sent(comm: mc.Communicator) -> tuple[int, int]:
        with mc.message_log(comm) as log:
            mc.allreduce(comm, np.ones(10_000), algorithm="shm")
        return comm.bytes_sent, len(log)

    assert mc.run_local(sent, 3) == [(0, 0)] * 3


def test_shm_synchronisation_is_checked_for_mismatched_calls() -> None:
    def mismatched(comm: mc.Communicator) -> None:
        mc.allreduce(comm, np.ones(10), algorithm="shm" if comm.rank == 0 else "ring")

    with pytest.raises(mc.CollectiveMismatchError, match="algorithm=shm"):
        mc.run_local(mismatched, 2, timeout=5, debug=True)


def test_shm_barrier_fails_instead_of_hanging_when_a_rank_never_comes() -> None:
    def only_rank_0(comm: mc.Communicator) -> None:
        if comm.rank == 0:
            mc.allreduce(comm, np.ones(10), algorithm="shm")

    with pytest.raises(mc.DeadlockError, match="rank 0 waits for rank 1"):
        mc.run_local(only_rank_0, 2, timeout=5)


def test_unknown_algorithm_lists_shm_and_hierarchical() -> None:
    with pytest.raises(ValueError, match=r"'hierarchical'.*'shm'"):
        mc.allreduce(mc.world(), np.ones(3), algorithm="shared")


def in_place(comm: mc.Communicator, x: np.ndarray, op: str) -> tuple[np.ndarray, bool]:
    """x all-reduced inside a shared array; also whether the result is that very array."""
    buf = shared_empty(comm, x.shape, x.dtype)
    buf[...] = x
    out = mc.allreduce(comm, buf, op=op, algorithm="shm")
    return buf.copy(), out is buf


@pytest.mark.parametrize("p", [1, 2, 3, 5])
@pytest.mark.parametrize("n", LENGTHS)
def test_a_shared_array_is_all_reduced_in_place_bit_identical_to_the_ring(p: int, n: int) -> None:
    for dtype in (np.float32, np.int64):
        xs = (np.random.default_rng(n + p).standard_normal((p, n)) * 100).astype(dtype)
        for op in ("sum", "max") + (("mean",) if dtype != np.int64 else ()):
            got = mc.run_local(lambda c, xs=xs, op=op: in_place(c, xs[c.rank], op), p)
            _, ring = both(xs, op)
            for rank in range(p):
                assert np.array_equal(got[rank][0], ring[rank]) and got[rank][1], (op, rank)


def test_a_shared_array_spanning_several_pieces_writes_each_chunk_into_every_segment() -> None:
    from minipar.comm.shm_arrays import PIECE_BYTES

    n = 3 * PIECE_BYTES // 8 + 5  # float64: every chunk of p = 2 is two pieces, one partial
    base = np.arange(n, dtype=np.float64)
    got = mc.run_local(lambda c: in_place(c, (c.rank + 1) * base, "sum")[0], 2)
    assert all(np.array_equal(x, 3 * base) for x in got)


def test_a_shared_array_sends_no_messages_and_keeps_its_shape() -> None:
    def body(comm: mc.Communicator) -> tuple[tuple[int, ...], int, float]:
        buf = shared_empty(comm, (4, 5), np.float64)
        buf[...] = comm.rank + 1
        with mc.message_log(comm) as log:
            mc.allreduce(comm, buf, algorithm="shm")
        return buf.shape, len(log), float(buf[3, 4])

    assert mc.run_local(body, 3) == [((4, 5), 0, 6.0)] * 3


def test_ranks_passing_different_shared_arrays_get_a_mismatch_not_each_others_bytes() -> None:
    def body(comm: mc.Communicator) -> None:
        first, second = shared_empty(comm, 8, np.float64), shared_empty(comm, 8, np.float64)
        mc.allreduce(comm, first if comm.rank == 0 else second, algorithm="shm")

    with pytest.raises(mc.CollectiveMismatchError, match=r"shared=0.*shared=1|shared=1.*shared=0"):
        mc.run_local(body, 2)

    def shared_and_plain(comm: mc.Communicator) -> None:
        buf = shared_empty(comm, 8, np.float64)
        mc.allreduce(comm, buf if comm.rank == 0 else np.ones(8), algorithm="shm")

    with pytest.raises(mc.CollectiveMismatchError, match="shared=0"):
        mc.run_local(shared_and_plain, 2)


def test_part_of_a_shared_array_takes_the_copying_form_and_shared_empty_checks_its_shape() -> None:
    def body(comm: mc.Communicator) -> bool:
        buf = shared_empty(comm, 10, np.float64)
        buf[...] = comm.rank + 1
        mc.allreduce(comm, buf[2:], algorithm="shm")  # a view: not the whole array
        return bool(np.array_equal(buf, [comm.rank + 1] * 2 + [3.0] * 8))

    assert mc.run_local(body, 2) == [True, True]
    with pytest.raises(ValueError, match=r"shape must be non-negative integers, got \(3, -1\)"):
        mc.run_local(lambda c: shared_empty(c, (3, -1)), 1)


@pytest.mark.parametrize("p", [2, 3])
def test_shm_allreduce_under_mpi_both_forms_are_bit_identical_to_the_ring_and_cache_windows(p: int) -> None:
    out = assert_ok(run_mpi(__file__, p, timeout=120))
    for name in ("bit_identical", "forms_agree", "shared_in_place", "windows_cached",
                 "one_staging_window", "windows_freed"):
        assert f"OK {name}" in out, out


def test_pieces_cover_every_chunk_round_by_round_within_the_slot() -> None:
    from minipar.comm.shm_pipeline import PIECE_BYTES, pieces

    for n, p, itemsize in [(0, 2, 4), (5, 3, 8), (3 * PIECE_BYTES // 4 + 7, 2, 4), (10**6, 3, 16),
                           (2 * PIECE_BYTES // 4 + 1, 2, 4)]:  # the last: chunk 0 one piece more
        rounds = pieces(n, p, itemsize)
        chunks = np.array_split(np.arange(n), p)
        for c, chunk in enumerate(chunks):
            covered = [i for k in range(len(rounds)) for i in range(*rounds[k][c])]
            assert covered == list(chunk)  # round by round, in order, exactly chunk c
        for round_pieces in rounds:
            assert len(round_pieces) == p
            assert all((hi - lo) * itemsize <= PIECE_BYTES for lo, hi in round_pieces)
        assert len(rounds) == max(-(-len(chunk) * itemsize // PIECE_BYTES) for chunk in chunks)


SPIN_DEADLINE = """
import numpy as np
import minipar.comm as mc

comm = mc.world()
mc.allreduce(comm, np.ones(1000), algorithm="shm")  # both ranks: the staging window exists
if comm.rank == 0:
    mc.allreduce(comm, np.ones(1000), algorithm="shm")  # rank 1 never comes
else:
    import time
    time.sleep(60)
"""


def test_shm_under_mpi_ends_the_job_at_the_deadline_when_a_rank_never_comes() -> None:
    result = run_mpi(SPIN_DEADLINE, 2, timeout=45, env={"MINIPAR_COMM_TIMEOUT": "2"})
    assert result.returncode != 0
    assert "CommTimeoutError: rank 0 of 2" in result.stderr, result.stderr[-2000:]
    # the first wait of an shm call: its empty message round the ring (signature.check_round_the_ring)
    assert "to exchange with rank 1" in result.stderr, result.stderr[-2000:]
    assert "during shm_allreduce" in result.stderr, result.stderr[-2000:]


STALLS_AFTER_CHECK_IN = """
import time
import numpy as np
import minipar.comm as mc
from minipar.comm import shm_pipeline

comm = mc.world()
mc.allreduce(comm, np.ones(1000), algorithm="shm")
if comm.rank == 1:  # checks in, then never announces its first round
    shm_pipeline._announce = lambda *args: time.sleep(60)
mc.allreduce(comm, np.ones(1000), algorithm="shm")
"""


def test_shm_pipelined_step_counters_end_the_job_at_the_deadline_when_a_rank_stalls_mid_call() -> None:
    result = run_mpi(STALLS_AFTER_CHECK_IN, 2, timeout=45, env={"MINIPAR_COMM_TIMEOUT": "2"})
    assert result.returncode != 0
    assert "CommTimeoutError: rank 0 of 2" in result.stderr, result.stderr[-2000:]
    assert "shared-memory step counter of rank 1" in result.stderr, result.stderr[-2000:]


MISMATCHED = """
import sys
import numpy as np
import minipar.comm as mc
from minipar.comm.shm_arrays import shared_empty

comm, case = mc.world(), sys.argv[1]
if case == "ring":  # the other rank runs a message-based collective
    mc.allreduce(comm, np.ones(1000), algorithm="shm" if comm.rank == 0 else "ring")
    print("returned", flush=True)
    sys.exit()
if case == "dtype":  # the same item size: without the check-in each would read the other's bytes
    x = np.ones(1000, dtype=np.float64 if comm.rank == 0 else np.int64)
elif case == "length":
    x = np.ones(1000 + comm.rank)
else:  # "shared": one rank's array lives in the window, the other's does not
    buf = shared_empty(comm, 1000, np.float64)  # collective: both make it
    x = buf if comm.rank == 0 else np.ones(1000)
mc.allreduce(comm, x, algorithm="shm")
print("returned", flush=True)
"""


def either_order(first: str, second: str) -> str:
    return f"{first}.*{second}|{second}.*{first}"


@pytest.mark.parametrize("case, differ", [
    ("dtype", either_order(r"float64\[1000\]", r"int64\[1000\]")),
    ("length", either_order(r"float64\[1000\]", r"float64\[1001\]")),
    ("shared", "shared=0"),
    ("ring", either_order("algorithm=shm", "algorithm=ring"))])
def test_shm_under_mpi_ranks_calling_differently_get_a_mismatch_error_naming_both(
        case: str, differ: str) -> None:
    result = run_mpi(MISMATCHED, 2, timeout=45, args=[case], env={"MINIPAR_COMM_TIMEOUT": "30"})
    assert result.returncode != 0 and "returned" not in result.stdout
    assert "CollectiveMismatchError" in result.stderr, result.stderr[-2000:]
    assert re.search(differ, result.stderr), result.stderr[-2000:]
    assert "waited" not in result.stderr  # found at the check-in, not at the deadline


def _main() -> None:
    from mpi4py import MPI

    from minipar.comm.shm import MAX_WINDOWS, free_windows, shm_core

    comm = mc.world()
    p, rank = comm.size, comm.rank
    problems: dict[str, list[str]] = {name: [] for name in (
        "bit_identical", "forms_agree", "shared_in_place", "windows_cached", "one_staging_window",
        "windows_freed")}
    lengths = (0, 1, 3, 1001, 300_007, 600_011)  # the last spans several pieces of every chunk
    for n in lengths:
        for dtype in (np.float32, np.float64, np.int64):
            xs = (np.random.default_rng(n).standard_normal((p, n)) * 100).astype(dtype)
            for op in ("sum", "max", "min") + (("mean",) if dtype != np.int64 else ()):
                shm = mc.allreduce(comm, xs[rank].copy(), op=op, algorithm="shm")
                ring = mc.allreduce(comm, xs[rank].copy(), op=op, algorithm="ring")
                if not np.array_equal(shm, ring):
                    problems["bit_identical"].append(f"{op} {np.dtype(dtype)} n={n}")
                forms = {}
                for form in ("plain", "pipelined", "pipelined"):  # twice: slots reused across calls
                    forms[form] = xs[rank].copy()
                    if n:
                        shm_core(comm, forms[form], op, form=form)
                if not (np.array_equal(forms["plain"], ring) and np.array_equal(forms["pipelined"], ring)):
                    problems["forms_agree"].append(f"{op} {np.dtype(dtype)} n={n}")
                got, same = in_place(comm, xs[rank], op)
                if not (same and np.array_equal(got, ring)):
                    problems["shared_in_place"].append(f"{op} {np.dtype(dtype)} n={n}")
    if len(comm._shm_windows) != MAX_WINDOWS:  # the plain form's 18 (size, dtype) pairs, last 4 kept
        problems["windows_cached"].append(f"{len(comm._shm_windows)} windows")
    if "_shm_stage" not in comm.__dict__:  # the pipelined form: one window for every size and dtype
        problems["one_staging_window"].append("no staging window")
    if len(comm.__dict__.get("_shm_arrays", ())) != len(lengths) * 3 * 4 - len(lengths):
        problems["shared_in_place"].append(f"{len(comm._shm_arrays)} shared arrays kept")
    free_windows(comm)
    if {"_shm_windows", "_shm_stage", "_shm_arrays"} & set(comm.__dict__):
        problems["windows_freed"].append("still cached")
    x = mc.allreduce(comm, np.full(10, rank + 1.0), algorithm="shm")  # works again after freeing
    if not np.array_equal(x, np.full(10, p * (p + 1) / 2)):
        problems["windows_freed"].append(f"after free: {x}")
    free_windows(comm)
    everything = MPI.COMM_WORLD.gather(problems, root=0)
    if rank == 0:
        for name in problems:
            found = [item for per_rank in everything for item in per_rank[name]]
            print(("OK " if not found else "FAIL ") + name + " " + "; ".join(found[:5]))


if __name__ == "__main__":
    _main()
