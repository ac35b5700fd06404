"""The MPI backend (mpi4py) and ``world()``.

    mpiexec -n 4 python -m mpi4py my_script.py      # python -m mpi4py: abort on error

Only mpi4py's uppercase buffer methods are used (``Send``, ``Recv``,
``Isend``, ``Irecv``, ``Sendrecv``): an array goes out as its raw bytes
(``[array, MPI.BYTE]``), never pickled. A message longer than
``MAX_MESSAGE_BYTES`` (2 GiB - 1, MPI's int count limit) is split into pieces
sent one after another with the same tag; MPI keeps their order.

Threads. mpi4py initialises MPI with ``MPI_THREAD_MULTIPLE`` (check with
``MPI.Query_thread()``; ``comm.thread_multiple`` records it), so DDP may run
collectives on a background thread while the main thread computes.

Waiting. With no deadline a wait is a plain ``MPI_Wait``/``Send``/``Recv``,
during which mpi4py releases the GIL, so other threads keep running while
MPICH polls. With a deadline (``MINIPAR_COMM_TIMEOUT``) we poll ``Test``:
about 50 quick tests for low latency, then sleeps growing from 20 us to 1 ms,
each of which also hands the GIL to the other threads.

CuPy arrays are handed to MPI directly when ``MINIPAR_CUDA_AWARE_MPI=1``
says MPI can read GPU memory; otherwise they are staged through host memory,
one copy each way. (Written for GPUs; tested only for being skipped here.)
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

from minipar.comm.communicator import (
    Communicator,
    Request,
    debug_from_env,
    timeout_from_env,
)
from minipar.comm.safety import install_abort_hook, launched_rank_and_size, timeout_error

MAX_MESSAGE_BYTES = 2**31 - 1  # MPI counts are C ints; longer messages go in pieces

_world: Communicator | None = None
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
        if self.comm.timeout is None:
            MPI.Request.Waitall(self.requests, statuses)  # releases the GIL while MPI polls
        else:
            _poll(self.comm, lambda: MPI.Request.Testall(self.requests, statuses), self.verb,
                  self.peer, self.tag)
        self._complete(statuses)

    def _complete(self, statuses: list[Any]) -> None:
        """The requests finished with ``statuses``: check the received sizes, run ``finish``."""
        self.done = True
        if self.expect is not None:
            for status, nbytes in zip(statuses, self.expect):
                self.comm._check_count(status, nbytes, self.peer, self.tag)
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


def _poll(comm: MPICommunicator, test: Any, verb: str, peer: int | None, tag: int | None) -> None:
    """Call ``test()`` until it is True; CommTimeoutError past ``comm.timeout``."""
    start = time.monotonic()
    for _ in range(50):  # a quick spin catches small messages with no added latency
        if test():
            return
    pause = 20e-6
    while not test():
        waited = time.monotonic() - start
        if waited > comm.timeout:
            raise timeout_error(comm, verb, peer, tag, waited)
        time.sleep(pause)  # releases the GIL for the main thread
        pause = min(pause * 2, 1e-3)


class MPICommunicator(Communicator):
    """A Communicator over an ``mpi4py.MPI.Comm`` (``world()`` wraps COMM_WORLD)."""

    backend = "mpi"

    def __init__(self, mpi_comm: Any, timeout: float | None = None, debug: bool | None = None
                 ) -> None:
        MPI = _mpi()
        super().__init__(
            mpi_comm.Get_rank(), mpi_comm.Get_size(),
            timeout_from_env() if timeout is None else timeout,
            debug_from_env() if debug is None else debug,
        )
        self.mpi_comm = mpi_comm
        self.thread_multiple = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self.cuda_aware = os.environ.get("MINIPAR_CUDA_AWARE_MPI", "0") == "1"

    def _check_count(self, status: Any, nbytes: int, source: int, tag: int) -> None:
        got = status.Get_count(_MPI.BYTE)
        if got != nbytes:
            raise ValueError(
                f"rank {self.rank} expected {nbytes} bytes from rank {source} (tag {tag}) "
                f"but the message had {got} bytes: sizes of send and recv buffers must match"
            )

    def _truncated(self, error: Exception, nbytes: int, source: int, tag: int) -> ValueError:
        return ValueError(
            f"rank {self.rank}: the message from rank {source} (tag {tag}) is larger than "
            f"the {nbytes}-byte receive buffer ({error})"
        )

    # ----- sends ------------------------------------------------------------------------
    def _isend(self, array: Any, dest: int, tag: int) -> Request:
        if _is_cupy(array):
            array = self._device_ready(array)
        requests = [self.mpi_comm.Isend(piece, dest, tag) for piece in _byte_pieces(array)]
        return MPIRequest(self, requests, "send to", dest, tag, keep=array)

    def _send(self, array: Any, dest: int, tag: int) -> None:
        if self.timeout is not None or _is_cupy(array) or array.nbytes > MAX_MESSAGE_BYTES:
            self._isend(array, dest, tag).wait()
        else:  # the fast path: one blocking MPI_Send, GIL released inside
            self.mpi_comm.Send([array, _MPI.BYTE], dest, tag)

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
        if self.timeout is not None or _is_cupy(array) or array.nbytes > MAX_MESSAGE_BYTES:
            request = self._irecv(array, source, tag)
        else:  # the fast path: one blocking MPI_Recv
            status = _MPI.Status()
            try:
                self.mpi_comm.Recv([array, _MPI.BYTE], source, tag, status)
            except _MPI.Exception as error:
                raise self._truncated(error, array.nbytes, source, tag) from None
            self._check_count(status, array.nbytes, source, tag)
            return
        try:
            request.wait()
        except _MPI.Exception as error:
            raise self._truncated(error, array.nbytes, source, tag) from None

    def _sendrecv(self, sendbuf: Any, dest: int, recvbuf: Any, source: int, sendtag: int,
                  recvtag: int) -> None:
        if (self.timeout is None and type(sendbuf) is np.ndarray and type(recvbuf) is np.ndarray
                and sendbuf.nbytes <= MAX_MESSAGE_BYTES and recvbuf.nbytes <= MAX_MESSAGE_BYTES):
            MPI = _MPI  # the fast path: one MPI_Sendrecv, GIL released inside
            status = MPI.Status()
            try:
                self.mpi_comm.Sendrecv([sendbuf, MPI.BYTE], dest, sendtag, [recvbuf, MPI.BYTE],
                                       source, recvtag, status)
            except MPI.Exception as error:
                raise self._truncated(error, recvbuf.nbytes, source, recvtag) from None
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
        if self.timeout is None:
            self.mpi_comm.Barrier()
        else:
            request = self.mpi_comm.Ibarrier()
            _poll(self, request.Test, "reach a barrier with", None, None)

    def _host_name(self) -> str:
        return _mpi().Get_processor_name()

    def _split(self, color: int | None, key: int) -> MPICommunicator | None:
        MPI = _mpi()
        if self.timeout is not None:
            self._barrier()  # wait with a deadline until every rank arrives; then Split is quick
        sub = self.mpi_comm.Split(MPI.UNDEFINED if color is None else color, key)
        if sub == MPI.COMM_NULL:
            return None
        return MPICommunicator(sub, self.timeout, self.debug)


def world() -> Communicator:
    """This process's communicator: MPI's world under mpiexec, else a size-1 one.

    Tries mpi4py (a plain ``python x.py`` gets a size-1 MPI world); without
    mpi4py, or when MPI cannot start, returns a size-1 thread-backend
    communicator. The same object is returned on every call. Under mpiexec
    with more than one rank it installs the abort hook (see ``safety.py``).
    """
    global _world
    if _world is not None:
        return _world
    try:
        MPI = _mpi()
        comm: Communicator = MPICommunicator(MPI.COMM_WORLD)
    except ImportError:
        if launched_rank_and_size() not in (None, (0, 1)):
            raise RuntimeError(
                "this process was started by mpiexec with several ranks but mpi4py is not "
                'installed; install it with pip install -e ".[mpi]"'
            ) from None
        from minipar.comm.thread_backend import self_world

        comm = self_world()
    if comm.size > 1:
        install_abort_hook()
        if not getattr(comm, "thread_multiple", True):
            warnings.warn(
                "MPI was initialised without MPI_THREAD_MULTIPLE: do not call minipar.comm "
                "from more than one thread at a time (e.g. DDP's communication thread)",
                RuntimeWarning, stacklevel=2,
            )
    _world = comm
    return comm
