"""The MPI backend (mpi4py): MPICommunicator, a Communicator on an MPI communicator.

    mpiexec -n 4 python -m mpi4py my_script.py      # python -m mpi4py: abort on error

Only mpi4py's uppercase buffer methods are used (``Send``, ``Recv``,
``Isend``, ``Irecv``, ``Sendrecv``): an array goes out as its raw bytes
(``[array, MPI.BYTE]``), never pickled. A message longer than
``MAX_MESSAGE_BYTES`` (2 GiB - 1, MPI's int count limit) is split into pieces
sent one after another with the same tag; MPI keeps their order.

Threads. mpi4py initialises MPI with ``MPI_THREAD_MULTIPLE`` (check with
``MPI.Query_thread()``; ``comm.thread_multiple`` records it), so DDP may run
collectives on a background thread while the main thread computes.

Waiting. Every wait is a plain blocking MPI call (``MPI_Waitall``, ``Send``,
``Recv``, ``Sendrecv``, ``Barrier``), during which mpi4py releases the GIL, so
other threads keep running. Deadlines (``MINIPAR_COMM_TIMEOUT``, default 600 s)
and ranks that leave are watched by a watchdog thread (``watchdog.py``), never
by polling. An MPI error in a wait becomes a ``CommError`` naming the peer, the
operation, the tag and the sizes: ``MessageSizeError`` for MPI_ERR_TRUNCATE (a
message longer than the buffer), ``PeerError`` for anything else.

CuPy arrays are handed to MPI directly when ``MINIPAR_CUDA_AWARE_MPI=1``
says MPI can read GPU memory; otherwise they are staged through host memory,
one copy each way. (Written for GPUs; tested only for being skipped here.)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from minipar.comm import watchdog
from minipar.comm.communicator import ANY_SOURCE, ANY_TAG, Communicator, Request, Status
from minipar.comm.errors import (
    CommError,
    MessageSizeError,
    PeerError,
    check_timeout,
    debug_from_env,
    timeout_from_env,
)
from minipar.comm.safety import current_collective

MAX_MESSAGE_BYTES = 2**31 - 1  # MPI counts are C ints; longer messages go in pieces

_MPI: Any = None


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module, imported on first use (minipar works without it)."""
    global _MPI
    if _MPI is None:
        from mpi4py import MPI

        _MPI = MPI
    return _MPI


def _is_cupy(array: Any) -> bool:
    return type(array) is not np.ndarray and type(array).__module__.startswith("cupy")


def _byte_pieces(array: Any) -> list[Any]:
    """``[array, BYTE]`` buffer specs, one per piece of at most MAX_MESSAGE_BYTES."""
    MPI = _MPI
    if array.nbytes <= MAX_MESSAGE_BYTES:
        return [[array, MPI.BYTE]]
    raw = array.reshape(-1).view(np.uint8)  # same memory, counted in bytes
    return [
        [raw[start : start + MAX_MESSAGE_BYTES], MPI.BYTE]
        for start in range(0, raw.size, MAX_MESSAGE_BYTES)
    ]


class MPIRequest(Request):
    """One or more MPI requests (pieces of one message) plus what to do when done."""

    __slots__ = ("comm", "requests", "verb", "peer", "tag", "expect", "finish", "keep", "done")

    def __init__(self, comm: MPICommunicator, requests: list, verb: str, peer: int, tag: int,
                 expect: list[int] | None = None, finish: Any = None, keep: Any = None) -> None:
        self.comm, self.requests, self.verb, self.peer, self.tag = comm, requests, verb, peer, tag
        self.keep = keep  # a staged host copy must outlive the send
        self.expect = expect  # for receives: bytes each piece should bring
        self.finish = finish  # e.g. copy a staged host buffer back to the GPU
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        MPI = _MPI
        statuses = [MPI.Status() for _ in self.requests]
        nbytes = sum(self.expect) if self.expect is not None else self.keep.nbytes
        slot = watchdog.enter(self.comm, self.verb, self.peer, self.tag, nbytes)
        try:
            MPI.Request.Waitall(self.requests, statuses)  # releases the GIL while MPI waits
        except MPI.Exception as error:
            failed = [s.Get_error() for s in statuses if s.Get_error() != MPI.SUCCESS]
            raise self.comm._mpi_error(error, self.verb, self.peer, self.tag, nbytes,
                                       failed[0] if failed else None) from None
        finally:
            slot[0] = 0.0
        self._complete(statuses)

    def _complete(self, statuses: list[Any]) -> None:
        """The requests finished with ``statuses``: check the received sizes, run ``finish``."""
        self.done = True
        if self.expect is not None:
            for status, expected in zip(statuses, self.expect):
                self.comm._check_count(status, expected, self.peer, self.tag)
        if self.finish is not None:
            self.finish()

    def test(self) -> bool:
        """True once every request completed (without waiting); then as ``wait`` returned."""
        if self.done:
            return True
        statuses = [_MPI.Status() for _ in self.requests]
        if not _MPI.Request.Testall(self.requests, statuses):
            return False
        self._complete(statuses)  # Testall freed the requests: their statuses are these
        return True


class MPICommunicator(Communicator):
    """A Communicator over an ``mpi4py.MPI.Comm`` (``world()`` wraps COMM_WORLD)."""

    backend = "mpi"

    def __init__(self, mpi_comm: Any, timeout: float | None = None, debug: bool | None = None
                 ) -> None:
        MPI = _mpi()
        super().__init__(
            mpi_comm.Get_rank(), mpi_comm.Get_size(),
            timeout_from_env() if timeout is None else check_timeout(timeout),
            debug_from_env() if debug is None else debug,
        )
        self.mpi_comm = mpi_comm
        self.world_ranks = tuple(MPI.Group.Translate_ranks(  # for the watchdog: who left?
            mpi_comm.Get_group(), list(range(self.size)), MPI.COMM_WORLD.Get_group()))
        self.thread_multiple = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self.cuda_aware = os.environ.get("MINIPAR_CUDA_AWARE_MPI", "0") == "1"

    def _check_count(self, status: Any, nbytes: int, source: int, tag: int) -> None:
        got = status.Get_count(_MPI.BYTE)
        if got != nbytes:
            raise MessageSizeError(
                f"rank {self.rank} expected {nbytes} bytes from rank {source} (tag {tag}) "
                f"but the message had {got} bytes: sizes of send and recv buffers must match"
            )

    def _mpi_error(self, error: Any, verb: str, peer: int | None, tag: int | None, nbytes: int,
                   code: int | None = None) -> CommError:
        """The minipar error for an ``MPI.Exception`` raised by a wait (``code``: from a status)."""
        MPI = _mpi()
        code = error.Get_error_code() if code is None else code
        kind = MPI.Get_error_class(code)
        if kind == MPI.ERR_TRUNCATE:
            return MessageSizeError(
                f"rank {self.rank}: the message from rank {peer} (tag {tag}) is larger than the "
                f"{nbytes}-byte receive buffer (during {current_collective()})")
        return PeerError(
            f"rank {self.rank} of {self.size}: MPI failed to {verb} rank {peer} (tag {tag}, "
            f"{nbytes} bytes) during {current_collective()}: {MPI.Get_error_string(code)!r} "
            f"(error class {kind}). Has rank {peer} died or left?")

    # ----- sends ------------------------------------------------------------------------
    def _isend(self, array: Any, dest: int, tag: int) -> Request:
        if _is_cupy(array):
            array = self._device_ready(array)
        requests = [self.mpi_comm.Isend(piece, dest, tag) for piece in _byte_pieces(array)]
        return MPIRequest(self, requests, "send to", dest, tag, keep=array)

    def _send(self, array: Any, dest: int, tag: int) -> None:
        if _is_cupy(array) or array.nbytes > MAX_MESSAGE_BYTES:
            self._isend(array, dest, tag).wait()
            return
        slot = watchdog.enter(self, "send to", dest, tag, array.nbytes)
        try:  # the fast path: one blocking MPI_Send, GIL released inside
            self.mpi_comm.Send([array, _MPI.BYTE], dest, tag)
        except _MPI.Exception as error:
            raise self._mpi_error(error, "send to", dest, tag, array.nbytes) from None
        finally:
            slot[0] = 0.0

    # ----- receives ---------------------------------------------------------------------
    def _irecv(self, array: Any, source: int, tag: int) -> Request:
        finish = None
        target = array
        if _is_cupy(array) and not self.cuda_aware:
            target = np.empty(array.nbytes, dtype=np.uint8)  # staged: host buffer, then copy

            def finish() -> None:
                array.reshape(-1).view(np.uint8).set(target)

        pieces = _byte_pieces(target)
        requests = [self.mpi_comm.Irecv(piece, source, tag) for piece in pieces]
        expect = [piece[0].nbytes for piece in pieces]
        return MPIRequest(self, requests, "receive from", source, tag, expect, finish)

    def _recv(self, array: Any, source: int, tag: int) -> None:
        if _is_cupy(array) or array.nbytes > MAX_MESSAGE_BYTES:
            self._irecv(array, source, tag).wait()
            return
        got = self._recv_upto(array, source, tag)  # the fast path: one blocking MPI_Recv
        if got != array.nbytes:
            raise MessageSizeError(
                f"rank {self.rank} expected {array.nbytes} bytes from rank {source} (tag {tag}) "
                f"but the message had {got} bytes: sizes of send and recv buffers must match")

    def _recv_upto(self, box: Any, source: int, tag: int) -> int:
        """One blocking MPI_Recv of at most ``box.nbytes`` bytes into ``box``; the bytes that came."""
        MPI = _MPI
        status = MPI.Status()
        slot = watchdog.enter(self, "receive from", source, tag, box.nbytes)
        try:
            self.mpi_comm.Recv([box, MPI.BYTE], source, tag, status)
        except MPI.Exception as error:
            raise self._mpi_error(error, "receive from", source, tag, box.nbytes) from None
        finally:
            slot[0] = 0.0
        return status.Get_count(MPI.BYTE)

    def _recv_any(self, array: Any, source: int, tag: int) -> Status:
        """A wildcard receive: MPI matches it (``MPI.ANY_SOURCE``/``ANY_TAG``), its status says whence."""
        MPI = _MPI
        if array.nbytes > MAX_MESSAGE_BYTES:
            raise ValueError(f"a wildcard recv takes at most {MAX_MESSAGE_BYTES} bytes in one message, "
                             f"got a {array.nbytes}-byte buffer")
        target = array
        if _is_cupy(array) and not self.cuda_aware:
            target = np.empty(array.nbytes, dtype=np.uint8)  # staged through host memory
        mpi_source = MPI.ANY_SOURCE if source == ANY_SOURCE else source
        mpi_tag = MPI.ANY_TAG if tag == ANY_TAG else tag
        status = MPI.Status()
        peer, which = (None if source == ANY_SOURCE else source), (None if tag == ANY_TAG else tag)
        slot = watchdog.enter(self, "receive from", peer, which, array.nbytes)  # blocking, watched
        try:
            self.mpi_comm.Recv([target, MPI.BYTE], mpi_source, mpi_tag, status)
        except MPI.Exception as error:
            raise self._mpi_error(error, "receive from", peer, which, array.nbytes) from None
        finally:
            slot[0] = 0.0
        self._check_count(status, array.nbytes, status.Get_source(), status.Get_tag())
        if target is not array:
            array.reshape(-1).view(np.uint8).set(target)
        return Status(status.Get_source(), status.Get_tag(), status.Get_count(MPI.BYTE))

    def _sendrecv(self, sendbuf: Any, dest: int, recvbuf: Any, source: int, sendtag: int,
                  recvtag: int) -> None:
        if (type(sendbuf) is np.ndarray and type(recvbuf) is np.ndarray
                and sendbuf.nbytes <= MAX_MESSAGE_BYTES and recvbuf.nbytes <= MAX_MESSAGE_BYTES):
            MPI = _MPI  # the fast path: one MPI_Sendrecv, GIL released inside
            status = MPI.Status()
            slot = watchdog.enter(self, "exchange with", source, recvtag, recvbuf.nbytes)
            try:
                self.mpi_comm.Sendrecv([sendbuf, MPI.BYTE], dest, sendtag, [recvbuf, MPI.BYTE],
                                       source, recvtag, status)
            except MPI.Exception as error:
                raise self._mpi_error(error, "exchange with", source, recvtag,
                                      recvbuf.nbytes) from None
            finally:
                slot[0] = 0.0
            if status.Get_count(MPI.BYTE) != recvbuf.nbytes:
                self._check_count(status, recvbuf.nbytes, source, recvtag)
        else:
            super()._sendrecv(sendbuf, dest, recvbuf, source, sendtag, recvtag)

    def _device_ready(self, array: Any) -> Any:
        """A buffer MPI may read: the CuPy array itself if MPI is CUDA-aware, else a host copy."""
        import cupy  # only reached with a CuPy array

        if self.cuda_aware:
            cupy.cuda.get_current_stream().synchronize()  # kernels writing it must finish
            return array
        return cupy.asnumpy(array)

    # ----- collective housekeeping -----------------------------------------------------
    def _barrier(self) -> None:
        slot = watchdog.enter(self, "reach a barrier with", None, None, 0)
        try:
            self.mpi_comm.Barrier()
        finally:
            slot[0] = 0.0

    def _host_name(self) -> str:
        return _mpi().Get_processor_name()

    def _split(self, color: int | None, key: int) -> MPICommunicator | None:
        MPI = _mpi()
        slot = watchdog.enter(self, "split the communicator with", None, None, 0)
        try:
            sub = self.mpi_comm.Split(MPI.UNDEFINED if color is None else color, key)
        finally:
            slot[0] = 0.0
        if sub == MPI.COMM_NULL:
            return None
        return MPICommunicator(sub, self.timeout or 0, self.debug)
