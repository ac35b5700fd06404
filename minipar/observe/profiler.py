"""A profiler shaped like ``torch.profiler``: where the time of a training step goes, op by op.

    from minipar import profiler
    with profiler.profile(record_shapes=True, profile_memory=True) as prof:
        loss = F.cross_entropy(model(x), y); loss.backward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    prof.export_chrome_trace("step.json")        # the trace format of minipar.observe.trace

What is recorded: every autograd ``Function``'s forward (named by its class, ``MatMul``)
and backward (``MatMulBackward``), every collective (``ring_allreduce``, from the comm
event stream), and the blocks a script names with ``record_function("name")``.

- **CPU total** of an event: its wall time, start to end, on its thread.
- **Self CPU**: CPU total minus the events that ran inside it on the same thread (a
  checkpointed segment's recomputed ops, a collective inside a tensor-parallel
  backward), so self times add up to the profiled time without counting twice.
- **CPU Mem** (``profile_memory=True``): bytes of the arrays the event produced (a
  forward's output, a backward's input gradients) -- what the op allocated for its
  result; temporaries inside NumPy are not seen.

Off, it costs one test per operation: ``Function.apply`` and the backward walk check
``autograd.function.profiler is None`` (``benchmarks/autograd_step.py`` A/B in the
profiler lesson). On, each op pays two clock reads and a list append.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from minipar.autograd import function
from minipar.comm import events as comm_events
from minipar.observe.trace import to_chrome_trace


@dataclass
class FunctionEvent:
    """One recorded call: name, perf_counter start/end (seconds), time spent in nested events."""

    name: str
    start: float
    end: float = 0.0
    child_seconds: float = 0.0
    thread: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()
    nbytes: int = 0
    child_nbytes: int = 0
    category: str = "op"

    @property
    def cpu_time_total(self) -> float:
        return self.end - self.start

    @property
    def self_cpu_time_total(self) -> float:
        return self.cpu_time_total - self.child_seconds


@dataclass
class EventAverage:
    """All calls of one name (and input shapes, when grouped by them), summed."""

    key: str
    shapes: tuple[tuple[int, ...], ...] = ()
    count: int = 0
    cpu_time_total: float = 0.0
    self_cpu_time_total: float = 0.0
    cpu_memory_usage: int = 0
    self_cpu_memory_usage: int = 0

    @property
    def cpu_time(self) -> float:
        """Average CPU total per call (PyTorch's ``cpu_time``)."""
        return self.cpu_time_total / self.count if self.count else 0.0

    def add(self, event: FunctionEvent) -> None:
        self.count += 1
        self.cpu_time_total += event.cpu_time_total
        self.self_cpu_time_total += event.self_cpu_time_total
        self.cpu_memory_usage += event.nbytes + event.child_nbytes
        self.self_cpu_memory_usage += event.nbytes


def _format_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.3f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f}ms"
    return f"{seconds * 1e6:.3f}us"


def _format_bytes(nbytes: float) -> str:
    for unit, size in (("Gb", 1 << 30), ("Mb", 1 << 20), ("Kb", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{int(nbytes)} b"


_SORT_KEYS = ("self_cpu_time_total", "cpu_time_total", "cpu_time", "count", "cpu_memory_usage",
              "self_cpu_memory_usage")


class EventList(list):
    """``key_averages()``'s result: a list of ``EventAverage`` with PyTorch's ``table``."""

    def __init__(self, averages: list[EventAverage], profile_memory: bool, record_shapes: bool) -> None:
        super().__init__(averages)
        self.profile_memory, self.record_shapes = profile_memory, record_shapes

    def table(self, sort_by: str | None = "self_cpu_time_total", row_limit: int = 100,
              max_name_column_width: int = 55) -> str:
        """The averages as PyTorch prints them, the ``row_limit`` largest by ``sort_by`` first."""
        if sort_by is not None and sort_by not in _SORT_KEYS:
            raise ValueError(f"table(sort_by=...) takes one of {_SORT_KEYS} or None, got {sort_by!r}")
        rows = sorted(self, key=lambda a: getattr(a, sort_by), reverse=True) if sort_by else list(self)
        if row_limit is not None and row_limit > 0:
            rows = rows[:row_limit]
        total_self = sum(a.self_cpu_time_total for a in self) or 1.0
        width = max([len("Name")] + [min(len(a.key), max_name_column_width) for a in rows])
        headers = ["Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"]
        if self.profile_memory:
            headers += ["CPU Mem", "Self CPU Mem"]
        headers.append("# of Calls")
        if self.record_shapes:
            headers.append("Input Shapes")
        line = "-" * width + "  " + "  ".join("-" * 12 for _ in headers)
        out = [line, f"{'Name':>{width}}  " + "  ".join(f"{h:>12}" for h in headers), line]
        for a in rows:
            cells = [f"{100 * a.self_cpu_time_total / total_self:.2f}%", _format_time(a.self_cpu_time_total),
                     f"{100 * a.cpu_time_total / total_self:.2f}%", _format_time(a.cpu_time_total),
                     _format_time(a.cpu_time)]
            if self.profile_memory:
                cells += [_format_bytes(a.cpu_memory_usage), _format_bytes(a.self_cpu_memory_usage)]
            cells.append(str(a.count))
            if self.record_shapes:
                cells.append(str([list(s) for s in a.shapes]))
            out.append(f"{a.key[:width]:>{width}}  " + "  ".join(f"{c:>12}" for c in cells))
        out += [line, f"Self CPU time total: {_format_time(total_self)}"]
        return "\n".join(out)


class profile:  # noqa: N801 (PyTorch's name)
    """Record ops, their backwards and collectives inside the ``with`` block (see the module doc).

    Accepts ``activities``, ``with_stack``, ``schedule`` and ``on_trace_ready`` for PyTorch
    scripts and ignores them (minipar profiles the CPU, every step of the block).
    """

    def __init__(self, activities: Any = None, record_shapes: bool = False, profile_memory: bool = False,
                 with_stack: bool = False, schedule: Any = None, on_trace_ready: Any = None) -> None:
        self.record_shapes, self.profile_memory = bool(record_shapes), bool(profile_memory)
        self._events: list[FunctionEvent] = []
        self._open = threading.local()  # per thread: the stack of events still running
        self._lock = threading.Lock()
        self._origin = 0.0

    # ----- recording -------------------------------------------------------------------------
    def __enter__(self) -> profile:
        if function.profiler is not None:
            raise RuntimeError("a minipar profiler is already active: profiles do not nest")
        self._origin = time.perf_counter()
        function.profiler = self
        comm_events.add_observer(self._on_collective, collectives=True)
        return self

    def __exit__(self, *exc: object) -> None:
        function.profiler = None
        comm_events.remove_observer(self._on_collective)

    def _stack(self) -> list[FunctionEvent]:
        stack = getattr(self._open, "stack", None)
        if stack is None:
            stack = self._open.stack = []
        return stack

    def record(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as the event ``name`` (called by the autograd engine when profiling)."""
        shapes = tuple(tuple(a.shape) for a in args if hasattr(a, "shape")) if self.record_shapes else ()
        event = FunctionEvent(name, time.perf_counter(), thread=threading.current_thread().name,
                              shapes=shapes)
        stack = self._stack()
        stack.append(event)
        try:
            result = fn(*args)
        finally:
            event.end = time.perf_counter()
            stack.pop()
            self._close(event, stack)
        if self.profile_memory:
            produced = result if isinstance(result, tuple) else (result,)
            event.nbytes = sum(getattr(a, "nbytes", 0) for a in produced if a is not None)
            if stack:
                stack[-1].child_nbytes += event.nbytes + event.child_nbytes
        return result

    def _close(self, event: FunctionEvent, stack: list[FunctionEvent]) -> None:
        if stack:  # the enclosing event's self time excludes this one
            stack[-1].child_seconds += event.cpu_time_total
        with self._lock:
            self._events.append(event)

    def _on_collective(self, call: comm_events.CollectiveCall) -> None:
        event = FunctionEvent(call.name, call.start, call.end, thread=threading.current_thread().name,
                              category="comm", nbytes=call.nbytes if self.profile_memory else 0)
        self._close(event, self._stack())

    @contextmanager
    def _user_range(self, name: str) -> Iterator[None]:
        event = FunctionEvent(name, time.perf_counter(), thread=threading.current_thread().name,
                              category="user")
        stack = self._stack()
        stack.append(event)
        try:
            yield
        finally:
            event.end = time.perf_counter()
            stack.pop()
            self._close(event, stack)

    # ----- reading ---------------------------------------------------------------------------
    def events(self) -> list[FunctionEvent]:
        with self._lock:
            return list(self._events)

    def key_averages(self, group_by_input_shape: bool = False) -> EventList:
        averages: dict[tuple[str, tuple], EventAverage] = {}
        for event in self.events():
            shapes = event.shapes if group_by_input_shape else ()
            key = (event.name, shapes)
            if key not in averages:
                averages[key] = EventAverage(event.name, shapes)
            averages[key].add(event)
        return EventList(list(averages.values()), self.profile_memory,
                         self.record_shapes and group_by_input_shape)

    def export_chrome_trace(self, path: str) -> None:
        """Every event as a span of the Chrome trace format (opens in Perfetto), like ``trace.save``."""
        spans = [{"name": e.name, "cat": e.category, "ts": (e.start - self._origin) * 1e6,
                  "dur": e.cpu_time_total * 1e6, "tid": e.thread,
                  "args": {"shapes": [list(s) for s in e.shapes]} if e.shapes else {}}
                 for e in self.events()]
        with open(path, "w", encoding="utf-8") as file:
            json.dump(to_chrome_trace({0: spans}), file)


@contextmanager
def record_function(name: str) -> Iterator[None]:
    """Name a block of the script as one event of the active profile (nothing when none is active)."""
    active = function.profiler
    if active is None:
        yield
        return
    with active._user_range(str(name)):
        yield
