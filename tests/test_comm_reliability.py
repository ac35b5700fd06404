"""Never silent, never hanging: mismatched calls, ranks that leave, deadlines, MPI errors (issue 13).

Every test here reproduces a defect of issue 13 (D2, D5, D7, D9) and fails on the code before it.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mpirun import requires_mpi, run_mpi

import minipar.comm as mc
from minipar.cli.run import launch_command
from minipar.comm import safety
from minipar.comm.errors import timeout_from_env


# ----- D7: mismatched calls raise, naming what each rank called (no MINIPAR_DEBUG) ------------
def _mismatch(body) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(mc.CollectiveMismatchError) as caught:
        mc.run_local(body, 2, debug=False, timeout=30)
    return str(caught.value)


def test_allreduce_with_int64_on_one_rank_and_float64_on_the_other_names_both_calls() -> None:
    def body(comm: mc.Communicator) -> None:
        mc.allreduce(comm, np.ones(1000, dtype=np.float64 if comm.rank == 0 else np.int64))

    message = _mismatch(body)
    assert "rank 0 called allreduce(float64[1000], op=sum" in message
    assert "rank 1 called allreduce(int64[1000], op=sum" in message


def test_allreduce_with_sum_on_one_rank_and_max_on_the_other_names_both_ops() -> None:
    message = _mismatch(lambda comm: mc.allreduce(comm, np.ones(8), op="sum" if comm.rank == 0 else "max"))
    assert "op=sum" in message and "op=max" in message


def test_broadcast_from_different_roots_raises_instead_of_passing() -> None:
    message = _mismatch(lambda comm: mc.broadcast(comm, np.ones(4), root=comm.rank))
    assert "root=0" in message and "root=1" in message


def test_different_lengths_are_a_mismatch_naming_both_lengths() -> None:
    message = _mismatch(lambda comm: mc.allreduce(comm, np.ones(6 + comm.rank), algorithm="tree"))
    assert "float64[6]" in message and "float64[7]" in message


def test_different_collectives_at_once_are_a_mismatch() -> None:
    def body(comm: mc.Communicator) -> None:
        x = np.ones(10, dtype=np.float32)
        mc.allreduce(comm, x) if comm.rank == 0 else mc.broadcast(comm, x)

    message = _mismatch(body)
    assert "called allreduce(float32[10]" in message and "called broadcast(float32[10]" in message


def test_matching_calls_pass_and_send_exactly_the_counted_bytes() -> None:
    def body(comm: mc.Communicator) -> tuple[float, int, int]:
        x = np.ones(8)
        mc.ring_allreduce(comm, x)
        mc.broadcast(comm, x, root=1)
        return float(x[0]), comm.bytes_sent, comm.messages_sent

    # ring: 2N - c_r - c_(r+1) elements (chunks 3, 3, 2); broadcast: the root sends 2 copies
    assert mc.run_local(body, 3) == [(3.0, 80, 4), (3.0, 88 + 128, 6), (3.0, 88, 4)]


def test_every_call_has_a_tag_of_its_own_the_same_on_every_rank() -> None:
    """signature.py: the tag carries the call's shape and number, so no call's message fits another's."""
    from minipar.comm import signature

    def body(comm: mc.Communicator) -> list[int]:
        tags = []
        for step in range(64):
            x = np.ones(4 if step % 2 else 5)
            with safety.Collective(comm, "allreduce", "sum", x.dtype, x.size, "algorithm=ring"):
                tags.append(signature.current_call(comm).tag)
        return tags

    per_rank = mc.run_local(body, 3)
    assert per_rank[0] == per_rank[1] == per_rank[2]  # every rank computes the same tags
    assert len(set(per_rank[0])) == 64  # consecutive calls, same shapes: all different
    assert all(signature.is_signed(tag) and tag > mc.USER_TAG_LIMIT for tag in per_rank[0])


def test_a_small_mpi_tag_space_still_holds_the_collectives_tags() -> None:
    from minipar.comm import signature

    saved = signature.SIGNED_BASE, signature.SIGNED_TAGS
    try:
        signature.fit_tags(32767)  # all the MPI standard promises
        assert signature.SIGNED_BASE > mc.USER_TAG_LIMIT
        assert signature.SIGNED_BASE + signature.SIGNED_TAGS - 1 == 32767
        with pytest.raises(RuntimeError, match="MPI_TAG_UB is 30000"):
            signature.fit_tags(30000)
    finally:
        signature.SIGNED_BASE, signature.SIGNED_TAGS = saved


def test_the_thread_ranks_mailboxes_do_not_grow_with_the_number_of_calls() -> None:
    def body(comm: mc.Communicator) -> int:
        for _ in range(300):
            mc.allreduce(comm, np.ones(8))
        comm.barrier()
        return len(comm.world.mailboxes)

    assert max(mc.run_local(body, 3)) < 20  # one tag per call, spent boxes dropped


def test_a_users_messages_are_never_taken_by_a_collective() -> None:
    def body(comm: mc.Communicator) -> float:
        mine = np.full(8, 7.0)
        if comm.rank == 0:
            comm.send(mine, 1, tag=0)  # the user's message, sent before the collective
        x = np.ones(8)
        mc.allreduce(comm, x)
        if comm.rank == 1:
            comm.recv(mine, 0, tag=0)
        return float(x[0] + mine[0])

    assert mc.run_local(body, 2) == [9.0, 9.0]


def test_tags_at_or_above_the_user_limit_are_rejected() -> None:
    def body(comm: mc.Communicator) -> None:
        comm.send(np.ones(1), 1 - comm.rank, tag=mc.USER_TAG_LIMIT)

    with pytest.raises(ValueError, match=f"tag must be in \\[0, {mc.USER_TAG_LIMIT}\\)"):
        mc.run_local(body, 2)


# ----- D9: deadlines from the environment and the command line; run_local's size -------------
@pytest.mark.parametrize("text", ["inf", "0", "none"])
def test_comm_timeout_inf_or_0_means_no_deadline(monkeypatch, text: str) -> None:
    monkeypatch.setenv("MINIPAR_COMM_TIMEOUT", text)
    assert timeout_from_env(600.0) is None
    assert mc.run_local(lambda comm: float(mc.allreduce(comm, np.ones(2))[0]), 2) == [2.0, 2.0]


@pytest.mark.parametrize("text", ["-5", "nan", "soon"])
def test_comm_timeout_negative_or_not_a_number_is_rejected(monkeypatch, text: str) -> None:
    monkeypatch.setenv("MINIPAR_COMM_TIMEOUT", text)
    with pytest.raises(ValueError, match="MINIPAR_COMM_TIMEOUT"):
        timeout_from_env(600.0)


def test_minipar_run_timeout_inf_means_no_mpiexec_deadline(monkeypatch) -> None:
    monkeypatch.delenv("MPIEXEC_TIMEOUT", raising=False)
    _, env = launch_command(Path("x.py"), 2, [], timeout=float("inf"))
    assert "MPIEXEC_TIMEOUT" not in env


def test_minipar_run_negative_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="timeout"):
        launch_command(Path("x.py"), 2, [], timeout=-5)


@pytest.mark.parametrize("size", [True, 2.0, "2"])
def test_run_local_rejects_a_world_size_that_is_not_an_int(size: object) -> None:
    with pytest.raises(TypeError, match="world_size"):
        mc.run_local(lambda comm: None, size)  # type: ignore[arg-type]


# ----- under mpiexec ------------------------------------------------------------------------
WAIT_FOR_RANK_1 = """
    import sys, os, time
    import numpy as np
    import minipar.comm as mc
    comm = mc.world()
    mc.allreduce(comm, np.ones(4))          # everyone is in
    if comm.rank == 1:
        {leave}
    start = time.monotonic()
    mc.allreduce(comm, np.ones(4))          # ranks 0 and 2 wait on rank 1 forever
    print("NOT REACHED", flush=True)
"""


@requires_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("leave, module", [
    ("sys.exit(3)", False), ("sys.exit(3)", True), ("sys.exit(0)", False), ("sys.exit(0)", True),
    ("os._exit(0)", False), ("pass  # the script just ends", False),
])
def test_a_rank_that_leaves_while_others_wait_on_it_ends_the_job_naming_it(leave: str,
                                                                           module: bool) -> None:
    code = WAIT_FOR_RANK_1.format(leave=leave)
    if leave.startswith("pass"):  # rank 1's script ends; the others still call a collective
        code = code.replace("print(", "if comm.rank != 1:\n        mc.allreduce(comm, np.ones(4))\n"
                                      "        print(")
    start = time.monotonic()
    result = run_mpi(code, 3, timeout=60, module=module)
    elapsed = time.monotonic() - start
    print(f"{leave} (module={module}): job ended after {elapsed:.1f} s, exit {result.returncode}")
    assert "NOT REACHED" not in result.stdout
    if not leave.startswith("os._exit"):  # without atexit only MPICH itself can tell (exit 0)
        assert result.returncode != 0
        assert "rank 1" in result.stderr, result.stderr[-3000:]
        if not (module and leave == "sys.exit(3)"):  # there mpi4py itself aborts, naming rank 1
            assert "rank 1 left the job" in result.stderr, result.stderr[-3000:]
    assert elapsed < 40, f"took {elapsed:.1f} s: not ended by the departure"


@requires_mpi
@pytest.mark.timeout(120)
def test_ranks_that_finish_at_different_times_are_not_an_error() -> None:
    code = """
        import time
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        x = mc.allreduce(comm, np.ones(4))
        if comm.rank == 0:
            time.sleep(4)   # longer than the departure grace: rank 1 has long left
            comm.recv(x, 1, tag=3)   # ... but its message is already here
        elif comm.rank == 1:
            comm.send(x * 2, 0, tag=3)
        print(f"DONE {comm.rank} {x[0]}", flush=True)  # one write: lines of ranks interleave
    """
    out = run_mpi(code, 3, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(re.findall(r"DONE \d \d\.\d", out.stdout)) == ["DONE 0 6.0", "DONE 1 3.0",
                                                                "DONE 2 3.0"]


@requires_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("algorithm", ["ring", "recursive_doubling"])
def test_mpi_dtype_mismatch_raises_naming_both_calls_without_debug(algorithm: str) -> None:
    code = f"""
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        x = np.ones(1000, dtype=np.float64 if comm.rank == 0 else np.int64)
        mc.allreduce(comm, x, algorithm="{algorithm}")
        print("NOT REACHED", x[:2], flush=True)
    """
    start = time.monotonic()
    result = run_mpi(code, 3, timeout=60)
    print(f"dtype mismatch ({algorithm}, p=3): job ended after {time.monotonic() - start:.1f} s")
    assert result.returncode != 0 and "NOT REACHED" not in result.stdout
    assert "CollectiveMismatchError" in result.stderr
    assert "called allreduce(float64[1000], op=sum" in result.stderr
    assert "called allreduce(int64[1000], op=sum" in result.stderr


@requires_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("deadline", [None, "5"])
def test_mpi_wait_errors_are_comm_errors_naming_peer_tag_and_sizes(deadline: str | None) -> None:
    code = """
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        if comm.rank == 0:
            comm.send(np.ones(4), 1, tag=5)
            comm.send(np.ones(4), 1, tag=6)
            comm.recv(np.empty(1), 1, tag=7)
        else:
            for call in (lambda: comm.irecv(np.empty(2), 0, tag=5).wait(),
                         lambda: comm.sendrecv(np.ones(1), 0, np.empty(2), 0, 7, 6)):
                try:
                    call()
                except mc.CommError as error:
                    print("CAUGHT", type(error).__name__, error, flush=True)
    """
    env = {} if deadline is None else {"MINIPAR_COMM_TIMEOUT": deadline}
    out = run_mpi(code, 2, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    caught = [line for line in out.stdout.splitlines() if line.startswith("CAUGHT")]
    assert len(caught) == 2, out.stdout
    for line, tag in zip(caught, (5, 6)):
        assert "MessageSizeError" in line and "rank 0" in line and f"tag {tag}" in line
        assert "16-byte receive buffer" in line


@requires_mpi
@pytest.mark.timeout(60)
def test_an_mpi_error_that_is_not_a_truncation_is_not_called_one() -> None:
    code = """
        from mpi4py import MPI
        import minipar.comm as mc
        comm = mc.world()
        error = comm._mpi_error(MPI.Exception(MPI.ERR_OTHER), "receive from", 0, 9, 64)
        print(type(error).__name__, isinstance(error, mc.CommError), "|", error, flush=True)
    """
    out = run_mpi(code, 1, timeout=30)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PeerError True" in out.stdout and "larger than" not in out.stdout
    assert "rank 0" in out.stdout and "tag 9" in out.stdout and "64 bytes" in out.stdout


@requires_mpi
@pytest.mark.timeout(60)
def test_mpi_waits_have_a_600_second_deadline_by_default() -> None:
    code = ("import minipar.comm as mc\nfrom mpi4py import MPI\n"
            "deadlines = MPI.COMM_WORLD.gather(mc.world().timeout, root=0)\n"
            "if MPI.COMM_WORLD.rank == 0:\n    print('DEADLINES', deadlines)\n")  # one printer
    out = run_mpi(code, 2, timeout=30)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DEADLINES [600.0, 600.0]" in out.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
