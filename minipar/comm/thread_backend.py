"""Ranks as threads in one process: ``run_local(fn, world_size)``.

    results = run_local(lambda comm: comm.rank * 10, 4)   # -> [0, 10, 20, 30]

Notebooks and fast tests use this instead of ``mpiexec``. Messages travel
through mailboxes, one per (context, source, dest, tag), kept in one
``_LocalWorld`` shared by the threads (``local_world.py``):

- ``send`` copies the array into the mailbox and returns at once (a buffered
  send, so the sender may reuse its buffer; MPI may block instead, so code
  that only works because sends never block will still hang under mpiexec).
- ``irecv`` takes a ticket (the n-th message on that mailbox, as MPI matches
  in posting order); ``wait`` blocks until message n is there, checks dtype
  and size (ValueError naming both), and copies it into the buffer.
- Never a hang: every wait has a deadline (``timeout``, default 60 s); when an
  exception ends one rank the world is aborted and the ranks waiting in
  ``recv`` wake up and stop; when every rank waits for a message nobody can
  still send, the last one to wait raises ``DeadlockError`` at once.
- Wildcards (``recv(array, ANY_SOURCE, ANY_TAG)``, ``take_any``): every
  message gets an arrival stamp, and a wildcard receive takes, of the next
  unclaimed message of each mailbox that matches, the one that arrived first,
  so one sender's messages keep their order across tags, as in MPI. A wildcard
  wait is bounded by its deadline; it raises ``DeadlockError`` only once every
  other rank has finished.

NumPy releases the GIL inside big array operations, so threads do overlap
real work; the Python parts take turns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.comm.communicator import TAG_INTERNAL, Communicator, Request, Status
from minipar.comm.errors import check_timeout, debug_from_env, timeout_from_env
from minipar.comm.local_world import _LocalWorld, _WorldAborted

DEFAULT_TIMEOUT = 60.0  # seconds any one wait may take under run_local


class _DoneRequest(Request):
    """A buffered send: complete as soon as it is made."""

    def wait(self) -> None:
        return None

    def test(self) -> bool:
        return True


class _LocalRecvRequest(Request):
    __slots__ = ("comm", "array", "key", "seq", "source", "tag", "done")

    def __init__(self, comm: LocalCommunicator, array: Any, key: tuple, seq: int, source: int,
                 tag: int) -> None:
        self.comm, self.array, self.key, self.seq = comm, array, key, seq
        self.source, self.tag, self.done = source, tag, False

    def wait(self) -> None:
        if self.done:
            return
        message = self.comm.world.take(self.comm, self.key, self.seq, self.source, self.tag)
        self.done = True
        array = self.array
        if message.dtype != array.dtype or message.size != array.size:
            raise ValueError(
                f"rank {self.comm.rank} received from rank {self.source} (tag {self.tag}) a "
                f"{message.dtype} array of shape {message.shape} into a buffer of dtype "
                f"{array.dtype} and shape {array.shape}: dtype and size must match"
            )
        array.reshape(-1)[...] = message.reshape(-1)

    def test(self) -> bool:
        if not self.done:
            with self.comm.world.cond:
                if self.seq not in self.comm.world.mailboxes[self.key].messages:
                    return False
            self.wait()
        return True


class LocalCommunicator(Communicator):
    """One rank of a ``run_local`` world (or the size-1 world outside mpiexec)."""

    backend = "threads"

    def __init__(self, world: _LocalWorld, context: tuple, group: tuple[int, ...], rank: int,
                 timeout: float | None, debug: bool) -> None:
        super().__init__(rank, len(group), timeout, debug)
        self.world = world
        self.context = context  # distinguishes sub-communicators' mailboxes
        self.group = group  # world rank of each rank of this communicator
        self.world_rank = group[rank]

    def _isend(self, array: Any, dest: int, tag: int) -> Request:
        self.world.post((self.context, self.rank, dest, tag), array.copy())
        return _DoneRequest()

    def _irecv(self, array: Any, source: int, tag: int) -> Request:
        key = (self.context, source, self.rank, tag)
        return _LocalRecvRequest(self, array, key, self.world.claim(key), source, tag)

    def _recv_any(self, array: Any, source: int, tag: int) -> Status:
        sender, message_tag, message = self.world.take_any(self, source, tag)
        if message.dtype != array.dtype or message.size != array.size:
            raise ValueError(
                f"rank {self.rank} received from rank {sender} (tag {message_tag}) a "
                f"{message.dtype} array of shape {message.shape} into a buffer of dtype "
                f"{array.dtype} and shape {array.shape}: dtype and size must match"
            )
        array.reshape(-1)[...] = message.reshape(-1)
        return Status(sender, message_tag, message.nbytes)

    def _barrier(self) -> None:
        # Dissemination barrier: in round k rank r signals r + 2^k and hears from r - 2^k;
        # after ceil(log2 p) rounds everyone has (indirectly) heard from everyone.
        token = np.zeros(0, dtype=np.uint8)
        distance = 1
        while distance < self.size:
            self._send(token, (self.rank + distance) % self.size, TAG_INTERNAL)
            self._recv(token, (self.rank - distance) % self.size, TAG_INTERNAL)
            distance *= 2

    def _host_name(self) -> str:
        labels = self.world.host_labels
        return super()._host_name() if labels is None else labels[self.world_rank]

    def _split(self, color: int | None, key: int) -> LocalCommunicator | None:
        # Everyone tells everyone its (color, key); color -1 stands for None.
        mine = np.array([-1 if color is None else color, key], dtype=np.int64)
        table = np.empty((self.size, 2), dtype=np.int64)
        table[self.rank] = mine
        for other in range(self.size):
            if other != self.rank:
                self._send(mine, other, TAG_INTERNAL)
        for other in range(self.size):
            if other != self.rank:
                self._recv(table[other], other, TAG_INTERNAL)
        with self.world.cond:  # the n-th split of this communicator: same n on every rank
            number = self.world.split_calls.get((self.context, self.rank), 0)
            self.world.split_calls[(self.context, self.rank)] = number + 1
        if color is None:
            return None
        members = sorted((int(k), r) for r, (c, k) in enumerate(table) if c == color)
        ranks = [r for _, r in members]
        return LocalCommunicator(
            self.world, (self.context, number, color), tuple(self.group[r] for r in ranks),
            ranks.index(self.rank), self.timeout, self.debug,
        )


def self_world() -> LocalCommunicator:
    """A size-1 communicator (what ``world()`` gives when MPI is not available)."""
    return LocalCommunicator(_LocalWorld(1), ("world",), (0,), 0, timeout_from_env(),
                             debug_from_env())


def run_local(
    fn: Callable[[Communicator], Any],
    world_size: int,
    *,
    timeout: float | None = None,
    debug: bool | None = None,
    hosts: list[Any] | None = None,
) -> list[Any]:
    """Run ``fn(comm)`` on ``world_size`` ranks, each a thread; return results by rank.

    ``timeout``: seconds any single wait may block (default ``MINIPAR_COMM_TIMEOUT``
    or 60 s; 0 or inf: no deadline) before ``CommTimeoutError``. ``debug``: fingerprint every
    collective (default ``MINIPAR_DEBUG``). ``hosts``: a host label per rank (e.g. ``[0, 0, 1, 1]``),
    what ``comm.host_name()`` then returns, to emulate several hosts. If any rank
    raises, the other ranks are woken and stopped, and the exception of the lowest
    failing rank is re-raised here with a note saying which rank raised it.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)):
        raise TypeError(f"world_size must be an int, got {type(world_size).__name__} {world_size!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    world_size = int(world_size)
    timeout = timeout_from_env(DEFAULT_TIMEOUT) if timeout is None else check_timeout(timeout)
    if debug is None:
        debug = debug_from_env()
    world = _LocalWorld(world_size)
    if hosts is not None:
        if isinstance(hosts, (str, bytes)) or len(hosts) != world_size:
            raise ValueError(f"run_local: hosts must be a list of {world_size} labels (one per "
                             f"rank), got {hosts!r}")
        world.host_labels = [str(label) for label in hosts]
    results: list[Any] = [None] * world_size
    errors: dict[int, BaseException] = {}

    def body(rank: int) -> None:
        comm = LocalCommunicator(world, ("world",), tuple(range(world_size)), rank, timeout, debug)
        try:
            results[rank] = fn(comm)
        except _WorldAborted:
            pass  # another rank failed first; its exception is the one to report
        except BaseException as exc:  # noqa: B036 - re-raised in the caller
            errors[rank] = exc
            world.abort(rank)
        finally:
            world.rank_finished(rank)

    threads = [
        threading.Thread(target=body, args=(rank,), name=f"minipar-rank-{rank}", daemon=True)
        for rank in range(world_size)
    ]
    with world.cond:  # register idents before any rank can wait
        for thread in threads:
            thread.start()
            world.rank_threads[thread.ident] = threads.index(thread)
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.05)  # short joins keep Ctrl-C working in notebooks
                if world.failed_rank is not None:
                    thread.join(timeout or DEFAULT_TIMEOUT)  # time to notice, then move on
                    break
    except BaseException:
        world.abort(-1)  # KeyboardInterrupt: wake every rank so the threads end
        raise
    if errors:
        rank = min(errors)
        exc = errors[rank]
        if hasattr(exc, "add_note"):
            exc.add_note(f"(raised on rank {rank} of {world_size} in run_local)")
        raise exc
    if world.failed_rank == -1:
        raise RuntimeError("run_local was interrupted")
    return results


__all__ = ["DEFAULT_TIMEOUT", "LocalCommunicator", "run_local", "self_world"]
