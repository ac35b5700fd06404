"""Memory accounting: the peak bytes a region allocates, and the bytes a graph holds.

Two questions, two tools:

- *How much did this step need at its worst?* ``track()`` measures with
  ``tracemalloc``, which sees every NumPy array's buffer (NumPy reports them)::

      with memory.track() as m:
          with m.phase("forward"):
              loss = model(x).sum()
          with m.phase("backward"):
              loss.backward()
      m.peak_bytes, m.phases["forward"], m.phases["backward"]

  Peaks are bytes above the level at the region's start. Regions nest: an inner
  region (or phase) restarts tracemalloc's peak for itself, and the outer region
  still sees the inner peak. tracemalloc is process-wide, so a region also
  counts other threads' allocations (``run_local`` ranks), and it sees host
  memory only (for CuPy ask ``cupy.get_default_memory_pool().used_bytes()``).
  It sees only arrays allocated while it traces: to measure a training step,
  start tracing (``tracemalloc.start()``) a step earlier, so that the frees of
  arrays made before the region are counted too.

- *How much is the autograd graph keeping alive right now?*
  ``graph_bytes(loss)`` walks the graph behind a tensor and adds up the arrays
  its nodes hold (saved arrays, leaf inputs), each array once, a view
  counted as the whole buffer it keeps alive. By default leaves (parameters,
  input batch) are left out: what remains are the stored activations, the
  memory that gradient checkpointing trades for compute.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from minipar.tensor import Tensor

MiB = 1024 * 1024
_active: list[Tracker] = []  # open regions, outermost first


class Tracker:
    """Results of one ``track()`` region: ``peak_bytes``, ``net_bytes``, ``phases``."""

    def __init__(self) -> None:
        self.start_bytes = 0
        self.peak_bytes = 0  # highest traced level during the region, minus the start level
        self.net_bytes = 0  # traced level at the end minus the start level (what was kept)
        self.phases: dict[str, int] = {}  # phase name -> its peak above its own start
        self._running_peak = 0  # absolute traced bytes, folded in when an inner region resets

    @contextmanager
    def phase(self, name: str) -> Iterator[Tracker]:
        """A nested region whose peak is stored as ``phases[name]`` (the largest, if repeated)."""
        with track() as inner:
            yield inner
        self.phases[name] = max(self.phases.get(name, 0), inner.peak_bytes)

    def __repr__(self) -> str:
        phases = "".join(f", {k}={v / MiB:.2f} MiB" for k, v in self.phases.items())
        return f"Tracker(peak={self.peak_bytes / MiB:.2f} MiB, net={self.net_bytes / MiB:.2f} MiB{phases})"


def _fold_peak_into_outer_regions() -> None:
    """Before tracemalloc's peak is reset, let every open region remember it."""
    if _active:
        peak = tracemalloc.get_traced_memory()[1]
        for region in _active:
            region._running_peak = max(region._running_peak, peak)


@contextmanager
def track() -> Iterator[Tracker]:
    """Measure peak and net bytes allocated inside the block (tracemalloc; started if needed)."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    region = Tracker()
    _fold_peak_into_outer_regions()
    tracemalloc.reset_peak()
    region.start_bytes = region._running_peak = tracemalloc.get_traced_memory()[0]
    _active.append(region)
    try:
        yield region
    finally:
        current, peak = tracemalloc.get_traced_memory()
        _active.remove(region)
        region._running_peak = max(region._running_peak, peak)
        region.peak_bytes = region._running_peak - region.start_bytes
        region.net_bytes = current - region.start_bytes
        for outer in _active:  # the inner peak happened inside every outer region too
            outer._running_peak = max(outer._running_peak, region._running_peak)
        if started_here:
            tracemalloc.stop()


def _is_array(value: Any) -> bool:
    return hasattr(value, "nbytes") and hasattr(value, "shape") and not isinstance(value, Tensor)


def _owner(array: Any) -> Any:
    """The array whose buffer ``array`` views (itself when it owns its data)."""
    while _is_array(getattr(array, "base", None)):
        array = array.base
    return array


def _arrays_in(value: Any) -> Iterator[Any]:
    if _is_array(value):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            if _is_array(item):
                yield item


def graph_bytes(tensor: Tensor, include_leaves: bool = False) -> int:
    """Bytes of the distinct array buffers the autograd graph behind ``tensor`` holds.

    A node holds what forward saved (``saved_tensors``), its leaf inputs
    (parameters), and arrays it kept as attributes (a mask). Each buffer is
    counted once; a view counts as its base. Leaf tensors' buffers (parameters,
    the input batch) and any view of them are excluded unless ``include_leaves``.
    ``tensor``'s own data counts only if the graph holds it too.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph_bytes expects a Tensor, got {type(tensor).__name__}")
    buffers: dict[int, int] = {}
    leaf_buffers: set[int] = set()
    seen: set[int] = set()
    stack = [tensor._node] if tensor._node is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        held: list[Any] = list(_arrays_in(tuple(node.held_arrays())))  # saved values, masks
        for arg in getattr(node, "inputs", None) or ():
            producer = getattr(arg, "_node", None)  # a tensor, or the engine's edge to one
            if producer is not None:
                stack.append(producer)
                if isinstance(arg, Tensor):  # an engine that keeps input tensors keeps their data
                    held.append(arg.array)
            elif isinstance(arg, Tensor):
                leaf_buffers.add(id(_owner(arg.array)))
                held.append(arg.array)
            else:
                held.extend(_arrays_in(arg))
        for array in held:
            owner = _owner(array)
            buffers[id(owner)] = owner.nbytes
    return sum(n for key, n in buffers.items() if include_leaves or key not in leaf_buffers)
