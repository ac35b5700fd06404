"""Never hangs: a watchdog thread that watches every blocking MPI wait of this process.

Waits stay plain blocking MPI calls (``MPI_Recv``, ``MPI_Waitall``,
``MPI_Sendrecv``, ``MPI_Barrier``): a communication thread blocks inside MPI
and keeps its overlap. Before it blocks, a thread writes what it waits for
into its slot (``enter``: start time, communicator, verb, peer, tag, bytes)
and clears the start when done -- a few list assignments, no lock. One
daemon thread per process wakes every ``PERIOD`` seconds and reads the slots:

- **Deadline.** A wait older than its communicator's ``timeout``
  (``MINIPAR_COMM_TIMEOUT``, default 600 s; 0 or inf: none) ends the job:
  the watchdog prints ``CommTimeoutError`` naming this rank, the peer, the
  operation, the tag, the bytes and the collective, then calls ``MPI_Abort``.
- **Departures.** When a rank's interpreter ends (its script returns, or
  ``sys.exit(n)`` with any n), an ``atexit`` hook sends every other rank a
  goodbye on a duplicated communicator of its own (so it can never be taken
  for data), then the rank enters ``MPI_Finalize`` -- which in MPICH waits for
  the others, so a rank still waiting on it would wait forever. The rule: a
  wait on a rank that has left, still blocked ``GRACE`` seconds after both the
  departure and the wait's start, ends the job naming the rank that left.
  Ranks that finish at different times are no error: a message sent before
  leaving is already here, so its wait completes within the grace.
  (``os._exit`` and signals skip atexit; MPICH's launcher ends those jobs.)

Under thread ranks (``run_local``) the waits are Condition waits with a
timeout instead (``thread_backend.py``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Any

import numpy as np

from minipar.comm import signature
from minipar.comm.events import describe_running, here

PERIOD = 0.25  # seconds between the watchdog's looks
GRACE = 2.0  # seconds a wait on a departed rank may still take (its last messages arrive)
GOODBYE_WAIT = 10.0  # seconds a leaving rank waits for the other ranks' goodbyes, then cancels
ANSWER_WITHIN = 1.5  # seconds a peer's watchdog has to say which call a tag was
TAG_GOODBYE = 1
TAG_QUERY = 2  # "which of your calls had this tag?" (an int64), answered in words
TAG_ANSWER = 3
ANSWER_BYTES = 256  # the answer: the call, described in words (its names are the peer's to know)

_slots: dict[int, list] = {}  # thread ident -> [start, (comm, verb, peer, tag, nbytes), its stack]
_mine = threading.local()


def enter(comm: Any, verb: str, peer: int | None, tag: int | None, nbytes: int) -> list:
    """Note that this thread now blocks; the caller sets ``slot[0] = 0.0`` when it returns."""
    try:
        slot = _mine.slot
    except AttributeError:  # this thread's first wait: its slot, and its collectives' stack
        slot = _mine.slot = [0.0, None, here.__dict__.setdefault("stack", [])]
        _slots[threading.get_ident()] = slot
    slot[1] = (comm, verb, peer, tag, nbytes)
    slot[0] = time.monotonic()  # last: the watchdog reads a slot only once this is set
    return slot


def describe_wait(slot: list, waited: float) -> str:
    """``rank 0 of 3 waited 2.1 s to receive from rank 1 (tag 30001, 32 bytes) during allreduce``."""
    comm, verb, peer, tag, nbytes = slot[1]
    who = f"rank {peer}" if peer is not None else "the other ranks"
    details = ", ".join(([f"tag {tag}"] if tag is not None else []) + [f"{nbytes} bytes"])
    during = describe_running(slot[2])  # slot[2]: the list the thread's Collectives push on
    return (f"rank {comm.rank} of {comm.size} waited {waited:.1f} s to {verb} {who} ({details}) "
            f"during {during}")


class Watchdog:
    """The process's watchdog: deadlines of in-flight waits, and goodbyes from other ranks."""

    def __init__(self, MPI: Any) -> None:
        self.MPI = MPI
        world = MPI.COMM_WORLD
        self.rank, self.size = world.Get_rank(), world.Get_size()
        self.control = world.Dup()  # collective: every rank creates its watchdog in world()
        self.notes = {r: np.zeros(1, dtype=np.int64) for r in range(self.size) if r != self.rank}
        self.pending = {r: self.control.Irecv(note, r, TAG_GOODBYE) for r, note in self.notes.items()}
        self.departed: dict[int, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="minipar-watchdog", daemon=True)
        self.thread.start()
        atexit.register(self.goodbye)

    def _run(self) -> None:
        while not self.stopping.wait(PERIOD):
            for rank, request in list(self.pending.items()):
                if request.Test():
                    del self.pending[rank]
                    self.departed[rank] = time.monotonic()
            self.answer_queries()
            self.check(time.monotonic())

    # ----- mismatched collectives (signature.py) ---------------------------------------------
    def answer_queries(self) -> None:
        """Tell every rank that asked which of this process's calls had the tag it names."""
        MPI, status = self.MPI, self.MPI.Status()
        while self.control.Iprobe(MPI.ANY_SOURCE, TAG_QUERY, status):
            asked = np.zeros(1, dtype=np.int64)
            self.control.Recv(asked, status.Get_source(), TAG_QUERY)
            known = signature.recent_signature(int(asked[0]))
            text = signature.describe(known).encode()[:ANSWER_BYTES] if known else b""
            answer = np.zeros(ANSWER_BYTES, dtype=np.uint8)
            answer[: len(text)] = np.frombuffer(text, dtype=np.uint8)
            self.control.Send(answer, status.Get_source(), TAG_ANSWER)

    def mismatch(self, slot: list) -> str | None:
        """For a collective's wait on a peer: the error text if the peer's pending message is another's."""
        comm, _, peer, tag, _ = slot[1]
        mpi_comm = getattr(comm, "mpi_comm", None)
        if peer is None or mpi_comm is None or not signature.is_signed(tag):
            return None
        status = self.MPI.Status()
        if not mpi_comm.Iprobe(peer, self.MPI.ANY_TAG, status):
            return None
        theirs = status.Get_tag()
        if theirs == tag or not signature.is_signed(theirs):
            return None
        asked = comm.world_ranks[peer]  # which call was it? the peer's watchdog knows
        answer = np.zeros(ANSWER_BYTES, dtype=np.uint8)
        request = self.control.Irecv(answer, asked, TAG_ANSWER)
        self.control.Send(np.array([theirs], dtype=np.int64), asked, TAG_QUERY)
        deadline = time.monotonic() + ANSWER_WITHIN
        while not request.Test():
            self.answer_queries()  # the peer may be asking us at the same moment
            if time.monotonic() > deadline:
                request.Cancel()
                answer[:] = 0
                break
            time.sleep(0.01)
        described = answer.tobytes().rstrip(b"\0").decode(errors="replace")
        error = signature.mismatch_error(comm.rank, tag, peer, theirs, described or None)
        return f"{type(error).__name__}: {error}"

    def check(self, now: float) -> None:
        for slot in list(_slots.values()):
            start, what = slot[0], slot[1]
            if not start:
                continue
            comm, peer = what[0], what[2]
            if comm.timeout is not None and now - start > comm.timeout:
                self.abort(f"CommTimeoutError: {describe_wait(slot, now - start)}; deadline is "
                           f"{comm.timeout} s (MINIPAR_COMM_TIMEOUT). Is that rank stuck, dead, or "
                           "calling something else?")
            if now - start > signature.MISMATCH_AFTER and slot[0] == start:
                text = self.mismatch(slot)
                if text is not None:
                    self.abort(text)
            peers = comm.world_ranks if peer is None else (comm.world_ranks[peer],)
            for other in peers:
                left = self.departed.get(other)
                if left is not None and now - max(start, left) > GRACE and slot[0] == start:
                    self.abort(f"rank {other} left the job (its script ended or called sys.exit) "
                               f"while {describe_wait(slot, now - start)}")

    def abort(self, text: str) -> None:
        sys.stderr.write(f"minipar: {text}; aborting every rank (MPI_Abort)\n")
        sys.stderr.flush()
        time.sleep(0.25)  # let mpiexec forward the message
        try:
            self.MPI.COMM_WORLD.Abort(1)
        finally:
            os._exit(1)

    def goodbye(self) -> None:
        """atexit: tell every other rank this one leaves; take the others' goodbyes that arrive
        within ``GOODBYE_WAIT`` seconds (ranks ending together: all of them) and cancel the rest.

        Cancelling a receive whose goodbye was already on its way left that message unmatched
        at ``MPI_Finalize`` (over TCP, UCX warns "unexpected tag-receive descriptor 0x... was not
        matched" on every rank). Waiting costs no time where it matters: MPICH's
        ``MPI_Finalize`` waits for the other ranks anyway.
        """
        self.stopping.set()
        self.thread.join()
        MPI = self.MPI
        if MPI.Is_finalized():
            return
        note = np.zeros(1, dtype=np.int64)
        sends = [self.control.Isend(note, r, TAG_GOODBYE) for r in self.notes]
        deadline = time.monotonic() + GOODBYE_WAIT
        while self.pending and time.monotonic() < deadline:
            self.pending = {r: request for r, request in self.pending.items() if not request.Test()}
            time.sleep(0.001 if self.pending else 0)
        for request in self.pending.values():
            request.Cancel()
        MPI.Request.Waitall(list(self.pending.values()) + sends)
