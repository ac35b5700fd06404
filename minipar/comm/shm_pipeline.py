"""The shared-memory all-reduce of ``shm.py``, pipelined through a small staging window.

``shm.py``'s plain form copies all N bytes into a window of N bytes per rank and
walks each pass over the whole array between three barriers. At 16 MiB and p = 2
its working set (two arrays, two segments: 64 MiB) was twice the L3 of the host
this was first measured on (32 MiB), so every pass streamed from DRAM: a copy of 8 MiB by both ranks at once
runs at ~8 GB/s where a 1 MiB one stays in cache. MPICH's own Allreduce moves
its bytes through small shared cells that stay in cache.

Here each of the ring's chunks (``numpy.array_split`` boundaries; chunk c belongs
to rank c) is cut into pieces of at most ``PIECE_BYTES``, and the pieces flow, one
round at a time, through a window of ``DEPTH`` rounds of p slots per rank: a
reduce-scatter and an all-gather, piece by piece. In round k, rank r

    1. publishes: its piece k of every other chunk c into its slot (k, c)   ready[r] = k + 1
       (after waiting until every rank is done with round k - DEPTH:       done[j] >= k - DEPTH + 1)
    2. sums its own chunk's piece k, once every rank is ready:
       x_r[piece] = ((x_{r+1} + x_{r+2}) + ...) + x_r   the others read from their slots
                    (r, the ring's order for chunk r), and copies the sum into its own
                    slot (k, r)                                             result[r] = k + 1
    3. reads back every other owner's sum, from its slot (k, j)            done[r] = k + 1

publishing round k + 1 before it sums round k, so a peer a little behind finds the
next round ready. Per rank that is (p-1)/p N bytes published, N/p summed from p
operands, N/p copied out and (p-1)/p N read back: at p = 2 four passes of N/2, each
over pieces still in cache, and three waits a round instead of three barriers.

The form before this one had every rank sum every piece (copy N in, read p N, write
N: five passes of N/2 at p = 2). Measured side by side (p = 2, float32, pinned
ranks, 21 interleaved rounds, four runs): 4 MiB 0.52-0.69x MPI.Allreduce (before
0.71-0.85x), 16 MiB 0.60-1.01x (0.74-1.15x), 64 MiB 0.24-0.47x (0.29-0.53x); its
16 MiB median moves with the machine's state more than with the form. Where the
time goes at 16 MiB (one rank, per call): publish copy 0.96 ms, sum 0.53, copy of
the sum 0.70, read back 0.42, waits 0.7: the copies into slots that the peer has
just read run at 9-12 GB/s (its cache holds those lines; each store invalidates
them), the read back at 20 GB/s. Pieces of 256 KiB-1 MiB measured alike within
that spread; 512 KiB is kept (3 MiB of slots per rank at p = 2). On a later host
(2026-12-02, lscpu: 480 MiB of L3, 15 rounds each, one run) 256 KiB gave 0.82x,
512 KiB 0.74x, 1 MiB 0.93x and 2 MiB 0.96x MPI.Allreduce at 16 MiB float32; the
shared arrays of ``shm_arrays.py``, which skip the publish and read-back copies,
0.37-0.41x in the same runs.

The counters (``ready``, ``result``, ``done``) live at the start of each rank's segment and
only grow (they count rounds since the window was made), so a call needs no
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

PIECE_BYTES = 1 << 19  # per slot: small enough that the peers read it while it is in cache
DEPTH = 3  # rounds of slots per rank: one being read, one published ahead, one of slack
SPINS = 200  # unanswered looks at a counter before yielding the core
SPIN_SECONDS = 100e-6  # then yield for this long, then nap: NAP seconds at a time
NAP = 20e-6
MAX_RANKS = 2  # shm.py uses this form up to here (measured at p = 2 only: 2 cores)
COUNTERS = 8  # int64 words at the start of each segment: ready, result, done, padding
READY, RESULT, DONE = 0, 1, 2


class StagingWindow:
    """``DEPTH`` rounds of p slots of ``PIECE_BYTES`` per rank after the step counters."""

    def __init__(self, node: Any) -> None:
        from mpi4py import MPI

        self.p = p = node.Get_size()
        nbytes = COUNTERS * 8 + DEPTH * p * PIECE_BYTES
        self.win = MPI.Win.Allocate_shared(nbytes, 8, comm=node)
        self.raw = [np.frombuffer(self.win.Shared_query(j)[0], dtype=np.uint8, count=nbytes)
                    for j in range(p)]
        self.counters = [raw[: COUNTERS * 8].view(np.int64) for raw in self.raw]
        self.counters[node.Get_rank()][:] = 0
        self.steps = 0  # rounds run through this window so far: the same on every rank
        self.win.Lock_all(MPI.MODE_NOCHECK)  # passive epoch for the whole lifetime: Sync works
        node.Barrier()  # every rank's counters are zero before anyone looks at them

    def slot(self, rank: int, depth: int, chunk: int, length: int, dtype: np.dtype) -> Any:
        """``rank``'s slot for ``chunk`` in round ``depth``: its first ``length`` elements."""
        start = COUNTERS * 8 + (depth * self.p + chunk) * PIECE_BYTES
        return self.raw[rank][start : start + length * dtype.itemsize].view(dtype)

    def free(self) -> None:
        self.raw, self.counters = [], []
        self.win.Unlock_all()
        self.win.Free()  # collective over the node


def pieces(length: int, p: int, itemsize: int) -> list[list[tuple[int, int]]]:
    """Round k's piece of every chunk: ``[[(lo, hi) for chunk c] for round k]``, the same on every rank.

    Piece k of chunk c is ``[bounds[c] + k m, bounds[c] + (k + 1) m)`` clipped to the chunk
    (m = ``PIECE_BYTES`` / itemsize elements); a chunk with fewer pieces gets empty ones.
    """
    bounds, most = chunk_bounds(length, p), PIECE_BYTES // itemsize
    rounds = max(-(-(bounds[c + 1] - bounds[c]) // most) for c in range(p))
    return [[(min(bounds[c] + k * most, bounds[c + 1]), min(bounds[c] + (k + 1) * most, bounds[c + 1]))
             for c in range(p)] for k in range(rounds)]


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
    """All-reduce the 1-D NumPy ``flat`` in place, round by round through ``window``."""
    p, r = comm.size, comm.rank
    combine, dtype = combiner(flat, op), flat.dtype
    if dtype.itemsize > PIECE_BYTES:
        raise TypeError(f"allreduce(algorithm='shm'): items of {dtype.itemsize} bytes do not fit "
                        f"a {PIECE_BYTES}-byte slot")
    todo = pieces(flat.size, p, dtype.itemsize)
    base = window.steps
    window.steps += len(todo)
    most = PIECE_BYTES // dtype.itemsize  # whole slots as dtype, once per call: slicing is cheaper
    slots = [[[window.slot(j, d, c, most, dtype) for c in range(p)] for j in range(p)]
             for d in range(DEPTH)]  # slots[d][j][c]: rank j's slot for chunk c, round d

    def publish(k: int) -> None:  # 1. our pieces of the others' chunks, for their owners
        g = base + k
        _wait(comm, window, DONE, g - DEPTH + 1)  # every rank is done with round g - DEPTH
        mine = slots[g % DEPTH][r]
        for c, (lo, hi) in enumerate(todo[k]):
            if c != r:
                mine[c][: hi - lo] = flat[lo:hi]
        _announce(window, r, READY, g + 1)

    if todo:
        publish(0)
    for k, round_pieces in enumerate(todo):
        g = base + k  # the global round: counters and slots continue across calls
        if k + 1 < len(todo):
            publish(k + 1)  # one round ahead: a peer a little behind finds it ready
        slot = slots[g % DEPTH]
        lo, hi = round_pieces[r]
        piece = flat[lo:hi]
        _wait(comm, window, READY, g + 1)
        # 2. Our chunk's piece in the ring's order: x_{r+1} + x_{r+2} + ... and our own x_r
        #    last, the others read from their slots for chunk r; the sum goes into our own
        #    slot for chunk r, where every other rank reads it.
        mine = slot[r][r][: hi - lo]  # free until we announce the result: a place to add up
        acc, *others = [slot[(r + s) % p][r][: hi - lo] for s in range(1, p)]
        for operand in others:  # p > 2: (x_{r+1} + x_{r+2}) + ... before our own
            combine(acc, operand, out=mine)
            acc = mine
        combine(acc, piece, out=piece)  # + x_r, last
        finish_mean(piece, p, op)
        mine[...] = piece
        _announce(window, r, RESULT, g + 1)
        _wait(comm, window, RESULT, g + 1)  # 3. every owner's sum of this round
        for j, (lo, hi) in enumerate(round_pieces):
            if j != r:
                flat[lo:hi] = slot[j][j][: hi - lo]
        _announce(window, r, DONE, g + 1)


def staging_window(comm: Any, node: Any) -> StagingWindow:
    """``comm``'s staging window (one per communicator, for every size and dtype), made once."""
    window = comm.__dict__.get("_shm_stage")
    if window is None:
        window = comm._shm_stage = StagingWindow(node)
    return window


__all__ = ["DEPTH", "MAX_RANKS", "PIECE_BYTES", "StagingWindow", "pieces", "shm_pipelined",
           "staging_window"]
