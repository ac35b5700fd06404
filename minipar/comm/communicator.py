"""The Communicator: point-to-point messages between ranks, and what they cost.

Every collective in minipar (``collectives.py``) is written on the six calls
below, so one class is all a backend has to provide:

    send(array, dest, tag)      blocking; the sender may reuse ``array`` afterwards
    recv(array, source, tag)    blocking; fills the preallocated ``array``
    isend / irecv               start the same, return a ``Request``; ``req.wait()``
    sendrecv(sendbuf, dest, recvbuf, source)   both at once, never deadlocks
    split(color, key)           sub-communicators (like ``MPI_Comm_split``)
    barrier()                   every rank waits for every other

Two backends implement it: ``MPICommunicator`` (mpi4py, one process per rank,
launched with ``mpiexec -n 4 python -m mpi4py script.py``) and
``LocalCommunicator`` (one thread per rank inside one process, via
``run_local(fn, 4)``). Arrays in, arrays out: nothing here knows about Tensor.

Counters and the message log. ``send``, ``isend`` and ``sendrecv`` pass every
message once through ``_message``, the one event stream (``events.py``): it
adds the bytes to ``bytes_sent`` and one to ``messages_sent``, so a collective
built on them is counted for free and a test can check the theory (ring
all-reduce sends ``2(p-1)/p * N`` elements per rank), and, while a
``message_log`` or the trace listens, hands them a record of the message.
``barrier``, ``split``, the ``MINIPAR_DEBUG`` fingerprints and the collectives'
signatures (``signature.py``: a tag per call, no bytes) are uncounted.

Tags. User tags must lie in ``[0, USER_TAG_LIMIT)`` (ValueError otherwise); collectives use
the tags above, so a user's message can never be taken by a collective's receive.

Wildcards. ``recv(array, ANY_SOURCE, tag)`` takes the next matching message from
whichever rank sent one (``ANY_TAG``: whatever its tag), as MPI's wildcards do,
and returns a ``Status`` saying where it came from: a parameter server takes
pushes in the order workers send them. Messages from one sender still arrive
in the order it sent them.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from minipar.comm.events import emit_message, message_listeners

#: User point-to-point tags must be below this; collectives use the tags above it
#: (MPI guarantees tags up to 32767 on every implementation).
USER_TAG_LIMIT = 30000
TAG_COLLECTIVE = USER_TAG_LIMIT + 1  # every message of a collective
TAG_FINGERPRINT = USER_TAG_LIMIT + 2  # MINIPAR_DEBUG checks before a collective
TAG_INTERNAL = USER_TAG_LIMIT + 3  # barrier and split on the thread backend
ANY_SOURCE = -1  # recv(array, ANY_SOURCE, tag): from whichever rank sends first
ANY_TAG = -1  # recv(array, source, ANY_TAG): whatever the tag


@dataclass(frozen=True, slots=True)
class Status:
    """What a wildcard ``recv`` received: the sender's rank, the message's tag and size."""

    source: int
    tag: int
    nbytes: int


def require_communicator(comm: Any, who: str) -> None:
    """TypeError unless ``comm`` is a minipar Communicator (``world()``, ``run_local``, ``split``)."""
    if not isinstance(comm, Communicator):
        raise TypeError(f"{who} needs a minipar.comm Communicator (from world() or run_local), "
                        f"got {type(comm).__name__}")


def check_array(array: Any, what: str, writeable: bool = False) -> None:
    """TypeError unless ``array`` is a NumPy/CuPy ndarray; ValueError unless C-contiguous."""
    if type(array) is np.ndarray:  # the common case, quickly
        flags = array.flags
        if flags.c_contiguous and (flags.writeable or not writeable) and not array.dtype.hasobject:
            return
    elif not isinstance(array, np.ndarray) and not (
        type(array).__module__.startswith("cupy") and hasattr(array, "flags")
    ):
        raise TypeError(
            f"{what}: expected a numpy or cupy ndarray, got {type(array).__name__} "
            "(wrap data with numpy.asarray first)"
        )
    flags = array.flags
    if not flags.c_contiguous:
        raise ValueError(
            f"{what}: expected a C-contiguous array, got strides {array.strides} for shape "
            f"{array.shape} (pass numpy.ascontiguousarray(x), then copy back if needed)"
        )
    if writeable and not flags.writeable:
        raise ValueError(f"{what}: expected a writeable array, got a read-only one")
    if array.dtype.hasobject:
        raise TypeError(f"{what}: expected a numeric dtype, got {array.dtype} (objects cannot be sent)")


class Request:
    """A pending ``isend``/``irecv``. ``wait()`` blocks until it completes."""

    def wait(self) -> None:
        raise NotImplementedError

    def test(self) -> bool:
        """True when complete (then ``wait()`` returns at once)."""
        raise NotImplementedError


class Communicator:
    """A group of ``size`` ranks; this object is rank ``rank`` of it.

    Subclasses implement the underscored methods (no checks, no counting);
    the public methods below check arguments, count, then call them.
    ``timeout`` (seconds or None) bounds every blocking wait; past it a
    ``CommTimeoutError`` names this rank, the peer, the tag and the collective.
    """

    backend = "abstract"

    def __init__(self, rank: int, size: int, timeout: float | None, debug: bool) -> None:
        self.rank = rank
        self.size = size
        self.timeout = timeout
        self.debug = debug
        self.bytes_sent = 0
        self.messages_sent = 0
        self._counter_lock = threading.Lock()
        self._collective_calls = 0  # numbered: the signature of every collective call carries it
        self._local = threading.local()  # per-thread scratch buffers for collectives

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"

    # ----- counters ---------------------------------------------------------------
    def reset_counters(self) -> None:
        """Set ``bytes_sent`` and ``messages_sent`` back to 0."""
        with self._counter_lock:
            self.bytes_sent = 0
            self.messages_sent = 0

    def _message(self, nbytes: int, dest: int, tag: int) -> None:
        """The event stream: every counted message passes here once, before it is sent.

        The counters always read it; listeners (``message_log``, the trace) only when
        there are any, so the cost of the log when off is this one list test.
        """
        lock = self._counter_lock  # a DDP comm thread may send while the main thread does
        lock.acquire()  # (acquire/release: a third cheaper than ``with``, once per message)
        self.bytes_sent += nbytes
        self.messages_sent += 1
        lock.release()
        if message_listeners:
            emit_message(self, nbytes, dest, tag)

    # ----- argument checks --------------------------------------------------------
    def _check_peer(self, peer: int, name: str) -> None:
        if type(peer) is int and 0 <= peer < self.size:  # the common case, quickly
            return
        if not isinstance(peer, (int, np.integer)) or not 0 <= peer < self.size:
            raise ValueError(f"{name} must be a rank in [0, {self.size}), got {peer!r}")

    @staticmethod
    def _check_tag(tag: int) -> None:
        if type(tag) is int and 0 <= tag < USER_TAG_LIMIT:
            return
        if not isinstance(tag, (int, np.integer)) or not 0 <= tag < USER_TAG_LIMIT:
            raise ValueError(f"tag must be in [0, {USER_TAG_LIMIT}) (the tags above are the "
                             f"collectives'), got {tag!r}")

    # ----- public point-to-point ----------------------------------------------------
    def send(self, array: Any, dest: int, tag: int = 0) -> None:
        """Send ``array`` to rank ``dest``; when this returns ``array`` may be reused."""
        check_array(array, "send")
        self._check_peer(dest, "dest")
        self._check_tag(tag)
        self._message(array.nbytes, dest, tag)
        self._send(array, dest, tag)

    def recv(self, array: Any, source: int, tag: int = 0) -> Any:
        """Receive from rank ``source`` into the preallocated ``array``; returns it.

        With ``source=ANY_SOURCE`` or ``tag=ANY_TAG`` it returns a ``Status``
        (``source``, ``tag``, ``nbytes`` of the message that arrived) instead.
        """
        check_array(array, "recv", writeable=True)
        if source == ANY_SOURCE or tag == ANY_TAG:
            return self._recv_matching(array, source, tag)
        self._check_peer(source, "source")
        self._check_tag(tag)
        self._recv(array, source, tag)
        return array

    def _recv_matching(self, array: Any, source: int, tag: int) -> Status:
        """``recv`` with a wildcard: check the specific half, let the backend match."""
        if source != ANY_SOURCE:
            self._check_peer(source, "source")
        if tag != ANY_TAG:
            self._check_tag(tag)
        return self._recv_any(array, int(source), int(tag))

    def isend(self, array: Any, dest: int, tag: int = 0) -> Request:
        """Start sending; do not modify ``array`` until ``wait()`` returns."""
        check_array(array, "isend")
        self._check_peer(dest, "dest")
        self._check_tag(tag)
        self._message(array.nbytes, dest, tag)
        return self._isend(array, dest, tag)

    def irecv(self, array: Any, source: int, tag: int = 0) -> Request:
        """Start receiving into ``array``; it holds the message once ``wait()`` returns."""
        check_array(array, "irecv", writeable=True)
        self._check_peer(source, "source")
        self._check_tag(tag)
        return self._irecv(array, source, tag)

    def sendrecv(
        self, sendbuf: Any, dest: int, recvbuf: Any, source: int, sendtag: int = 0, recvtag: int = 0
    ) -> Any:
        """Send ``sendbuf`` to ``dest`` while receiving from ``source`` into ``recvbuf``.

        Both halves proceed together, so a ring of ranks that all call
        ``sendrecv(x, right, y, left)`` cannot deadlock. ``sendbuf`` and
        ``recvbuf`` must not overlap. Returns ``recvbuf``.
        """
        check_array(sendbuf, "sendrecv sendbuf")
        check_array(recvbuf, "sendrecv recvbuf", writeable=True)
        size = self.size
        if not (type(dest) is int and type(source) is int and 0 <= dest < size
                and 0 <= source < size and type(sendtag) is int and type(recvtag) is int
                and 0 <= sendtag < USER_TAG_LIMIT and 0 <= recvtag < USER_TAG_LIMIT):
            # the slow path: say exactly what is wrong
            self._check_peer(dest, "dest")
            self._check_peer(source, "source")
            self._check_tag(sendtag)
            self._check_tag(recvtag)
        self._message(sendbuf.nbytes, dest, sendtag)
        self._sendrecv(sendbuf, dest, recvbuf, source, sendtag, recvtag)
        return recvbuf

    def split(self, color: int | None, key: int | None = None) -> Communicator | None:
        """Collective: ranks passing the same ``color`` form a new communicator.

        Ranks are numbered by ``(key, old rank)``; ``key`` defaults to this rank.
        ``color=None`` means "in no group" and returns None. Like MPI_Comm_split.
        """
        if color is not None and (not isinstance(color, (int, np.integer)) or color < 0):
            raise ValueError(f"color must be a non-negative int or None, got {color!r}")
        if key is None:
            key = self.rank
        if not isinstance(key, (int, np.integer)):
            raise TypeError(f"key must be an int, got {type(key).__name__}")
        return self._split(color, int(key))

    def barrier(self) -> None:
        """Collective: return only once every rank has called ``barrier``."""
        self._barrier()

    def host_name(self) -> str:
        """The name of the machine this rank runs on (``MPI.Get_processor_name()`` under MPI).

        Thread ranks all run on this machine, unless ``run_local(fn, p, hosts=[...])``
        gave them labels (to try host-aware algorithms such as ``"hierarchical"``).
        """
        return self._host_name()

    # ----- what a backend implements -------------------------------------------------
    def _send(self, array: Any, dest: int, tag: int) -> None:
        self._isend(array, dest, tag).wait()

    def _recv(self, array: Any, source: int, tag: int) -> None:
        self._irecv(array, source, tag).wait()

    def _sendrecv(
        self, sendbuf: Any, dest: int, recvbuf: Any, source: int, sendtag: int, recvtag: int
    ) -> None:
        receive = self._irecv(recvbuf, source, recvtag)
        send = self._isend(sendbuf, dest, sendtag)
        receive.wait()
        send.wait()

    def _recv_any(self, array: Any, source: int, tag: int) -> Status:
        """Blocking receive where ``source`` may be ANY_SOURCE and ``tag`` ANY_TAG."""
        raise NotImplementedError(f"{type(self).__name__} has no wildcard receive")

    def _isend(self, array: Any, dest: int, tag: int) -> Request:
        raise NotImplementedError

    def _irecv(self, array: Any, source: int, tag: int) -> Request:
        raise NotImplementedError

    def _split(self, color: int | None, key: int) -> Communicator | None:
        raise NotImplementedError

    def _barrier(self) -> None:
        raise NotImplementedError

    def _host_name(self) -> str:
        return socket.gethostname()

