"""Pictures of what ran: per-rank timelines from a trace, and bandwidth against message size.

    from minipar.observe import plot, trace
    document = trace.collect(comm)                # or a path written by trace.save
    print(plot.text_timeline(document))           # in characters: '#' compute, '=' comm
    plot.busy_time(document)                      # rank -> seconds of compute, comm, overlap
    plot.timeline(document)                       # Gantt chart: a row per rank (and thread)
    plot.bandwidth(sizes, {"ring": ring_seconds, "naive": naive_seconds})

Reading a trace. Each thread's spans nest (they are context managers); every
instant of a thread is given to its innermost open span, so DDP's "wait for
gradients" (comm) inside the lesson's "backward" (compute) counts as waiting,
not as both. A rank's threads are then merged: communication on DDP's thread
during computation on the main thread is *overlap*, the time overlap hides.

matplotlib is imported inside the functions, so ``import minipar.observe.plot`` costs
nothing and minipar runs without matplotlib installed. Each function draws on
``ax`` if given (else a new figure) and returns the axes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

#: colours by span category; anything else is grey
CATEGORY_COLOURS = {"compute": "tab:blue", "comm": "tab:orange"}


# ----- reading a trace: spans per rank, busy time, a text timeline ---------------------------------
def spans_by_rank(trace_or_events: Any) -> dict[int, list[tuple[str, str, float, float, str]]]:
    """rank -> [(name, category, start s, end s, thread)] sorted by start.

    Accepts a Chrome-trace document (from ``trace.collect``/``trace.save``), a path to one, or a
    list of ``trace.events()`` records (unlabelled ones count as rank 0).
    """
    if isinstance(trace_or_events, (str, os.PathLike)):
        with open(trace_or_events) as f:
            trace_or_events = json.load(f)
    if isinstance(trace_or_events, dict):
        threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace_or_events["traceEvents"]
                   if e["ph"] == "M" and e["name"] == "thread_name"}
        rows = [(e["pid"], e, threads.get((e["pid"], e["tid"]), str(e["tid"])))
                for e in trace_or_events["traceEvents"] if e["ph"] == "X"]
    else:
        rows = [(e.get("rank") or 0, e, e["tid"]) for e in trace_or_events]
    result: dict[int, list[tuple[str, str, float, float, str]]] = {}
    for rank, e, thread in rows:
        start = e["ts"] / 1e6
        result.setdefault(int(rank), []).append((e["name"], e["cat"], start, start + e["dur"] / 1e6,
                                                 thread))
    for spans in result.values():
        spans.sort(key=lambda s: s[2])
    return dict(sorted(result.items()))


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of the intervals as disjoint sorted intervals (nested spans count once)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _innermost(spans: list[tuple[str, str, float, float, str]]) -> list[tuple[float, float, str]]:
    """One thread's time, each instant given to the innermost span open then: (start, end, category).

    Spans of one thread nest (they are context managers), so a comm span inside a
    compute span (waiting for gradients inside backward) counts as comm, not both.
    """
    pieces: list[tuple[float, float, str]] = []
    stack: list[tuple[float, str]] = []  # (end, category) of the spans open at ``cursor``
    cursor = float("-inf")

    def close_until(time_point: float) -> None:
        nonlocal cursor
        while stack and stack[-1][0] <= time_point:
            end, category = stack.pop()
            if end > cursor:
                pieces.append((cursor, end, category))
                cursor = end

    for _, category, start, end, _ in sorted(spans, key=lambda s: (s[2], -s[3])):
        close_until(start)
        if stack and start > cursor:
            pieces.append((cursor, start, stack[-1][1]))
        cursor = max(cursor, start)
        stack.append((end, category))
    close_until(float("inf"))
    return pieces


def _intervals_by_category(spans: list[tuple[str, str, float, float, str]]
                           ) -> dict[str, list[tuple[float, float]]]:
    """category -> disjoint intervals of a rank's time, innermost span per thread, threads merged."""
    raw: dict[str, list[tuple[float, float]]] = {}
    for thread in {s[4] for s in spans}:
        for start, end, category in _innermost([s for s in spans if s[4] == thread]):
            raw.setdefault(category, []).append((start, end))
    return {category: _merge(intervals) for category, intervals in sorted(raw.items())}


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the overlap of two lists of disjoint sorted intervals."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def busy_time(trace_or_events: Any) -> dict[int, dict[str, float]]:
    """rank -> {category: seconds spent in it, "overlap": seconds of comm during compute,
    "wall": first start to last end}. Each thread's instant counts for its innermost span."""
    table: dict[int, dict[str, float]] = {}
    for rank, spans in spans_by_rank(trace_or_events).items():
        by_category = _intervals_by_category(spans)
        row = {category: _length(intervals) for category, intervals in by_category.items()}
        compute = _merge([iv for c, ivs in by_category.items() if c != "comm" for iv in ivs])
        row["overlap"] = _intersection(by_category.get("comm", []), compute)
        row["wall"] = max(s[3] for s in spans) - min(s[2] for s in spans)
        table[rank] = row
    return table


def text_timeline(trace_or_events: Any, width: int = 60) -> str:
    """A text timeline: per rank, one character per time slot, and its busy times.

    Slot characters: ``#`` compute, ``=`` comm, ``+`` both at once (communication
    overlapping computation on another thread), ``.`` idle. Categories other than
    "comm" count as compute.
    """
    by_rank = spans_by_rank(trace_or_events)
    if not by_rank:
        return "(no spans recorded: was tracing enabled? trace.enable() or MINIPAR_TRACE=1)"
    t0 = min(s[2] for spans in by_rank.values() for s in spans)
    t1 = max(s[3] for spans in by_rank.values() for s in spans)
    slot = max(t1 - t0, 1e-9) / width
    busy = busy_time(trace_or_events)
    lines = [f"timeline: {(t1 - t0) * 1e3:.2f} ms, {slot * 1e3:.3f} ms per character "
             "('#' compute, '=' comm, '+' both, '.' idle)"]
    for rank, spans in by_rank.items():
        by_category = _intervals_by_category(spans)
        kinds = {"comm": by_category.get("comm", []),
                 "compute": _merge([iv for c, ivs in by_category.items() if c != "comm" for iv in ivs])}
        cover = {kind: [0.0] * width for kind in kinds}  # seconds of each slot covered
        for kind, intervals in kinds.items():
            for start, end in intervals:
                for i in range(int((start - t0) / slot), min(int((end - t0) / slot), width - 1) + 1):
                    lo, hi = t0 + i * slot, t0 + (i + 1) * slot
                    cover[kind][i] += max(0.0, min(end, hi) - max(start, lo))
        row = ""
        for compute_part, comm_part in zip(cover["compute"], cover["comm"]):
            if compute_part >= slot / 2 and comm_part >= slot / 2:
                row += "+"
            elif max(compute_part, comm_part) < slot / 4:
                row += "."
            else:
                row += "#" if compute_part >= comm_part else "="
        comm = busy[rank].get("comm", 0.0)
        compute = sum(v for k, v in busy[rank].items() if k not in ("comm", "overlap", "wall"))
        lines.append(f"rank {rank:>2} |{row}| compute {compute * 1e3:7.2f} ms, comm {comm * 1e3:7.2f} ms"
                     f" ({busy[rank]['overlap'] * 1e3:.2f} ms of it overlapped), {len(spans)} spans")
    return "\n".join(lines)


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def timeline(trace_or_events: Any, ax: Any = None, threads: bool = True) -> Any:
    """Per-rank Gantt chart: time across, one row per rank (per thread with ``threads``).

    ``trace_or_events``: a Chrome-trace document (``trace.collect``/``trace.save``),
    a path to one, or a list of ``trace.events()``. Bars are coloured by category
    (compute blue, comm orange); nested spans are drawn thinner on top of their parent.
    """
    from matplotlib.patches import Patch

    by_rank = spans_by_rank(trace_or_events)
    if not by_rank:
        raise ValueError("timeline: the trace holds no spans (was tracing enabled?)")
    t0 = min(s[2] for spans in by_rank.values() for s in spans)
    rows: list[tuple[int, str]] = []  # (rank, thread) top to bottom
    for rank, spans in by_rank.items():
        names = sorted({s[4] for s in spans}, key=lambda n: ("MainThread" != n and
                                                            f"minipar-rank-{rank}" != n, n))
        rows.extend((rank, name) for name in (names if threads else ["*"]))
    ax = _axes(ax, (9, 0.5 + 0.45 * len(rows)))
    categories = set()
    for y, (rank, thread) in enumerate(rows):
        spans = [s for s in by_rank[rank] if not threads or s[4] == thread]
        open_ends: list[float] = []  # ends of the spans enclosing the current one
        for _, category, start, end, _ in spans:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            depth = len(open_ends)
            height = 0.8 * 0.7**depth
            ax.barh(y, (end - start) * 1e3, left=(start - t0) * 1e3, height=height,
                    color=CATEGORY_COLOURS.get(category, "tab:gray"), edgecolor="black", linewidth=0.3)
            categories.add(category)
            open_ends.append(end)
    labels = [f"rank {r}" if not threads or len({t for rr, t in rows if rr == r}) == 1
              else f"rank {r} {t}" for r, t in rows]
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title("per-rank timeline")
    ax.legend(handles=[Patch(color=CATEGORY_COLOURS.get(c, "tab:gray"), label=c) for c in sorted(categories)],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return ax


def bandwidth(sizes: Sequence[float], times_by_algorithm: Mapping[str, Sequence[float]], ax: Any = None,
              bytes_moved: Mapping[str, Sequence[float]] | None = None) -> Any:
    """Bandwidth against message size, one line per algorithm (log-log).

    ``sizes``: message sizes in bytes; ``times_by_algorithm``: name -> seconds per call
    at each size. Plotted is the *algorithm bandwidth* size / time (what a user sees:
    how fast an array of that size gets reduced); pass ``bytes_moved`` (name -> bytes
    each rank sent at each size) to plot link bandwidth bytes_moved / time instead.
    """
    for name, times in times_by_algorithm.items():
        if len(times) != len(sizes):
            raise ValueError(f"bandwidth: {name!r} has {len(times)} times for {len(sizes)} sizes")
    ax = _axes(ax, (6, 4))
    for name, times in times_by_algorithm.items():
        moved = bytes_moved[name] if bytes_moved is not None else sizes
        ax.plot(sizes, [b / t / 1e9 for b, t in zip(moved, times)], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("link bandwidth (GB/s)" if bytes_moved is not None else "size / time (GB/s)")
    ax.set_title("bandwidth vs message size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax
