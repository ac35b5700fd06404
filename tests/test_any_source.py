"""Wildcard receives: ``recv(array, ANY_SOURCE, tag)`` / ``ANY_TAG`` return a Status, keep order.

The thread backend is checked here directly; the MPI backend runs the same checks in
one ``mpiexec -n 3`` launch (the ``MPI_CHECKS`` snippet), with and without a deadline.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

from minipar.comm import (
    ANY_SOURCE,
    ANY_TAG,
    CommTimeoutError,
    DeadlockError,
    Status,
    run_local,
)

pytestmark = pytest.mark.timeout(120)


def test_any_source_receives_from_every_sender_and_names_it() -> None:
    def body(comm):
        if comm.rank:
            comm.send(np.full(3, float(comm.rank)), 0, tag=5)
            return None
        got = []
        for _ in range(comm.size - 1):
            buffer = np.empty(3)
            status = comm.recv(buffer, ANY_SOURCE, tag=5)
            assert isinstance(status, Status)
            assert np.all(buffer == status.source)  # the data is the sender's
            got.append((status.source, status.tag, status.nbytes))
        return sorted(got)

    assert run_local(body, 4)[0] == [(1, 5, 24), (2, 5, 24), (3, 5, 24)]


def test_any_source_keeps_each_senders_order() -> None:
    def body(comm):
        if comm.rank:
            for index in range(6):
                comm.send(np.array([comm.rank, index]), 0, tag=1)
            return None
        seen: dict[int, list[int]] = {1: [], 2: []}
        buffer = np.empty(2, dtype=np.int64)
        for _ in range(12):
            status = comm.recv(buffer, ANY_SOURCE, 1)
            assert buffer[0] == status.source
            seen[status.source].append(int(buffer[1]))
        return seen

    assert run_local(body, 3)[0] == {1: list(range(6)), 2: list(range(6))}


def test_any_tag_takes_one_senders_messages_in_the_order_sent() -> None:
    def body(comm):
        if comm.rank == 1:
            for tag in (3, 1, 2):
                comm.send(np.array([tag]), 0, tag=tag)
            return None
        buffer = np.empty(1, dtype=np.int64)
        tags = []
        for _ in range(3):
            status = comm.recv(buffer, 1, ANY_TAG)
            assert buffer[0] == status.tag and status.source == 1
            tags.append(status.tag)
        return tags

    assert run_local(body, 2)[0] == [3, 1, 2]


def test_recv_with_a_specific_source_and_tag_still_returns_the_array() -> None:
    def body(comm):
        if comm.rank:
            comm.send(np.arange(4.0), 0)
            return None
        buffer = np.empty(4)
        return comm.recv(buffer, 1) is buffer

    assert run_local(body, 2)[0] is True


def test_a_wildcard_recv_leaves_the_message_an_earlier_irecv_claimed() -> None:
    def body(comm):
        if comm.rank:
            comm.send(np.array([10.0]), 0)
            comm.send(np.array([20.0]), 0)
            return None
        first, second = np.empty(1), np.empty(1)
        request = comm.irecv(first, 1)  # posted first: it owns the first message
        comm.recv(second, ANY_SOURCE, ANY_TAG)
        request.wait()
        return float(first[0]), float(second[0])

    assert run_local(body, 2)[0] == (10.0, 20.0)


def test_wildcard_recv_raises_on_size_mismatch_naming_both() -> None:
    def body(comm):
        if comm.rank:
            comm.send(np.zeros(5), 0)
            return None
        comm.recv(np.empty(4), ANY_SOURCE, 0)

    with pytest.raises(ValueError, match="shape \\(5,\\).*shape \\(4,\\)"):
        run_local(body, 2)


@pytest.mark.parametrize("source", [-2, 3, 1.5])
def test_wildcard_tag_with_a_bad_source_raises_value_error(source) -> None:
    def body(comm):
        comm.recv(np.empty(1), source, ANY_TAG)

    with pytest.raises(ValueError, match="source must be a rank in \\[0, 2\\)"):
        run_local(body, 2)


def test_wildcard_recv_passes_its_deadline_with_a_timeout_error() -> None:
    def body(comm):
        if comm.rank:
            time.sleep(1.0)  # alive, but sends nothing
            return None
        comm.recv(np.empty(1), ANY_SOURCE, 0)

    with pytest.raises(CommTimeoutError, match="rank 0 of 2 waited"):
        run_local(body, 2, timeout=0.3)


def test_wildcard_recv_raises_deadlock_once_every_other_rank_has_finished() -> None:
    def body(comm):
        if comm.rank == 0:
            comm.recv(np.empty(1), ANY_SOURCE, 0)

    with pytest.raises(DeadlockError, match="every other rank has finished"):
        run_local(body, 3, timeout=30)


MPI_CHECKS = """
import numpy as np
from minipar.comm import ANY_SOURCE, ANY_TAG, world
comm = world()
if comm.rank:
    for index in range(4):
        comm.send(np.array([comm.rank, index]), 0, tag=7)
    for tag in (3, 1, 2):
        comm.send(np.array([comm.rank, tag]), 0, tag=100 + tag)
else:
    seen = {1: [], 2: []}
    buffer = np.empty(2, dtype=np.int64)
    for _ in range(8):
        status = comm.recv(buffer, ANY_SOURCE, 7)
        assert buffer[0] == status.source and status.tag == 7 and status.nbytes == 16, status
        seen[status.source].append(int(buffer[1]))
    assert seen == {1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}, seen
    for sender in (1, 2):
        tags = [comm.recv(buffer, sender, ANY_TAG).tag for _ in range(3)]
        assert tags == [103, 101, 102], tags
    print("OK wildcards", flush=True)
"""


@requires_mpi
@pytest.mark.parametrize("deadline", ["", "30"], ids=["blocking", "polled"])
def test_mpi_wildcard_recv_matches_any_sender_and_keeps_order(deadline: str) -> None:
    result = run_mpi(MPI_CHECKS, n=3, timeout=60, env={"MINIPAR_COMM_TIMEOUT": deadline})
    assert "OK wildcards" in assert_ok(result)
