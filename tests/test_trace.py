"""minipar.observe.trace records spans per rank and writes one Chrome trace; observe.plot reads it back."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

from minipar.comm import allreduce, run_local
from minipar.observe import plot, trace


@pytest.fixture(autouse=True)
def tracing_off_afterwards():
    yield
    trace.disable()
    trace.clear()


def test_span_is_a_shared_no_op_and_records_nothing_when_tracing_is_off() -> None:
    trace.disable()
    trace.clear()
    first, second = trace.span("a", "compute"), trace.span("b", "comm", bytes=3)
    assert first is second  # no object is made per call: the off path is one flag test
    with first:
        pass
    trace.add_span("c", "comm", 0.0, 1.0)
    assert trace.events() == []


def test_spans_record_name_category_arguments_thread_and_nest_in_time() -> None:
    trace.enable()
    with trace.span("outer", "compute", step=3):
        time.sleep(0.002)
        with trace.span("inner", "comm", bytes=64):
            time.sleep(0.002)
    inner, outer = trace.events()  # recorded as they end
    assert (outer["name"], outer["cat"], outer["args"]) == ("outer", "compute", {"step": 3})
    assert (inner["name"], inner["cat"], inner["args"]) == ("inner", "comm", {"bytes": 64})
    assert outer["tid"] == inner["tid"] == threading.current_thread().name
    assert outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]
    assert outer["dur"] >= 4000  # microseconds


def test_enable_clears_earlier_spans_and_disable_keeps_them() -> None:
    trace.enable()
    with trace.span("first"):
        pass
    trace.disable()
    assert [e["name"] for e in trace.events()] == ["first"]
    trace.enable()
    assert trace.events() == []


def _ranks_record(comm):
    with trace.span(f"work of rank {comm.rank}", "compute"):
        time.sleep(0.001)

    def helper() -> None:  # a DDP-style communication thread of this rank
        with trace.span("helper comm", "comm"):
            time.sleep(0.001)

    thread = threading.Thread(target=helper, name=f"minipar-rank-{comm.rank}-comm")
    thread.start()
    thread.join()
    return trace.collect(comm)


def test_collect_under_run_local_gives_rank_0_one_document_with_a_row_per_rank_and_thread() -> None:
    trace.enable()
    documents = run_local(_ranks_record, 3)
    assert documents[1] is None and documents[2] is None
    document = json.loads(json.dumps(documents[0]))  # plain JSON, as written to disk
    events = document["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {0: "rank 0", 1: "rank 1", 2: "rank 2"}
    for rank in range(3):
        spans = {e["name"]: e for e in events if e["ph"] == "X" and e["pid"] == rank}
        assert set(spans) == {f"work of rank {rank}", "helper comm"}
        threads = {e["tid"]: e["args"]["name"] for e in events
                   if e["name"] == "thread_name" and e["pid"] == rank}
        assert threads[spans[f"work of rank {rank}"]["tid"]] == f"minipar-rank-{rank}"
        assert threads[spans["helper comm"]["tid"]] == f"minipar-rank-{rank}-comm"
        assert spans["helper comm"]["tid"] != spans[f"work of rank {rank}"]["tid"]
        assert all(isinstance(e["tid"], int) for e in spans.values())


def test_set_rank_labels_the_spans_of_a_thread_and_explicit_rank_wins() -> None:
    trace.enable()

    def body() -> None:
        trace.set_rank(5)
        with trace.span("labelled"):
            pass
        with trace.span("explicit", rank=2):
            pass

    thread = threading.Thread(target=body, name="some worker")
    thread.start()
    thread.join()
    by_name = {e["name"]: e["rank"] for e in trace.events()}
    assert by_name == {"labelled": 5, "explicit": 2}
    document = trace.collect()
    assert {e["pid"] for e in document["traceEvents"] if e["ph"] == "X"} == {5, 2}


def test_collectives_emit_a_comm_span_per_call_on_every_rank() -> None:
    trace.enable()
    run_local(lambda comm: allreduce(comm, np.ones(1000), algorithm="ring"), 2)
    spans = [e for e in trace.events() if e["cat"] == "comm"]
    assert sorted(e["rank"] for e in spans) == [0, 1], spans
    assert all("allreduce" in e["name"] for e in spans)


def test_comm_spans_carry_the_bytes_and_messages_the_counters_saw_and_stop_with_tracing() -> None:
    from minipar.comm import events as comm_events

    trace.enable()

    def body(comm) -> list[int]:
        comm.reset_counters()
        allreduce(comm, np.ones(1000), algorithm="ring")
        return [comm.bytes_sent, comm.messages_sent]

    counted = run_local(body, 2)
    spans = sorted((e for e in trace.events() if e["cat"] == "comm"), key=lambda e: e["rank"])
    assert [[e["args"]["bytes"], e["args"]["messages"]] for e in spans] == counted
    assert counted == [[8000, 2], [8000, 2]]  # p = 2: one message each way per phase
    trace.disable()
    assert _trace_listens() is False and comm_events.collective_listeners == []


def _trace_listens() -> bool:
    from minipar.comm import events as comm_events

    return trace._on_collective in comm_events.collective_listeners


def test_save_writes_a_file_perfetto_reads(tmp_path) -> None:
    trace.enable()
    with trace.span("step", "compute", bytes=np.int64(4096), dtype=np.dtype("float32")):
        pass
    path = tmp_path / "trace.json"
    returned = trace.save(str(path))
    on_disk = json.loads(path.read_text())
    assert on_disk == returned
    (step,) = [e for e in on_disk["traceEvents"] if e["ph"] == "X"]
    assert {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"} <= set(step)
    assert step["pid"] == 0 and on_disk["displayTimeUnit"] == "ms"
    assert step["args"] == {"bytes": 4096, "dtype": "float32"}  # NumPy values written as plain JSON


MPI_SCRIPT = """
import sys, time
from minipar.observe import trace
from minipar.comm import world
comm = world()
if comm.rank == 1:
    time.sleep(0.3)            # rank 1's clock origin starts 0.3 s after rank 0's
trace.enable()
comm.barrier()
with trace.span("after the barrier", "compute"):
    time.sleep(0.01)
trace.save(sys.argv[1], comm)
"""


@requires_mpi
@pytest.mark.timeout(90)
def test_save_under_mpi_gathers_both_ranks_onto_one_clock(tmp_path) -> None:
    path = tmp_path / "mpi_trace.json"
    assert_ok(run_mpi(MPI_SCRIPT, n=2, timeout=60, args=[str(path)]))
    spans = {e["pid"]: e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"}
    assert set(spans) == {0, 1}
    # Both spans began right after the same barrier. Without aligning the two ranks'
    # origins, rank 1's would appear about 300 ms earlier than rank 0's.
    assert abs(spans[0]["ts"] - spans[1]["ts"]) < 100_000  # microseconds


# ----- minipar.observe.plot: reading a trace ----------------------------------------------------------
def _event(name: str, category: str, start_ms: float, end_ms: float, thread: str, rank: int = 0) -> dict:
    return {"name": name, "cat": category, "ph": "X", "ts": start_ms * 1e3,
            "dur": (end_ms - start_ms) * 1e3, "tid": thread, "rank": rank, "args": {}}


# rank 0: main thread computes 0-10 ms, waiting (comm) from 6 ms inside it; a comm thread works 2-5 ms.
# rank 1: compute 0-4, comm 4-8.
EVENTS = [
    _event("backward", "compute", 0, 10, "MainThread"),
    _event("wait", "comm", 6, 10, "MainThread"),
    _event("bucket", "comm", 2, 5, "ddp-comm"),
    _event("forward", "compute", 0, 4, "MainThread", rank=1),
    _event("allreduce", "comm", 4, 8, "MainThread", rank=1),
]


def test_busy_time_gives_each_instant_to_the_innermost_span_and_counts_overlap() -> None:
    busy = plot.busy_time(EVENTS)
    # rank 0: compute 0-6 (the wait is not compute), comm 2-5 and 6-10, overlap 2-5.
    assert busy[0] == pytest.approx({"compute": 6e-3, "comm": 7e-3, "overlap": 3e-3, "wall": 10e-3})
    assert busy[1] == pytest.approx({"compute": 4e-3, "comm": 4e-3, "overlap": 0.0, "wall": 8e-3})


def test_busy_time_reads_the_same_numbers_from_a_chrome_trace_document() -> None:
    document = trace.to_chrome_trace({0: [e for e in EVENTS if e["rank"] == 0],
                                      1: [e for e in EVENTS if e["rank"] == 1]})
    from_document, from_events = plot.busy_time(document), plot.busy_time(EVENTS)
    assert from_document.keys() == from_events.keys() == {0, 1}
    for rank in (0, 1):
        assert from_document[rank] == pytest.approx(from_events[rank])


def test_text_timeline_draws_compute_comm_overlap_and_idle() -> None:
    text = plot.text_timeline(EVENTS, width=10)  # one character per millisecond
    header, rank0, rank1 = text.splitlines()
    assert "1.000 ms per character" in header
    assert rank0.split("|")[1] == "##+++#===="
    assert rank1.split("|")[1] == "####====.."


def test_timeline_draws_a_row_per_rank_and_thread_and_bandwidth_a_line_per_algorithm() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = plot.timeline(EVENTS)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["rank 0 MainThread", "rank 0 ddp-comm", "rank 1"]
    assert len(ax.patches) == len(EVENTS)
    ax = plot.bandwidth([1e3, 1e6], {"ring": [1e-5, 1e-3], "naive": [1e-5, 2e-3]})
    assert [line.get_label() for line in ax.get_lines()] == ["ring", "naive"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.1, 1.0])  # GB/s
    with pytest.raises(ValueError, match="'ring' has 1 times for 2 sizes"):
        plot.bandwidth([1, 2], {"ring": [1.0]})
    matplotlib.pyplot.close("all")
