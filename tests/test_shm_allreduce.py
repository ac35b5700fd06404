"""allreduce(..., algorithm="shm"): shared memory on one host, bit-identical to the ring, no messages.

Thread ranks read each other's arrays; MPI ranks share an MPI-3 window, in two
forms (``shm.py``'s plain one and ``shm_pipeline.py``'s pieces) that must agree
with the ring and with each other. The MPI checks run this file under mpiexec
(``__main__`` prints ``OK <check>`` lines):

    mpiexec -n 3 python -m mpi4py tests/test_shm_allreduce.py
"""

from __future__ import annotations

import numpy as np
import pytest
from mpirun import assert_ok, run_mpi

import minipar.comm as mc

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


@pytest.mark.parametrize("p", [2, 3])
def test_shm_allreduce_under_mpi_both_forms_are_bit_identical_to_the_ring_and_cache_windows(p: int) -> None:
    out = assert_ok(run_mpi(__file__, p, timeout=120))
    for name in ("bit_identical", "forms_agree", "windows_cached", "one_staging_window",
                 "windows_freed"):
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
    assert "shared-memory step counter of rank 1" in result.stderr, result.stderr[-2000:]


def _main() -> None:
    from mpi4py import MPI

    from minipar.comm.shm import MAX_WINDOWS, free_windows, shm_core

    comm = mc.world()
    p, rank = comm.size, comm.rank
    problems: dict[str, list[str]] = {name: [] for name in (
        "bit_identical", "forms_agree", "windows_cached", "one_staging_window", "windows_freed")}
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
    if len(comm._shm_windows) != MAX_WINDOWS:  # the plain form's 18 (size, dtype) pairs, last 4 kept
        problems["windows_cached"].append(f"{len(comm._shm_windows)} windows")
    if "_shm_stage" not in comm.__dict__:  # the pipelined form: one window for every size and dtype
        problems["one_staging_window"].append("no staging window")
    free_windows(comm)
    if "_shm_windows" in comm.__dict__ or "_shm_stage" in comm.__dict__:
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
