"""The shared-memory forms' check-in: every rank posts its call's signature, and reads the others'.

Collectives made of messages catch ranks that call different things through the
messages' tags (``signature.py``): a message under another call's tag is never
taken. The shared-memory all-reduces (``shm.py``, ``shm_pipeline.py``,
``shm_arrays.py``) send no messages, so without this a rank summing float64 and
another int64 of the same length would read each other's bytes as their own, and
ranks with different lengths would walk different pieces until the deadline.

So each call starts with a check-in on a board in shared memory, one 64-byte row
per rank (MPI: a small ``MPI.Win.Allocate_shared`` window; thread ranks: a list
in their world's registry):

    1. write our call's signature (``signature.recent_signature``: name, dtype,
       length, op, root, algorithm, call number) into our row, the call number last;
    2. wait until every other row's call number has reached ours (under the
       watchdog, so a rank that never comes ends the job at the deadline);
    3. compare the rows: any difference raises ``CollectiveMismatchError`` naming
       what each rank called, on every rank alike.

Before the board, every form sends one empty message round the ring under the
call's tag (``signature.check_round_the_ring``): a rank that runs a message-based
collective instead (the ring, say) then finds a message of another call beside its
receive, and the watchdog names both within ~1.5 s, instead of the shm rank waiting
on a board (or a window allocation) that rank never reaches until the deadline.

A rank can only overwrite its row for its next call after this call is finished,
and no shm call finishes before every rank has checked in, so nobody reads a row
that is too new. Cost: a 64-byte store and a look at p - 1 rows, about a
microsecond when the others are there; the wait itself is one the first step
of every form would do anyway (thread ranks use their barrier for it).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from minipar.comm import watchdog
from minipar.comm.errors import CollectiveMismatchError
from minipar.comm.signature import SIGNATURE_BYTES, current_call, describe, recent_signature

WORDS = SIGNATURE_BYTES // 8  # int64 words per row; the last is the call number
SPINS = 200  # looks at a row before yielding the core, then naps (as shm_pipeline.py's waits)
NAP = 20e-6


class MPIBoard:
    """One row of ``WORDS`` int64 per rank in a shared window; call numbers start at -1."""

    def __init__(self, node: Any) -> None:
        from mpi4py import MPI

        p = node.Get_size()
        self.win = MPI.Win.Allocate_shared(SIGNATURE_BYTES, 8, comm=node)
        self.rows = [np.frombuffer(self.win.Shared_query(j)[0], dtype=np.int64, count=WORDS)
                     for j in range(p)]
        self.rows[node.Get_rank()][:] = -1
        self.win.Lock_all(MPI.MODE_NOCHECK)
        node.Barrier()  # every row is initialised before anyone looks

    def free(self) -> None:
        self.rows = []
        self.win.Unlock_all()
        self.win.Free()  # collective over the node


def _compare(comm: Any, rows: list[bytes]) -> None:
    """Raise on every rank alike if any rank's signature differs from rank 0's."""
    if all(row == rows[0] for row in rows):
        return
    calls = "; ".join(f"rank {j} called {describe(row)}" for j, row in enumerate(rows))
    raise CollectiveMismatchError(
        f"rank {comm.rank} of {comm.size}: the ranks' shared-memory all-reduce calls differ: {calls} "
        "(a part this rank never used shows as missing, e.g. another shared array): every rank must "
        "call the same collective with the same dtype, length, op and array, in the same order")


def check_in(comm: Any, board: MPIBoard | None = None, window: Any = None) -> bool:
    """Steps 1-3 for the collective running on ``comm``; False (and nothing done) if none is.

    MPI ranks pass their ``board``; ``window`` (an MPI window whose memory the call
    reads next) is synced too, so what the peers wrote before checking in is visible:
    a check-in is also a barrier. An inner call (no collective of its own on ``comm``,
    e.g. the host step of ``hierarchical.py``) is checked by its outer call's messages.
    """
    call = current_call(comm)
    if call is None:
        return False
    mine = recent_signature(call.tag)
    if board is None:  # thread ranks: the barrier is the wait
        world, key = comm.world, (comm.context, "shm_board")
        with world.cond:
            world.shared.setdefault(key, [b""] * comm.size)[comm.rank] = mine
        comm.barrier()
        _compare(comm, list(world.shared[key]))
        return True
    words = np.frombuffer(mine, dtype=np.int64)
    row, number = board.rows[comm.rank], int(words[-1])
    if window is not None:
        window.Sync()  # our array's stores before our check-in
    row[:-1] = words[:-1]
    board.win.Sync()
    row[-1] = number  # last: a reader that sees the number sees the rest
    for j, other in enumerate(board.rows):
        if j == comm.rank or other[-1] >= number:
            continue
        slot = watchdog.enter(comm, "check in on the shared-memory call board with", j, None, 0)
        try:
            looks = 0
            while other[-1] < number:
                looks += 1
                if looks >= SPINS:
                    time.sleep(NAP)
                elif looks % 16 == 0:
                    os.sched_yield()
        finally:
            slot[0] = 0.0
    board.win.Sync()
    if window is not None:
        window.Sync()
    _compare(comm, [other.tobytes() for other in board.rows])
    return True


def board_of(comm: Any, node: Any) -> MPIBoard:
    """``comm``'s board (made on its first shm call; ``shm.free_windows`` frees it)."""
    board = comm.__dict__.get("_shm_board")
    if board is None:
        board = comm._shm_board = MPIBoard(node)
    return board


__all__ = ["MPIBoard", "board_of", "check_in"]
