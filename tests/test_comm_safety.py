"""Fail loudly, never hang: aborts, deadlines, fingerprints and bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mpirun import requires_mpi, run_mpi

import minipar.comm as mc

# ----- thread backend -----------------------------------------------------------------------


def test_an_exception_on_one_rank_is_reraised_and_wakes_the_ranks_waiting_for_it() -> None:
    def body(comm: mc.Communicator) -> None:
        if comm.rank == 2:
            raise KeyError("boom on rank 2")
        comm.recv(np.empty(1), 2)  # would wait forever without the abort

    start = time.monotonic()
    with pytest.raises(KeyError, match="boom on rank 2") as caught:
        mc.run_local(body, 4)
    assert time.monotonic() - start < 30  # generous: the point is "not a hang"
    assert any("rank 2 of 4" in note for note in getattr(caught.value, "__notes__", ["rank 2 of 4"]))


def test_ranks_that_all_wait_for_each_other_raise_deadlock_error_at_once() -> None:
    def body(comm: mc.Communicator) -> None:
        comm.recv(np.empty(1), 1 - comm.rank)  # both receive first: a classic deadlock

    with pytest.raises(mc.DeadlockError, match="rank 0 waits for rank 1"):
        mc.run_local(body, 2, timeout=60)


def test_waiting_for_a_rank_that_already_returned_is_a_deadlock() -> None:
    def body(comm: mc.Communicator) -> None:
        if comm.rank == 0:
            comm.recv(np.empty(1), 1, tag=7)

    with pytest.raises(mc.DeadlockError, match="tag 7"):
        mc.run_local(body, 2)


def test_a_wait_past_the_deadline_names_rank_peer_tag_and_collective() -> None:
    def body(comm: mc.Communicator) -> None:
        if comm.rank == 1:
            time.sleep(1.0)  # busy elsewhere (not waiting, so not a deadlock)
            return
        mc.ring_allreduce(comm, np.ones(10))

    with pytest.raises(mc.CommTimeoutError) as caught:
        mc.run_local(body, 2, timeout=0.2)
    message = str(caught.value)
    for fragment in ["rank 0", "rank 1", "tag", "ring_allreduce", "MINIPAR_COMM_TIMEOUT"]:
        assert fragment in message


def test_debug_mode_catches_ranks_calling_different_collectives() -> None:
    def body(comm: mc.Communicator) -> None:
        x = np.ones(10, dtype=np.float32)
        if comm.rank == 0:
            mc.allreduce(comm, x)
        else:
            mc.broadcast(comm, x)

    with pytest.raises(mc.CollectiveMismatchError) as caught:
        mc.run_local(body, 2, debug=True)
    message = str(caught.value)
    assert "rank 0 called allreduce(op=sum, dtype=float32, length=10" in message
    assert "rank 1 called broadcast(dtype=float32, length=10, root=0)" in message


def test_debug_mode_catches_different_lengths_and_passes_matching_calls() -> None:
    def body(comm: mc.Communicator) -> None:
        mc.allreduce(comm, np.ones(4))  # the same on both ranks: passes
        mc.allreduce(comm, np.ones(4 + comm.rank))

    with pytest.raises(mc.CollectiveMismatchError, match="length=5"):
        mc.run_local(body, 2, debug=True)


def test_debug_fingerprints_do_not_change_the_counters() -> None:
    def body(comm: mc.Communicator) -> int:
        mc.ring_allreduce(comm, np.ones(8))
        return comm.bytes_sent

    assert mc.run_local(body, 2, debug=True) == mc.run_local(body, 2) == [64, 64]


# ----- bad input ------------------------------------------------------------------------------
def _first_error(body) -> BaseException:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError)) as caught:
        mc.run_local(body, 2)
    return caught.value


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda c: mc.ring_allreduce(c, np.ones((4, 4))[:, 0]), ValueError, "C-contiguous"),
        (lambda c: mc.ring_allreduce(c, [1.0, 2.0]), TypeError, "got list"),
        (lambda c: mc.allreduce(c, np.ones(3), op="prod"), ValueError, "op must be one of"),
        (lambda c: mc.allreduce(c, np.ones(3), algorithm="magic"), ValueError, "algorithm"),
        (lambda c: mc.broadcast(c, np.ones(3), root=2), ValueError, "root must be a rank in [0, 2)"),
        (lambda c: mc.allreduce(c, np.ones(3, dtype=np.int64), op="mean"), TypeError, "int64"),
        (lambda c: mc.ring_allreduce(np.ones(3), c), TypeError, "Communicator"),
        (lambda c: c.send(np.ones(3), dest=5), ValueError, "dest must be a rank in [0, 2)"),
        (lambda c: c.send(np.ones(3), dest=0, tag=-1), ValueError, "tag"),
    ],
)
def test_bad_arguments_raise_saying_what_was_expected(call, error, fragment) -> None:  # type: ignore[no-untyped-def]
    caught = _first_error(call)
    assert isinstance(caught, error)
    assert fragment in str(caught)


def test_read_only_arrays_are_rejected_by_in_place_collectives() -> None:
    x = np.ones(3)
    x.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        mc.run_local(lambda comm: mc.ring_allreduce(comm, x), 2)


def test_recv_with_the_wrong_dtype_or_size_names_both() -> None:
    def body(comm: mc.Communicator) -> None:
        if comm.rank == 0:
            comm.send(np.ones(3, dtype=np.float32), 1)
        else:
            comm.recv(np.empty(3, dtype=np.float64), 0)

    with pytest.raises(ValueError, match="float32 array of shape \\(3,\\) into a buffer of dtype "
                                         "float64"):
        mc.run_local(body, 2)


# ----- under mpiexec --------------------------------------------------------------------------
@requires_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["main_thread", "background_thread"])
def test_an_exception_on_one_rank_ends_every_rank_fast_even_under_plain_python(how: str) -> None:
    # started as `python script.py`, not `python -m mpi4py`: minipar's hook must abort
    code = f"""
        import threading, time
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        if comm.rank == 1:
            if "{how}" == "main_thread":
                raise RuntimeError("boom on purpose")
            def fail():
                raise RuntimeError("boom on purpose")
            threading.Thread(target=fail).start()
            time.sleep(60)
        comm.recv(np.empty(1), 1)   # rank 0 would wait forever
    """
    start = time.monotonic()
    result = run_mpi(code, 2, timeout=60, module=False)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "boom on purpose" in result.stderr and "rank 1 of 2" in result.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s: the abort did not end the job"


@requires_mpi
@pytest.mark.timeout(120)
def test_an_exception_before_world_is_called_still_aborts_the_job() -> None:
    code = """
        import os
        import numpy as np
        import minipar.comm as mc
        if os.environ["PMI_RANK"] == "1":
            raise ValueError("failed before MPI started")
        mc.world().recv(np.empty(1), 1)
    """
    start = time.monotonic()
    result = run_mpi(code, 2, timeout=60, module=False)
    assert result.returncode != 0 and "failed before MPI started" in result.stderr
    assert time.monotonic() - start < 15


@requires_mpi
@pytest.mark.timeout(120)
def test_mpi_timeout_names_rank_peer_tag_and_collective() -> None:
    code = """
        import time
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        if comm.rank == 1:
            time.sleep(60)  # never joins the all-reduce
        mc.ring_allreduce(comm, np.ones(10))
    """
    start = time.monotonic()
    result = run_mpi(code, 2, timeout=60, env={"MINIPAR_COMM_TIMEOUT": "1"}, module=False)
    assert result.returncode != 0
    assert "CommTimeoutError" in result.stderr
    for fragment in ["rank 0 of 2", "rank 1 (tag", "during ring_allreduce"]:
        assert fragment in result.stderr, result.stderr
    assert time.monotonic() - start < 20


@requires_mpi
@pytest.mark.timeout(120)
def test_mpi_debug_mode_reports_a_collective_mismatch_within_10_seconds() -> None:
    code = """
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        x = np.ones(10, dtype=np.float32)
        if comm.rank == 0:
            mc.allreduce(comm, x)
        else:
            mc.broadcast(comm, x)
    """
    start = time.monotonic()
    result = run_mpi(code, 2, timeout=60, env={"MINIPAR_DEBUG": "1"})
    assert result.returncode != 0
    assert "CollectiveMismatchError" in result.stderr
    assert "rank 0 called allreduce" in result.stderr
    assert "rank 1 called broadcast" in result.stderr
    assert time.monotonic() - start < 10 + 5  # 10 s budget, plus launching MPI
