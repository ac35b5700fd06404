"""The message log, the one event stream: what it records, who reads it, and the two ring forms."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpirun import REPO

import minipar.comm as mc
from minipar.comm import ring
from minipar.comm.communicator import TAG_COLLECTIVE

pytestmark = pytest.mark.timeout(120)


def chunk_sizes(n: int, p: int) -> list[int]:
    return [len(part) for part in np.array_split(np.arange(n), p)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 400), p=st.integers(1, 5), op=st.sampled_from(["sum", "mean", "max", "min"]),
       slab_bytes=st.integers(8, 300))
def test_one_pass_and_slabbed_ring_give_bit_identical_results(n: int, p: int, op: str,
                                                              slab_bytes: int) -> None:
    def body(comm: mc.Communicator) -> tuple[bytes, bytes]:
        x = np.random.default_rng(comm.rank).standard_normal(n).astype(np.float32)
        y = x.copy()
        mc.ring_allreduce(comm, x, op=op, slabs=False)
        mc.ring_allreduce(comm, y, op=op, slabs=True)
        return x.tobytes(), y.tobytes()

    saved, ring.SLAB_BYTES = ring.SLAB_BYTES, slab_bytes  # several slabs even for small n
    try:
        results = mc.run_local(body, p)
    finally:
        ring.SLAB_BYTES = saved
    for one_pass, slabbed in results:
        assert one_pass == slabbed
    assert all(result == results[0] for result in results)  # and the same bits on every rank


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_one_pass_ring_matches_the_closed_form_sum_for_awkward_lengths(p: int) -> None:
    def body(comm: mc.Communicator) -> None:
        for n in [0, 1, max(p - 1, 1), p, p + 1, 1003]:
            for dtype in [np.float64, np.int64]:
                x = np.arange(n, dtype=dtype) * (comm.rank + 1)
                assert mc.ring_allreduce(comm, x, slabs=False) is x
                np.testing.assert_array_equal(x, np.arange(n) * (p * (p + 1) // 2))

    mc.run_local(body, p)


def test_readable_ring_log_at_p4_has_2_p_minus_1_messages_and_2_p_minus_1_over_p_n_bytes() -> None:
    p, n = 4, 100_003  # float64: chunks of 25,001 and 25,000 elements
    sizes = chunk_sizes(n, p)

    def body(comm: mc.Communicator) -> list[mc.Message]:
        with mc.message_log(comm) as log:
            mc.ring_allreduce(comm, np.ones(n), slabs=False)
        return log

    for rank, log in enumerate(mc.run_local(body, p)):
        assert len(log) == 2 * (p - 1)
        assert all((m.source, m.dest, m.tag) == (rank, (rank + 1) % p, TAG_COLLECTIVE) for m in log)
        assert all(m.collective == "ring_allreduce" for m in log)
        assert [m.step for m in log] == (
            [f"reduce-scatter step {s}/{p - 1}" for s in range(1, p)]
            + [f"all-gather step {s}/{p - 1}" for s in range(1, p)])
        total = sum(m.nbytes for m in log)
        assert abs(total - 2 * (p - 1) / p * 8 * n) <= 8 * max(sizes)  # within one chunk
        assert total == 8 * (2 * n - sizes[rank] - sizes[(rank + 1) % p])  # and exactly


def test_slabbed_ring_log_at_p4_has_k_times_the_messages_and_the_same_bytes() -> None:
    p, n, slab_bytes = 4, 100_003, 64 * 1024
    sizes = chunk_sizes(n, p)
    k = -(-8 * max(sizes) // slab_bytes)  # slabs: the largest chunk over SLAB_BYTES, rounded up
    assert k > 1

    def body(comm: mc.Communicator) -> tuple[list[mc.Message], list[mc.Message]]:
        with mc.message_log(comm) as slabbed:
            mc.ring_allreduce(comm, np.ones(n), slabs=True)
        with mc.message_log(comm) as one_pass:
            mc.ring_allreduce(comm, np.ones(n), slabs=False)
        return slabbed, one_pass

    saved, ring.SLAB_BYTES = ring.SLAB_BYTES, slab_bytes
    try:
        results = mc.run_local(body, p)
    finally:
        ring.SLAB_BYTES = saved
    for slabbed, one_pass in results:
        assert len(slabbed) == 2 * (p - 1) * k
        assert sum(m.nbytes for m in slabbed) == sum(m.nbytes for m in one_pass)
        assert slabbed[0].step == f"slab 1/{k} reduce-scatter step 1/{p - 1}"


def test_counters_and_log_read_the_same_stream_for_every_kind_of_send() -> None:
    def body(comm: mc.Communicator) -> tuple[list[mc.Message], int, int]:
        other = 1 - comm.rank
        comm.reset_counters()
        with mc.message_log(comm) as log:
            comm.sendrecv(np.zeros(3), other, np.empty(3), other, sendtag=5, recvtag=5)
            requests = [comm.irecv(np.empty(2, np.int32), other, 7),
                        comm.isend(np.zeros(2, np.int32), other, 7)]
            for request in requests:
                request.wait()
            if comm.rank == 0:
                comm.send(np.zeros(10, np.uint8), 1, tag=9)
            else:
                comm.recv(np.empty(10, np.uint8), 0, tag=9)
            mc.allreduce(comm, np.ones(1000, np.float32), algorithm="tree")
        return log, comm.bytes_sent, comm.messages_sent

    (log0, bytes0, count0), (log1, bytes1, count1) = mc.run_local(body, 2)
    assert [(m.dest, m.nbytes, m.tag, m.collective) for m in log0] == [
        (1, 24, 5, None), (1, 8, 7, None), (1, 10, 9, None),
        (1, 4000, TAG_COLLECTIVE, "tree_allreduce")]  # rank 0 sends the broadcast down
    assert [(m.dest, m.nbytes, m.tag) for m in log1] == [
        (0, 24, 5), (0, 8, 7), (0, 4000, TAG_COLLECTIVE)]
    assert (bytes0, count0) == (sum(m.nbytes for m in log0), len(log0))
    assert (bytes1, count1) == (sum(m.nbytes for m in log1), len(log1))


def test_log_records_only_its_own_communicator_and_only_inside_the_block() -> None:
    def body(comm: mc.Communicator) -> tuple[int, int]:
        sub = comm.split(comm.rank % 2)
        mc.ring_allreduce(comm, np.ones(10))  # before the block: not recorded
        with mc.message_log(sub) as sub_log:
            mc.ring_allreduce(comm, np.ones(10))  # on the parent: not in sub's log
            with mc.message_log(comm) as log:
                mc.ring_allreduce(sub, np.ones(10))
                mc.ring_allreduce(comm, np.ones(10))
        mc.ring_allreduce(comm, np.ones(10))  # after: not recorded
        return len(sub_log), len(log)

    # sub has 2 ranks: 2(2-1) messages; comm has 4: 2(4-1)
    assert mc.run_local(body, 4) == [(2, 6)] * 4
    assert mc.events.message_listeners == []


def test_verbose_prints_each_message_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def body(comm: mc.Communicator) -> None:
        with mc.message_log(comm, verbose=comm.rank == 2):
            mc.ring_allreduce(comm, np.ones(4 * 131072, np.float32), slabs=False)

    mc.run_local(body, 4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "rank 2 -> rank 3  524,288 B  ring_allreduce reduce-scatter step 2/3"
    assert len(lines) == 6


def test_minipar_verbose_1_turns_printing_on(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINIPAR_VERBOSE", "1")

    def body(comm: mc.Communicator) -> None:
        with mc.message_log(comm):
            mc.allreduce(comm, np.ones(6), algorithm="ring")

    mc.run_local(body, 2)
    out = capsys.readouterr().out.splitlines()
    assert sorted(out)[0] == "rank 0 -> rank 1  24 B  ring_allreduce all-gather step 1/1"
    assert len(out) == 4


def test_gather_to_root_returns_every_ranks_bytes_in_rank_order_on_the_root_only() -> None:
    def body(comm: mc.Communicator) -> list[bytes] | None:
        payload = bytes([comm.rank]) * (comm.rank * 3)  # lengths 0, 3, 6: rank 0's empty
        if comm.rank == 1:
            payload = np.frombuffer(payload, dtype=np.uint8).copy()  # a uint8 array works too
        return mc.gather_to_root(comm, payload, root=1)

    results = mc.run_local(body, 3)
    assert results[0] is None and results[2] is None
    assert results[1] == [b"", b"\x01" * 3, b"\x02" * 6]


def test_gather_to_root_rejects_other_payloads_and_roots() -> None:
    comm = mc.run_local(lambda c: c, 1)[0]
    with pytest.raises(TypeError, match="bytes or a uint8"):
        mc.gather_to_root(comm, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="root must be a rank"):
        mc.gather_to_root(comm, b"x", root=1)
    assert mc.gather_to_root(comm, b"abc") == [b"abc"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_comm_imports_neither_observe_nor_itself_in_a_cycle() -> None:
    folder = REPO / "minipar" / "comm"
    graph = {f"minipar.comm.{path.stem}": {name for name in _imports(path)
                                           if name.startswith("minipar.comm.")}
             for path in folder.glob("*.py") if path.stem != "__init__"}
    for path in folder.glob("*.py"):
        assert not any(name.startswith("minipar.observe") for name in _imports(path)), path.name

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for name in graph.get(start, ()):
            if name == goal or (name not in seen and reaches(name, goal, seen | {name})):
                return True
        return False

    cycles = [module for module in graph if reaches(module, module, set())]
    assert cycles == []
    # and importing minipar.comm loads no observe module
    code = "import sys, minipar.comm; print([m for m in sys.modules if 'observe' in m])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("length, p, slab_bytes", [(10, 3, 2 << 20), (1000, 4, 64), (7, 2, 8), (5, 4, 8)])
def test_slab_bounds_cut_every_chunk_as_array_split_does(length: int, p: int, slab_bytes: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One slab (the chunks themselves, the shortcut) or K: piece k of chunk c is array_split's."""
    from minipar.comm import ring

    monkeypatch.setattr(ring, "SLAB_BYTES", slab_bytes)
    chunks = np.array_split(np.arange(length), p)
    count = max(1, -(-chunks[0].size * 8 // slab_bytes))
    pieces = ring.slab_bounds(ring.chunk_bounds(length, p), 8)
    assert len(pieces) == count
    for k, (starts, ends) in enumerate(pieces):
        for c, chunk in enumerate(chunks):
            piece = np.array_split(chunk, count)[k]
            assert ends[c] - starts[c] == piece.size
            if piece.size:
                assert (starts[c], ends[c]) == (piece[0], piece[-1] + 1)
