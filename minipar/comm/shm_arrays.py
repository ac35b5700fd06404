"""Arrays that live in shared memory: all-reduced where they lie, no copy in or out.

``shm.py`` and ``shm_pipeline.py`` all-reduce any array, so they first copy it into
a shared window and copy the result out again. An array *allocated* in the window
needs neither: every rank can read its peers' arrays where they are, and write into
them. (PyTorch's analogue is symmetric memory, ``torch.distributed._symmetric_memory``:
a buffer allocated on every rank of a group, which each rank can address on the others.)

    buf = shared_empty(comm, (n,), np.float32)    # collective: one segment per rank
    buf[...] = grads                              # fill it like any array
    allreduce(comm, buf, algorithm="shm")         # in place, through the others' buf

Rank c owns chunk c (``numpy.array_split`` boundaries, as in the ring):

    segment 0: [ x0 | x0 | x0 ]      1. sync: every rank's array is written
    segment 1: [ x1 | x1 | x1 ]      2. rank c, piece by piece of chunk c:
    segment 2: [ x2 | x2 | x2 ]           x_c[piece] = ((x_{c+1} + x_{c+2}) + ...) + x_c
                 c=0  c=1  c=2            x_j[piece] = x_c[piece] for every j != c
                                     3. sync: every chunk has landed in every segment

Per rank that is N bytes read (chunk c of p segments) and N written (chunk c into p
segments): 2N bytes touched, two synchronisations, no copy of the input, and one
empty message round the ring under the call's tag (the mismatch check, ``shm.py``).
The piece just summed is still in cache when it is copied to the others.
Each element is summed in its chunk's ring order, so the result is bit-identical to
``algorithm="ring"`` (and to the copying forms); op="mean" divides each piece by p
before it is copied out, as the ring's reduce-scatter owner does.

The array stays valid until ``shm.free_windows(comm)`` (collective), which frees it
with the communicator's other windows: a window is never evicted while its array may
be in use. Only the whole array is all-reduced in place (a view of part of it takes
the copying forms); allreduce puts ``shared=K`` (the array's number, the same on
every rank) in the call's signature, so ranks that pass different arrays, or one a
shared array and another a plain one, get a mismatch error instead of each other's
bytes. On thread ranks the segments are plain arrays the ranks register with their
world, and the same steps run on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.comm import signature as signed
from minipar.comm._common import chunk_bounds, finish_mean
from minipar.comm.communicator import Communicator
from minipar.comm.shm import _node_comm, _reduce_range, _Window, thread_segments
from minipar.comm.shm import _sync as window_sync

PIECE_BYTES = 256 << 10  # summed, then copied out while in cache (256 KiB-1 MiB measured alike)


class SharedArray:
    """The record behind one ``shared_empty`` array: its number and every rank's segment."""

    def __init__(self, number: int, segments: list[Any], window: Any = None) -> None:
        self.number = number
        self.segments = segments  # segments[j]: rank j's array (1-D), mapped into our memory
        self.window = window  # the shm._Window under MPI; None on thread ranks


def _registry(comm: Any) -> dict[int, SharedArray]:
    """address of our segment -> its record, per communicator."""
    return comm.__dict__.setdefault("_shm_arrays", {})


def shared_empty(comm: Communicator, shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Collective: an uninitialised C-contiguous array of ``shape`` in memory the peers can read.

    Every rank must call it with the same shape and dtype, in the same order. Needs
    MPI ranks on one host (an MPI-3 shared window) or thread ranks; raises ValueError
    otherwise. ``allreduce(comm, array, algorithm="shm")`` then works in place.
    """
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        raise ValueError(f"shared_empty: shape must be non-negative integers, got {shape!r}")
    dtype = np.dtype(dtype)
    length = int(np.prod(dims, dtype=np.int64))
    registry = _registry(comm)
    number = comm.__dict__.get("_shm_array_count", 0)  # the same count on every rank: calls are collective
    comm._shm_array_count = number + 1
    if comm.backend == "threads":
        key = (comm.context, "shared_empty", number)
        record = SharedArray(number, thread_segments(comm, key, np.empty(length, dtype=dtype)))
        comm.barrier()  # everyone has its list: the registry entry can go
        if comm.rank == 0:
            with comm.world.cond:
                del comm.world.shared[key]
    elif comm.backend == "mpi":
        window = _Window(_node_comm(comm), length, dtype)
        record = SharedArray(number, window.segments, window)
    else:
        raise TypeError(f"shared_empty needs MPI or thread ranks, got {comm.backend!r}")
    mine = record.segments[comm.rank]
    registry[mine.__array_interface__["data"][0]] = record
    return mine.reshape(dims)


def lookup(comm: Any, flat: np.ndarray) -> SharedArray | None:
    """The record if ``flat`` is the whole of one of ``comm``'s shared arrays, else None."""
    registry = comm.__dict__.get("_shm_arrays")
    if not registry or type(flat) is not np.ndarray:
        return None
    record = registry.get(flat.__array_interface__["data"][0])
    if record is None or record.segments[comm.rank].size != flat.size or \
            record.segments[comm.rank].dtype != flat.dtype:
        return None
    return record


def _sync(comm: Any, record: SharedArray) -> None:
    """Everything written before is visible after, on every rank (the communicator's barrier)."""
    if record.window is None:
        comm.barrier()
    else:
        window_sync(comm, record.window)


def allreduce_in_place(comm: Any, flat: np.ndarray, op: str, record: SharedArray) -> None:
    """Steps 1-3 above: ``flat`` is our segment of ``record`` (``allreduce``'s core for it)."""
    p, c = comm.size, comm.rank
    segments = record.segments
    lo, hi = chunk_bounds(flat.size, p)[c : c + 2]
    step = max(1, PIECE_BYTES // flat.itemsize)
    signed.check_round_the_ring(comm)  # the call's tag: mismatched ranks are named (shm.py)
    _sync(comm, record)  # 1.
    for start in range(lo, hi, step):  # 2.
        end = min(start + step, hi)
        _reduce_range(comm, flat, segments, op, start, end)  # ring order, our own operand last
        finish_mean(flat[start:end], p, op)
        for j in range(p):
            if j != c:
                segments[j][start:end] = flat[start:end]
    _sync(comm, record)  # 3.


__all__ = ["PIECE_BYTES", "SharedArray", "allreduce_in_place", "lookup", "shared_empty"]
