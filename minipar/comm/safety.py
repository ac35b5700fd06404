"""Fail loudly, never hang: the abort hook, timeouts and collective fingerprints.

Three things turn a silent hang into an error message that names the culprit:

1. **Abort hook.** Under ``mpiexec``, an exception on one rank leaves the
   others blocked in ``recv`` forever (``python -m mpi4py`` guards only the
   main script). Importing ``minipar.comm`` in an MPI job, or calling
   ``world()``, installs ``sys.excepthook`` and ``threading.excepthook``
   handlers that print the traceback with the rank and call
   ``MPI.COMM_WORLD.Abort(1)``: every rank ends, within a second or two.
2. **Deadlines.** ``MINIPAR_COMM_TIMEOUT=seconds`` (or ``comm.timeout``)
   bounds every blocking wait; past it ``CommTimeoutError`` names this rank,
   the peer, the tag and the collective in progress (``timeout_error``).
3. **Fingerprints.** With ``MINIPAR_DEBUG=1`` every collective starts with a
   check that all ranks called the same thing: each rank sends rank 0 a short
   text (operation, dtype, length, root, call number); rank 0 compares them and
   sends the table back; on a mismatch every rank raises
   ``CollectiveMismatchError`` listing what each rank called. Costs two
   latencies per collective, so it is off by default.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from minipar.comm.communicator import TAG_FINGERPRINT, Communicator
from minipar.comm.errors import CollectiveMismatchError, CommTimeoutError
from minipar.comm.events import (
    CollectiveCall,
    collective_listeners,
    describe_running,
    emit_collective,
    here,
)
from minipar.comm.signature import sign


# ----- which collective is running on this thread -------------------------------------
def current_collective() -> str:
    """Name of the collective running on this thread, for error messages."""
    return describe_running(getattr(here, "stack", None))


class Collective:
    """``with Collective(comm, "ring_allreduce", op, dtype, length):`` names the running collective.

    The outermost collective on a thread is numbered (``comm._collective_calls``),
    signed -- ``tag``, the tag all of its messages travel under (``signature.py``)
    -- and, when ``comm.debug`` is set, fingerprinted across ranks before it starts.
    ``extra`` adds text to the fingerprint (e.g. ``"root=0"``). ``label`` (default
    ``name``) is what the message log and error messages call it, e.g.
    ``allreduce(..., algorithm="ring")`` is fingerprinted as "allreduce" but its
    messages say "ring_allreduce". While collective listeners exist (the trace),
    the call's start, end, bytes and messages go to them as a ``CollectiveCall``.
    It runs once per collective call, so it does as little as that allows.
    """

    __slots__ = ("comm", "name", "op", "dtype", "length", "extra", "label", "start", "sent", "root",
                 "tag", "step")

    def __init__(self, comm: Communicator, name: str, op: str | None, dtype: Any, length: Any,
                 extra: str = "", label: str | None = None, root: int = -1) -> None:
        self.comm = comm  # one assignment a line: no tuple is built on this hot path
        self.name = name
        self.op = op
        self.dtype = dtype
        self.length = length
        self.extra = extra
        self.label = label or name
        self.root = root
        self.tag: int | None = None  # set on the outermost call: it is this communicator's call
        self.step: tuple[str, int, int] | None = None  # announced by events.at_step
        self.start = 0.0
        if collective_listeners:  # someone reads collective calls: time it, note the counters
            self.start = time.perf_counter()
            self.sent = (comm.bytes_sent, comm.messages_sent)

    def __enter__(self) -> Collective:
        try:
            here.stack.append(self)
        except AttributeError:
            here.stack = [self]
        comm = self.comm
        local = comm._local.__dict__
        if local.get("call") is None:  # outermost on this communicator: number it, sign it
            number = comm._collective_calls = comm._collective_calls + 1
            if comm.debug and comm.size > 1:
                try:
                    check_fingerprint(comm, self.describe())
                except BaseException:
                    here.stack.pop()
                    raise
            self.tag = sign((self.name, self.op, self.dtype, self.length, self.root, self.extra),
                            number)
            local["call"] = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.tag is not None:
            self.comm._local.__dict__["call"] = None
        here.stack.pop()
        if self.start:
            comm = self.comm
            emit_collective(CollectiveCall(
                self.name, getattr(comm, "world_rank", None), self.start, time.perf_counter(),
                comm.bytes_sent - self.sent[0], comm.messages_sent - self.sent[1],
                {"op": self.op, "dtype": str(self.dtype), "length": self.length,
                 "extra": self.extra}))

    def describe(self) -> str:
        """``allreduce(op=sum, dtype=float32, length=10, algorithm=ring) call #3``."""
        fields = [f"op={self.op}"] if self.op is not None else []
        fields += [f"dtype={self.dtype}", f"length={self.length}"]
        fields += [f"root={self.root}"] if self.root >= 0 else []
        fields += [self.extra] if self.extra else []
        return f"{self.name}({', '.join(fields)}) call #{self.comm._collective_calls}"


def timeout_error(
    comm: Communicator, verb: str, peer: int | None, tag: int | None, waited: float
) -> CommTimeoutError:
    """The error for a wait that passed its deadline, naming everything we know."""
    who = f"rank {peer}" if peer is not None else "the other ranks"
    tag_text = f" (tag {tag})" if tag is not None else ""
    return CommTimeoutError(
        f"rank {comm.rank} of {comm.size} waited {waited:.1f} s to {verb} {who}{tag_text} "
        f"during {current_collective()}; deadline is {comm.timeout} s "
        "(MINIPAR_COMM_TIMEOUT). Is that rank stuck, dead, or calling something else?"
    )


# ----- MINIPAR_DEBUG fingerprints -------------------------------------------------------
FINGERPRINT_BYTES = 200  # fixed size, so the check itself can never mismatch


def _encode(text: str) -> np.ndarray:
    raw = text.encode()[:FINGERPRINT_BYTES]
    buffer = np.zeros(FINGERPRINT_BYTES, dtype=np.uint8)
    buffer[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return buffer


def _decode(buffer: np.ndarray) -> str:
    return bytes(buffer).rstrip(b"\0").decode(errors="replace")


def check_fingerprint(comm: Communicator, description: str) -> None:
    """Collective: raise CollectiveMismatchError on every rank unless all descriptions match.

    Gather to rank 0 (p-1 messages), compare, send the table back (p-1
    messages). Uses internal, uncounted messages so counters stay exact.
    """
    mine = _encode(description)
    table = np.zeros((comm.size, FINGERPRINT_BYTES), dtype=np.uint8)  # row r: rank r's call
    if comm.rank == 0:
        table[0] = mine
        requests = [comm._irecv(table[r], r, TAG_FINGERPRINT) for r in range(1, comm.size)]
        for request in requests:
            request.wait()
        for r in range(1, comm.size):
            comm._send(table, r, TAG_FINGERPRINT)
    else:
        comm._send(mine, 0, TAG_FINGERPRINT)
        comm._recv(table, 0, TAG_FINGERPRINT)
    calls = [_decode(row) for row in table]
    if any(call != calls[0] for call in calls):
        listing = "; ".join(f"rank {r} called {call}" for r, call in enumerate(calls))
        raise CollectiveMismatchError(
            f"ranks entered different collectives (seen on rank {comm.rank}, MINIPAR_DEBUG=1): "
            f"{listing}"
        )


# ----- the abort hook for MPI jobs ------------------------------------------------------
_hook_installed = False


def launched_rank_and_size() -> tuple[int, int] | None:
    """(rank, size) from the launcher's environment (MPICH/Intel, Open MPI), or None."""
    for rank_var, size_var in (
        ("PMI_RANK", "PMI_SIZE"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
    ):
        if rank_var in os.environ and size_var in os.environ:
            try:
                return int(os.environ[rank_var]), int(os.environ[size_var])
            except ValueError:
                continue
    return None


def _abort_job(kind: str, exc_type: type, exc: BaseException | None, tb: Any) -> None:
    launched = launched_rank_and_size()
    where = f"rank {launched[0]} of {launched[1]}" if launched else "an MPI rank"
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(
        f"minipar: uncaught {exc_type.__name__} in the {kind} of {where}; "
        f"aborting every rank (MPI_Abort)\n{text}"
    )
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.25)  # let mpiexec forward the traceback before MPI_Abort tears the job down
    try:
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
    finally:  # MPI could not abort: at least end this process with a failure code
        os._exit(1)


def install_abort_hook() -> None:
    """Make an uncaught exception on any thread of any rank end the whole MPI job.

    Idempotent. Called on import of ``minipar.comm`` under ``mpiexec`` (size
    > 1) and when ``world()`` returns an MPI communicator of size > 1.
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True

    def excepthook(exc_type: type, exc: BaseException, tb: Any) -> None:
        _abort_job("main thread", exc_type, exc, tb)

    def thread_excepthook(args: Any) -> None:
        if args.exc_type is SystemExit:  # a thread calling sys.exit is not an error
            return
        name = getattr(args.thread, "name", "?")
        _abort_job(f"thread {name!r}", args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
