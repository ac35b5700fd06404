"""Per-rank timelines: record compute and communication spans, write Chrome-trace JSON.

    from minipar import trace
    trace.enable()                      # or MINIPAR_TRACE=1 in the environment
    with trace.span("allreduce bucket 3", "comm", bytes=4096):
        ...
    trace.save("trace.json", comm)      # gathers every rank's spans to rank 0

When tracing is off, ``span`` returns a shared do-nothing context manager: the
cost is one function call and one attribute test. Spans are kept per thread
name so a communication thread shows as its own row in Perfetto.
Open the file at https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

_NULL = nullcontext()


class _State:
    def __init__(self) -> None:
        self.enabled = os.environ.get("MINIPAR_TRACE", "0") not in ("", "0", "false", "False")
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.origin = time.perf_counter()


_state = _State()


def enable() -> None:
    """Start recording (clears earlier spans)."""
    clear()
    _state.enabled = True


def disable() -> None:
    _state.enabled = False


def is_enabled() -> bool:
    return _state.enabled


def clear() -> None:
    with _state.lock:
        _state.events = []
        _state.origin = time.perf_counter()


def span(name: str, category: str = "compute", rank: int | None = None, **args: Any) -> Any:
    """Context manager timing a block as one span (``category``: "compute" or "comm")."""
    if not _state.enabled:
        return _NULL
    return _record(name, category, rank, args)


@contextmanager
def _record(name: str, category: str, rank: int | None, args: dict[str, Any]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        end = time.perf_counter()
        add_span(name, category, start, end, rank=rank, **args)


def add_span(name: str, category: str, start: float, end: float, rank: int | None = None,
             **args: Any) -> None:
    """Record a span measured elsewhere (``time.perf_counter()`` seconds)."""
    if not _state.enabled:
        return
    event = {
        "name": name, "cat": category, "ph": "X",
        "ts": (start - _state.origin) * 1e6, "dur": (end - start) * 1e6,
        "tid": threading.current_thread().name,
        "rank": rank, "args": args,
    }
    with _state.lock:
        _state.events.append(event)


def events() -> list[dict[str, Any]]:
    """A copy of the spans recorded so far in this process."""
    with _state.lock:
        return list(_state.events)


def to_chrome_trace(events_by_rank: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """One Chrome-trace document: a process row per rank, a thread row per thread."""
    trace_events: list[dict[str, Any]] = []
    for rank, rank_events in enumerate(events_by_rank):
        trace_events.append({"name": "process_name", "ph": "M", "pid": rank,
                             "args": {"name": f"rank {rank}"}})
        for event in rank_events:
            pid = event["rank"] if event.get("rank") is not None else rank
            trace_events.append({**{k: v for k, v in event.items() if k != "rank"}, "pid": pid})
    return {"traceEvents": trace_events, "displayTimeUnit": "ms"}


def save(path: str, comm: Any = None) -> None:
    """Write every rank's spans as one Chrome-trace JSON (rank 0 writes).

    With a communicator, each rank's spans travel to rank 0 as a JSON byte
    array over point-to-point messages (length first, then the bytes).
    """
    import numpy as np

    mine = events()
    if comm is None or comm.size == 1:
        per_rank = [mine]
    else:
        payload = np.frombuffer(json.dumps(mine).encode(), dtype=np.uint8).copy()
        if comm.rank != 0:
            comm.send(np.array([payload.size], dtype=np.int64), 0, tag=7101)
            comm.send(payload, 0, tag=7102)
            return
        per_rank = [mine]
        for source in range(1, comm.size):
            length = np.zeros(1, dtype=np.int64)
            comm.recv(length, source, tag=7101)
            buffer = np.zeros(int(length[0]), dtype=np.uint8)
            comm.recv(buffer, source, tag=7102)
            per_rank.append(json.loads(buffer.tobytes().decode()))
    with open(path, "w") as f:
        json.dump(to_chrome_trace(per_rank), f)
