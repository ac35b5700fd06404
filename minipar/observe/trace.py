"""Per-rank timelines: record compute and communication spans, write Chrome-trace JSON.

    from minipar.observe import trace
    trace.enable()                      # or MINIPAR_TRACE=1 in the environment
    with trace.span("allreduce bucket 3", "comm", bytes=4096):
        ...
    trace.save("trace.json", comm)      # gathers every rank's spans to rank 0

    from minipar.observe import plot
    print(plot.text_timeline("trace.json"))  # busy time per rank, a timeline in characters
    plot.timeline("trace.json")              # the same as a matplotlib Gantt chart

Open the file at https://ui.perfetto.dev (or chrome://tracing): one process
row per rank, one thread row per thread of that rank (a DDP communication
thread shows beside the main thread), one bar per span.

Cost when off: ``span`` tests one flag and returns a shared do-nothing context
manager, so instrumented code pays a function call, an attribute test and an
empty ``with`` (~0.2 us). When on, a span costs two ``perf_counter`` calls, a
small dict and a list append (a few microseconds).

Which rank recorded a span. Under ``mpiexec`` every process is one rank and
``save`` labels its spans with ``comm.rank``. With ``run_local`` all ranks are
threads of one process; a span is labelled by its thread: ``set_rank(r)`` on
that thread if called, else a thread name starting ``minipar-rank-r`` (the
names ``run_local`` gives its threads; name your helper threads
``minipar-rank-r-comm`` and they join rank r's row), else rank 0.

Communication spans come from minipar.comm's event stream: while tracing is
on this module is an observer of it (``minipar.comm.add_observer``), and every
collective call that ends becomes a "comm" span with its op, dtype, length and
the bytes and messages it sent (``minipar.comm`` itself never imports this
module). ``MINIPAR_TRACE=1`` turns tracing on when this module is imported.

Clocks. Span times are ``time.perf_counter`` seconds since ``enable()``; at
``save`` each rank also sends the wall-clock time of its origin, and rank 0
shifts every rank onto the earliest origin, so ranks on one machine line up
exactly and ranks on several machines as well as their clocks agree (NTP: ~1 ms).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from minipar.comm import events as comm_events
from minipar.comm import gather_to_root

_NULL = nullcontext()
_RANK_THREAD = re.compile(r"minipar-rank-(\d+)")


class _State:
    def __init__(self) -> None:
        self.enabled = os.environ.get("MINIPAR_TRACE", "0") not in ("", "0", "false", "False")
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.origin = time.perf_counter()


_state = _State()
_thread = threading.local()  # .rank: set_rank's label for this thread


def _on_collective(call: comm_events.CollectiveCall) -> None:
    """minipar.comm's stream -> one "comm" span per collective call."""
    add_span(call.name, "comm", call.start, call.end, rank=call.rank, bytes=call.nbytes,
             messages=call.messages, **call.args)


def _listen(on: bool) -> None:
    comm_events.remove_observer(_on_collective)  # never twice
    if on:
        comm_events.add_observer(_on_collective, collectives=True)


_listen(_state.enabled)  # MINIPAR_TRACE=1: from the start


def enable() -> None:
    """Start recording (clears earlier spans)."""
    clear()
    _state.enabled = True
    _listen(True)


def disable() -> None:
    """Stop recording; spans recorded so far stay until ``clear`` or ``enable``."""
    _state.enabled = False
    _listen(False)


def is_enabled() -> bool:
    return _state.enabled


def clear() -> None:
    """Forget every span and restart the clock at 0."""
    with _state.lock:
        _state.events = []
        _state.origin = time.perf_counter()


def set_rank(rank: int | None) -> None:
    """Label the spans this thread records as ``rank`` (for threads standing in for ranks)."""
    _thread.rank = rank


def _thread_rank(thread: threading.Thread) -> int | None:
    rank = getattr(_thread, "rank", None)
    if rank is not None:
        return rank
    match = _RANK_THREAD.match(thread.name)
    return int(match.group(1)) if match else None


def span(name: str, category: str = "compute", rank: int | None = None, **args: Any) -> Any:
    """Context manager timing a block as one span (``category``: "compute" or "comm").

    ``args`` (numbers or strings: bytes, peer, bucket...) show in Perfetto's detail pane.
    """
    if not _state.enabled:
        return _NULL
    return _record(name, category, rank, args)


@contextmanager
def _record(name: str, category: str, rank: int | None, args: dict[str, Any]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        add_span(name, category, start, time.perf_counter(), rank=rank, **args)


def add_span(name: str, category: str, start: float, end: float, rank: int | None = None,
             **args: Any) -> None:
    """Record a span measured elsewhere (``time.perf_counter()`` seconds)."""
    if not _state.enabled:
        return
    thread = threading.current_thread()
    event = {
        "name": name, "cat": category, "ph": "X",
        "ts": (start - _state.origin) * 1e6, "dur": (end - start) * 1e6,
        "tid": thread.name,
        "rank": rank if rank is not None else _thread_rank(thread), "args": args,
    }
    with _state.lock:
        _state.events.append(event)


def events() -> list[dict[str, Any]]:
    """A copy of the spans recorded so far in this process (``ts``/``dur`` in microseconds)."""
    with _state.lock:
        return list(_state.events)


# ----- one document for all ranks -------------------------------------------------------------
def _by_rank(recorded: list[dict[str, Any]], default_rank: int) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for event in recorded:
        rank = event.get("rank")
        grouped.setdefault(default_rank if rank is None else int(rank), []).append(event)
    return grouped


def to_chrome_trace(events_by_rank: list[list[dict[str, Any]]] | dict[int, list[dict[str, Any]]]
                    ) -> dict[str, Any]:
    """One Chrome-trace document: a process row (pid) per rank, a thread row (tid) per thread.

    ``events_by_rank``: a list indexed by rank, or a dict rank -> spans, of ``events()`` records.
    Thread names become small integer tids, the rank's main thread first, named by
    ``thread_name`` metadata events so Perfetto shows them.
    """
    items = events_by_rank.items() if isinstance(events_by_rank, dict) else enumerate(events_by_rank)
    trace_events: list[dict[str, Any]] = []
    for rank, rank_events in sorted(items):
        trace_events.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
                             "args": {"name": f"rank {rank}"}})
        trace_events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0,
                             "args": {"sort_index": rank}})
        names = sorted({e["tid"] for e in rank_events},
                       key=lambda n: (n not in ("MainThread", f"minipar-rank-{rank}"), n))
        tids = {name: i for i, name in enumerate(names)}
        for name, tid in tids.items():
            trace_events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid,
                                 "args": {"name": name}})
        for event in rank_events:
            trace_events.append({"name": event["name"], "cat": event["cat"], "ph": "X",
                                 "ts": event["ts"], "dur": event["dur"], "pid": rank,
                                 "tid": tids[event["tid"]], "args": event.get("args", {})})
    return {"traceEvents": trace_events, "displayTimeUnit": "ms"}


def _plain(value: Any) -> Any:
    """JSON for span arguments that are not plain Python (NumPy scalars, dtypes, ...)."""
    return value.item() if hasattr(value, "item") else str(value)


def collect(comm: Any = None) -> dict[str, Any] | None:
    """Gather every rank's spans into one Chrome-trace document; returns it on rank 0, else None.

    Collective over ``comm`` (call it on every rank). MPI: each rank's spans go to
    rank 0 as JSON bytes (``minipar.comm.gather_to_root``). Threads (``run_local``):
    every rank's spans are already in this process, so the ranks only wait for each
    other. ``comm=None``: this process's spans, grouped by their rank labels.
    Pass the world communicator: ranks are labelled by their rank in ``comm``.
    """
    if comm is None or comm.size == 1:
        return to_chrome_trace(_by_rank(events(), 0 if comm is None else comm.rank))
    if getattr(comm, "backend", "") == "threads":
        comm.barrier()  # every rank has finished recording
        document = to_chrome_trace(_by_rank(events(), 0)) if comm.rank == 0 else None
        comm.barrier()  # nobody clears or records more before rank 0 has copied the spans
        return document
    wall_origin = time.time() - (time.perf_counter() - _state.origin)
    mine = json.dumps({"wall_origin": wall_origin, "events": events()}, default=_plain).encode()
    gathered = gather_to_root(comm, mine)
    if gathered is None:
        return None
    per_rank = [json.loads(blob.decode()) for blob in gathered]
    earliest = min(part["wall_origin"] for part in per_rank)
    grouped: dict[int, list[dict[str, Any]]] = {}
    for rank, part in enumerate(per_rank):
        shift = (part["wall_origin"] - earliest) * 1e6  # onto rank-common time, microseconds
        for event in part["events"]:
            label = rank if event.get("rank") is None else int(event["rank"])
            grouped.setdefault(label, []).append({**event, "ts": event["ts"] + shift})
    return to_chrome_trace(grouped)


def save(path: str, comm: Any = None) -> dict[str, Any] | None:
    """Write every rank's spans as one Chrome-trace JSON at ``path`` (rank 0 writes).

    Collective over ``comm``, like ``collect``; returns the document on rank 0.
    """
    document = collect(comm)
    if document is not None:
        with open(path, "w") as f:
            json.dump(document, f, default=_plain)
    return document
