"""Shared-memory all-reduce: ranks on one host read each other's buffers in place.

The one exception (DESIGN.md) to "collectives are built from point-to-point
messages": a message is a copy (sender's buffer -> MPI's -> receiver's), and on
one host every byte of a ring all-reduce is copied 2(p-1)/p N times. Here the
ranks share one MPI-3 window (``MPI.Win.Allocate_shared`` on the ranks of
``Split_type(COMM_TYPE_SHARED)``), one segment of N bytes per rank:

    segment 0: [ x0 | x0 | x0 ]      rank c reduces column c (its 1/p slice) reading
    segment 1: [ x1 | x1 | x1 ]      every segment in place, writes it into its own
    segment 2: [ x2 | x2 | x2 ]      segment, and everyone copies the columns back
                 c=0  c=1  c=2

    1. copy in:    segment[rank] = x                          N bytes written
    2. barrier
    3. reduce:     x[c] = x_{c+1}[c] + x_{c+2}[c] + ... + x_c[c]   N read, N/p written
                   segment[rank][c] = x[c]                      (c = rank)
    4. barrier
    5. read back:  x[j] = segment[j][j] for every j != rank    (p-1)/p N read
    6. barrier     (no rank may overwrite its segment while others still read it)

About 2N bytes copied per rank and no messages: time ~ 3 barriers + ~3 N / memory
bandwidth, against the ring's 2(p-1) alpha + 2(p-1)/p N beta + (p-1)/p N gamma.

That is this plain form (``form="plain"``). Measured at p = 2 and 16 MiB on the
first 2-core host, its passes streamed from DRAM (two arrays and two segments of
16 MiB against 32 MiB of L3): copy-in 2.8 ms, reduce 2.0, publish 1.3, read back
1.2, the barriers ~0.06 each (up to 7 ms when a rank is descheduled), no page
faults after the first call, ``Win.Sync`` 0.15 us: ~1.7x MPI.Allreduce, whose
own time moves between 3 and 9 ms with the machine's load, hence a ratio that
wanders. ``shm_pipeline.py`` runs the same sums piece by piece through a small
window that stays in cache (a reduce-scatter and an all-gather, a round of
pieces at a time, three waits a round and no barrier); it is the default up to
``shm_pipeline.MAX_RANKS`` ranks. An array that already lives in a window
(``shm_arrays.shared_empty``) needs neither copy in nor read back: ``shm_arrays.py``
all-reduces it where it lies (16 MiB: 0.38-0.43x MPI.Allreduce, pipelined 0.81-0.89x,
in the same run of ``benchmarks/shm_allreduce.py``).

Summation order: slice c is summed starting at rank c + 1, in ring order, ending
with rank c (((x_{c+1} + x_{c+2}) + ...) + x_c), exactly the order of the ring's
reduce-scatter (``ring.py``) on the same ``numpy.array_split`` chunks, so the
result is bit-identical to ``algorithm="ring"``; mean divides by p afterwards, as
the ring does.

On thread ranks there is nothing to allocate: the ranks' arrays themselves are
the segments (each rank puts its array in a registry shared by the world, step
1 is skipped). Windows are cached per (communicator, size, dtype), at most
``MAX_WINDOWS`` per communicator (the oldest is freed first, on every rank
alike), and ``free_windows(comm)`` (collective) frees them all. The barriers are
the communicator's own, so its deadline applies. Every form starts with one empty
message round the ring under the call's tag (``signature.check_round_the_ring``): the
shared memory carries no tag, so that message is what makes ranks calling with another
dtype, length, op, array or collective a ``CollectiveMismatchError`` naming both calls
(at once on thread ranks, by the watchdog within ~1.5 s under MPI) instead of reading
each other's bytes or waiting until the deadline. NumPy arrays only.

``shm_core(..., middle=f)`` hands step 3 (and the mean's division) to
``f(reduce_range, lo, hi)``: the hierarchical all-reduce (``hierarchical.py``)
reduces this rank's slice [lo, hi) piece by piece and rings each piece across
hosts there, before the host reads the slice back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.comm import signature as signed
from minipar.comm._common import chunk_bounds, combiner, finish_mean, scratch
from minipar.comm.communicator import Communicator
from minipar.comm.shm_pipeline import MAX_RANKS, shm_pipelined, staging_window

MAX_WINDOWS = 4  # per communicator: e.g. a few DDP bucket sizes
Middle = Callable[[Callable[[int, int], None], int, int], None]  # step 3: (reduce_range, lo, hi)


def _reduce_range(comm: Communicator, flat: Any, segments: list[Any], op: str, lo: int, hi: int) -> None:
    """Step 3 on [lo, hi) inside our slice: flat[lo:hi] = segments[j][lo:hi] combined in the ring's order."""
    p, c = comm.size, comm.rank
    if hi == lo:
        return
    combine = combiner(flat, op)
    mine = flat[lo:hi]
    # The ring's order for chunk c: start at rank c + 1, add c + 2, ..., and rank c last.
    first, second = segments[(c + 1) % p], segments[(c + 2) % p]
    if p == 2:  # x_{c+1} + x_c: the second operand is our own, last
        combine(first[lo:hi], second[lo:hi], out=mine)
        return
    acc = scratch(comm, flat, hi - lo)  # x_c must survive until it is added, last
    combine(first[lo:hi], second[lo:hi], out=acc)
    for step in range(3, p + 1):
        combine(acc, segments[(c + step) % p][lo:hi], out=acc)
    mine[...] = acc


def _read_back(comm: Communicator, flat: Any, segments: list[Any]) -> None:
    """Step 5: copy every other rank's finished slice out of its segment."""
    bounds = chunk_bounds(flat.size, comm.size)
    for j, segment in enumerate(segments):
        if j != comm.rank:
            flat[bounds[j] : bounds[j + 1]] = segment[bounds[j] : bounds[j + 1]]


# ----- thread ranks: the arrays themselves ----------------------------------------------------------
def _shm_threads(comm: Any, flat: Any, op: str, middle: Middle) -> None:
    number = comm.__dict__.get("_shm_calls", 0)  # the n-th shm call: the same n on every rank
    comm._shm_calls = number + 1
    key = (comm.context, number)
    segments = thread_segments(comm, key, flat)  # 1. register our array (no copy), 2. barrier
    # 3. reduce slice c reading the others' arrays; our own slice c is read only by us, so
    #    writing the result straight into it is safe once it has been added (last, or via acc).
    lo, hi = chunk_bounds(flat.size, comm.size)[comm.rank : comm.rank + 2]
    middle(lambda a, b: _reduce_range(comm, flat, segments, op, a, b), lo, hi)
    comm.barrier()  # 4.
    _read_back(comm, flat, segments)  # 5.
    comm.barrier()  # 6.
    if comm.rank == 0:
        with comm.world.cond:
            del comm.world.shared[key]


def thread_segments(comm: Any, key: Any, mine: Any) -> list[Any]:
    """Thread ranks: put ``mine`` in the world's registry under ``key``, barrier, read everyone's.

    The caller deletes ``key`` (rank 0) once no rank reads the list any more.
    """
    world = comm.world
    with world.cond:
        world.shared.setdefault(key, [None] * comm.size)[comm.rank] = mine
    comm.barrier()
    return list(world.shared[key])


# ----- MPI ranks: one shared window per (communicator, size, dtype) ------------------------------
class _Window:
    """A shared window of ``length`` elements of ``dtype`` per rank, and NumPy views of all segments."""

    def __init__(self, node: Any, length: int, dtype: np.dtype) -> None:
        from mpi4py import MPI

        self.win = MPI.Win.Allocate_shared(max(length, 1) * dtype.itemsize, dtype.itemsize,
                                           comm=node)
        self.segments = []
        for rank in range(node.Get_size()):
            buffer, _ = self.win.Shared_query(rank)  # rank's segment, mapped into our memory
            self.segments.append(np.frombuffer(buffer, dtype=dtype, count=length))
        self.win.Lock_all(MPI.MODE_NOCHECK)  # passive epoch for the whole lifetime: Sync works

    def free(self) -> None:
        self.segments = []
        self.win.Unlock_all()
        self.win.Free()  # collective over the node


def _node_comm(comm: Any) -> Any:
    """The MPI communicator of ``comm``'s ranks sharing memory; ValueError if that is not all of them."""
    node = comm.__dict__.get("_shm_node")
    if node is None:
        from mpi4py import MPI

        node = comm.mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        comm._shm_node = node
    if node.Get_size() != comm.size:  # the same answer on every rank
        raise ValueError(f"allreduce(algorithm='shm') needs every rank on one host, but only "
                         f"{node.Get_size()} of {comm.size} ranks share memory with rank "
                         f"{comm.rank} (MPIR_CVAR_NOLOCAL=1 makes every rank its own node); use "
                         f"algorithm='hierarchical' across hosts")
    return node


def _window(comm: Any, length: int, dtype: np.dtype) -> _Window:
    """The cached window for (length, dtype), making (and evicting the oldest) if needed."""
    windows: dict[tuple[int, str], _Window] = comm.__dict__.setdefault("_shm_windows", {})
    key = (length, dtype.str)
    if key not in windows:
        node = _node_comm(comm)
        if len(windows) >= MAX_WINDOWS:  # every rank evicts the same one: calls come in order
            windows.pop(next(iter(windows))).free()
        windows[key] = _Window(node, length, dtype)
    return windows[key]


def _sync(comm: Any, window: _Window) -> None:
    """A barrier that also orders the shared memory: everything written before is visible after."""
    window.win.Sync()
    comm.barrier()  # the communicator's own barrier, under its deadline
    window.win.Sync()


def _shm_mpi(comm: Any, flat: Any, op: str, middle: Middle) -> None:
    window = _window(comm, flat.size, flat.dtype)
    segments = window.segments
    segments[comm.rank][...] = flat  # 1. copy in
    _sync(comm, window)  # 2.
    lo, hi = chunk_bounds(flat.size, comm.size)[comm.rank : comm.rank + 2]
    middle(lambda a, b: _reduce_range(comm, flat, segments, op, a, b), lo, hi)  # 3. our slice
    segments[comm.rank][lo:hi] = flat[lo:hi]  # publish it in our own segment
    _sync(comm, window)  # 4.
    _read_back(comm, flat, segments)  # 5.
    _sync(comm, window)  # 6.


def _shm_mpi_pipelined(comm: Any, flat: Any, op: str) -> None:
    shm_pipelined(comm, flat, op, staging_window(comm, _node_comm(comm)))


def shm_core(comm: Communicator, flat: Any, op: str, middle: Middle | None = None,
             form: str | None = None) -> None:
    """All-reduce the 1-D NumPy ``flat`` in place through shared memory (``allreduce``'s core).

    Under MPI, ``form="plain"`` runs the steps above on windows of N bytes per rank,
    ``"pipelined"`` (``shm_pipeline.py``) the same sums piece by piece through a small
    window; None picks pipelined up to ``MAX_RANKS`` ranks, plain beyond (and plain
    whenever ``middle`` is given).

    ``middle(reduce_range, lo, hi)``, if given, does step 3 on this rank's slice
    [lo, hi): it must call ``reduce_range(a, b)`` (from this thread) on pieces that
    cover the slice, and may work on each reduced piece before the others read it
    (default: reduce the whole slice, then divide by p for op="mean").
    """
    if type(flat) is not np.ndarray:
        raise TypeError(f"allreduce(algorithm='shm') needs a numpy array, got {type(flat).__module__}."
                        f"{type(flat).__name__} (use algorithm='ring' for device arrays)")
    if form not in (None, "plain", "pipelined"):
        raise ValueError(f"shm form must be 'plain' or 'pipelined', got {form!r}")
    if middle is not None and form == "pipelined":
        raise ValueError("the pipelined shm form has no middle hook: use form='plain'")
    if form is None:
        form = "plain" if middle is not None or comm.size > MAX_RANKS else "pipelined"
    if middle is None:
        def middle(reduce_range: Callable[[int, int], None], lo: int, hi: int) -> None:
            reduce_range(lo, hi)
            finish_mean(flat[lo:hi], comm.size, op)
    signed.check_round_the_ring(comm)  # shared memory has no tags: this message carries the call's
    if comm.backend == "threads":
        _shm_threads(comm, flat, op, middle)
    elif comm.backend == "mpi":
        if form == "pipelined":
            _shm_mpi_pipelined(comm, flat, op)
        else:
            _shm_mpi(comm, flat, op, middle)
    else:
        raise TypeError(f"allreduce(algorithm='shm') needs MPI or thread ranks, got {comm.backend!r}")


def free_windows(comm: Communicator) -> None:
    """Collective: free every shared window ``comm`` has cached (and its node communicator).

    The arrays of ``shm_arrays.shared_empty`` go with them (in the order they were made,
    the same on every rank): they must not be used after this.
    """
    for window in comm.__dict__.pop("_shm_windows", {}).values():
        window.free()
    for record in comm.__dict__.pop("_shm_arrays", {}).values():
        if record.window is not None:
            record.window.free()
        record.segments = []
    stage = comm.__dict__.pop("_shm_stage", None)
    if stage is not None:
        stage.free()
    node = comm.__dict__.pop("_shm_node", None)
    if node is not None:
        node.Free()


__all__ = ["MAX_WINDOWS", "free_windows", "shm_core"]
