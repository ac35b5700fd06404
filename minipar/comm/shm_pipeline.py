"""The shared-memory all-reduce of ``shm.py``, pipelined through a small staging window.

``shm.py``'s plain form copies all N bytes into a window of N bytes per rank and
walks each pass over the whole array between three barriers. At 16 MiB and p = 2
its working set (two arrays, two segments: 64 MiB) is twice this machine's L3
(32 MiB), so every pass streams from DRAM: a copy of 8 MiB by both ranks at once
runs at ~8 GB/s where a 1 MiB one stays in cache. MPICH's own Allreduce moves
its bytes through small shared cells that stay in cache.

Here the array is cut into pieces of at most ``PIECE_BYTES`` that never straddle
two of the ring's chunks (``numpy.array_split`` boundaries), and the pieces flow
through a window of ``DEPTH`` slots per rank. Every rank sums every piece:

    publish piece g (rank r, slot g % DEPTH):
      wait until every rank has read our slot of piece g - DEPTH   (done[j] >= g - DEPTH + 1)
      slot = x_r[piece g]                                           ready[r] = g + 1
    reduce piece g (of chunk c), after publishing piece g + 1 (one ahead):
      wait for every rank's ready >= g + 1
      x_r[piece g] = ((slot_{c+1} + slot_{c+2}) + ...) + slot_c   (the ring's order for chunk
                     c, reading every rank's slot in place)          done[r] = g + 1

Per rank that is one pass that copies N bytes into the window and one that
reads p N and writes N, each piece re-read a few microseconds after it was
written, while it is still in cache, and one wait per piece instead of three
barriers per call; publishing one piece ahead means a peer that runs a little
behind finds the next piece already there. At p = 2 it reads no more than the
plain form (which reads its own N, its peer's N / 2 and N / 2 of results);
from p = 3 each rank reads (p - 1) N from its peers where the plain form reads
about 2N in all, so ``shm.py`` uses this form for p <= ``MAX_RANKS`` only.

Measured (``benchmarks/shm_allreduce.py``, p = 2, 2 cores shared with other
work, load 1-3): 16 MiB 0.7-0.9x MPI.Allreduce (plain form 1.4-1.9x); 64 MiB
0.3-0.5x (plain 0.6-0.8x) -- in most runs. In some runs, for minutes at a time
and even at load 0.8, the publish copy takes 7x longer (64 MiB: ~37 ms, 1.2x MPI;
16 MiB: ~20 ms) while the same copy with no peer reading stays fast: a rank then
rewrites slot lines its peer still holds in its cache, and those invalidations
are slow in that state (no page faults, no shared core, waits < 1 ms). A ring of
16 slots (lines evicted before they are rewritten) removes the slow state at
64 MiB (~0.5x always) but costs 16 MiB its cache reuse (~1.0x); 3 slots of 1 MiB
are kept. Pieces of 512 KiB-2 MiB measured alike; 128-256 KiB pay Python's
per-piece overhead, 4 MiB falls out of L2.

The counters (``ready``, ``done``) live at the start of each rank's segment and
only grow (they count steps since the window was made), so a call needs no
trailing barrier: the next call's first wait already checks that the peers are
done with the slot it overwrites. ``MPI_Win_sync`` before each counter store and
after each load orders the data around them (MPI-3's unified model). Every
wait is registered with the communicator's watchdog (``watchdog.py``), so a rank
that never comes ends the job at the deadline instead of spinning for ever. A
waiting rank spins ``SPINS`` looks, then yields its core (``sched_yield``) for
``SPIN_SECONDS``, then naps: an idle core lets the scheduler move a descheduled
peer onto it. Same bits as ``shm.py`` and the ring: each element is summed in
its chunk's ring order.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from minipar.comm import watchdog
from minipar.comm._common import chunk_bounds, combiner, finish_mean

PIECE_BYTES = 1 << 20  # per step: small enough that the peers read it while it is in cache
DEPTH = 3  # slots per rank: one being read, one published ahead, one of slack
SPINS = 200  # unanswered looks at a counter before yielding the core
SPIN_SECONDS = 100e-6  # then yield for this long, then nap: NAP seconds at a time
NAP = 20e-6
MAX_RANKS = 2  # shm.py uses this form up to here (every rank reads (p - 1) N from its peers)
COUNTERS = 8  # int64 words at the start of each segment: ready, done, then padding
READY, DONE = 0, 1


class StagingWindow:
    """``DEPTH`` slots of ``PIECE_BYTES`` per rank after two step counters; any dtype, any N."""

    def __init__(self, node: Any) -> None:
        from mpi4py import MPI

        nbytes = COUNTERS * 8 + DEPTH * PIECE_BYTES
        self.win = MPI.Win.Allocate_shared(nbytes, 8, comm=node)
        self.raw = [np.frombuffer(self.win.Shared_query(j)[0], dtype=np.uint8, count=nbytes)
                    for j in range(node.Get_size())]
        self.counters = [raw[: COUNTERS * 8].view(np.int64) for raw in self.raw]
        self.counters[node.Get_rank()][:] = 0
        self.steps = 0  # steps run through this window so far: the same on every rank
        self.win.Lock_all(MPI.MODE_NOCHECK)  # passive epoch for the whole lifetime: Sync works
        node.Barrier()  # every rank's counters are zero before anyone looks at them

    def slot(self, rank: int, step: int, length: int, dtype: np.dtype) -> Any:
        """``rank``'s slot for global ``step``: its first ``length`` elements as ``dtype``."""
        start = COUNTERS * 8 + (step % DEPTH) * PIECE_BYTES
        return self.raw[rank][start : start + length * dtype.itemsize].view(dtype)

    def free(self) -> None:
        self.raw, self.counters = [], []
        self.win.Unlock_all()
        self.win.Free()  # collective over the node


def pieces(length: int, p: int, itemsize: int) -> list[tuple[int, int, int]]:
    """(chunk, start, end) of every piece, chunk by chunk: the same list on every rank."""
    bounds, most = chunk_bounds(length, p), PIECE_BYTES // itemsize
    return [(c, lo, min(lo + most, bounds[c + 1]))
            for c in range(p) for lo in range(bounds[c], bounds[c + 1], most)]


def _wait(comm: Any, window: StagingWindow, which: int, target: int) -> None:
    """Spin until every other rank's counter ``which`` reaches ``target`` (under the watchdog)."""
    for j, counter in enumerate(window.counters):
        if j == comm.rank or counter[which] >= target:
            continue
        slot = watchdog.enter(comm, "read the shared-memory step counter of", j, None, 0)
        try:
            looks, since = 0, time.perf_counter()
            while counter[which] < target:
                looks += 1
                if looks >= SPINS:
                    if NAP and time.perf_counter() - since > SPIN_SECONDS:
                        time.sleep(NAP)  # an idle core: the scheduler can move the peer here
                    else:
                        os.sched_yield()
        finally:
            slot[0] = 0.0
    window.win.Sync()  # what the peers wrote before their counter store is visible now


def _announce(window: StagingWindow, rank: int, which: int, value: int) -> None:
    window.win.Sync()  # our data stores are visible before the counter store
    window.counters[rank][which] = value


def shm_pipelined(comm: Any, flat: Any, op: str, window: StagingWindow) -> None:
    """All-reduce the 1-D NumPy ``flat`` in place, piece by piece through ``window``."""
    p, r = comm.size, comm.rank
    combine, dtype = combiner(flat, op), flat.dtype
    if dtype.itemsize > PIECE_BYTES:
        raise TypeError(f"allreduce(algorithm='shm'): items of {dtype.itemsize} bytes do not fit "
                        f"a {PIECE_BYTES}-byte slot")
    todo = pieces(flat.size, p, dtype.itemsize)
    base = window.steps
    window.steps += len(todo)
    most = PIECE_BYTES // dtype.itemsize  # whole slots as dtype, once per call: slicing is cheaper
    slots = [[window.slot(j, d, most, dtype) for j in range(p)] for d in range(DEPTH)]

    def publish(step: int) -> None:  # steps 1 and 2 for piece ``step`` of this call
        g, (_, lo, hi) = base + step, todo[step]
        _wait(comm, window, DONE, g - DEPTH + 1)  # nobody reads our slot g % DEPTH any more
        slots[g % DEPTH][r][: hi - lo] = flat[lo:hi]
        _announce(window, r, READY, g + 1)

    if todo:
        publish(0)
    for step, (c, lo, hi) in enumerate(todo):
        g = base + step  # the global step: counters and slots continue across calls
        if step + 1 < len(todo):
            publish(step + 1)  # one piece ahead: a peer a little behind finds it ready
        _wait(comm, window, READY, g + 1)  # 3.
        # 4. The ring's order for chunk c: x_{c+1} + x_{c+2}, ..., and x_c last; our own
        #    value is read from our slot, so the sum may be written straight into the piece.
        piece, slot = flat[lo:hi], slots[g % DEPTH]
        first, *rest = [slot[(c + k) % p][: hi - lo] for k in range(1, p + 1)]
        combine(first, rest[0], out=piece)
        for operand in rest[1:]:
            combine(piece, operand, out=piece)
        finish_mean(piece, p, op)
        _announce(window, r, DONE, g + 1)


def staging_window(comm: Any, node: Any) -> StagingWindow:
    """``comm``'s staging window (one per communicator, for every size and dtype), made once."""
    window = comm.__dict__.get("_shm_stage")
    if window is None:
        window = comm._shm_stage = StagingWindow(node)
    return window


__all__ = ["DEPTH", "MAX_RANKS", "PIECE_BYTES", "StagingWindow", "pieces", "shm_pipelined",
           "staging_window"]
