"""Ranks as threads in one process: ``run_local(fn, world_size)``.

    results = run_local(lambda comm: comm.rank * 10, 4)   # -> [0, 10, 20, 30]

Notebooks and fast tests use this instead of ``mpiexec``. Messages travel
through mailboxes, one per (context, source, dest, tag), kept in one
``_LocalWorld`` shared by the threads:

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
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.comm.communicator import (
    ANY_SOURCE,
    ANY_TAG,
    TAG_INTERNAL,
    Communicator,
    DeadlockError,
    MessageSizeError,
    Request,
    Status,
    check_timeout,
    debug_from_env,
    timeout_from_env,
)
from minipar.comm.safety import timeout_error

DEFAULT_TIMEOUT = 60.0  # seconds any one wait may take under run_local


class _WorldAborted(BaseException):
    """Raised in ranks still waiting after another rank failed (not an Exception,
    so ``except Exception`` in user code does not swallow it)."""


class _Mailbox:
    __slots__ = ("messages", "sent", "claimed", "stamps")

    def __init__(self) -> None:
        self.messages: dict[int, Any] = {}  # sequence number -> copied array
        self.sent = 0  # sequence number of the next message sent
        self.claimed = 0  # sequence number the next irecv will wait for
        self.stamps: dict[int, int] = {}  # unclaimed sequence number -> arrival stamp


class _LocalWorld:
    """Everything the threads of one ``run_local`` share, guarded by one Condition."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cond = threading.Condition()
        self.mailboxes: dict[tuple, _Mailbox] = {}
        self.failed_rank: int | None = None
        self.rank_threads: dict[int, int] = {}  # thread ident -> world rank
        self.finished: set[int] = set()
        self.waiting: dict[int, tuple[tuple, int, str]] = {}  # world rank -> (key, seq, text)
        self.detect_deadlocks = True
        self.split_calls: dict[tuple, int] = {}
        self.arrivals = 0  # stamp of the next message posted (for wildcard receives)
        self.host_labels: list[str] | None = None  # run_local(hosts=...): a fake host per rank
        self.shared: dict[tuple, list[Any]] = {}  # the "shm" all-reduce's registry of arrays

    def mailbox(self, key: tuple) -> _Mailbox:
        box = self.mailboxes.get(key)
        if box is None:
            box = self.mailboxes[key] = _Mailbox()
        return box

    def post(self, key: tuple, message: Any) -> None:
        with self.cond:
            box = self.mailbox(key)
            box.messages[box.sent] = message
            box.stamps[box.sent] = self.arrivals
            while box.stamps and (oldest := next(iter(box.stamps))) < box.claimed:
                del box.stamps[oldest]  # claimed by an irecv: no wildcard will look at it
            self.arrivals += 1
            box.sent += 1
            self.cond.notify_all()

    def claim(self, key: tuple) -> int:
        with self.cond:
            box = self.mailbox(key)
            box.claimed += 1
            return box.claimed - 1

    def abort(self, rank: int) -> None:
        with self.cond:
            if self.failed_rank is None:
                self.failed_rank = rank
            self.cond.notify_all()

    def rank_finished(self, rank: int) -> None:
        with self.cond:
            self.finished.add(rank)
            self.cond.notify_all()

    def take(self, comm: LocalCommunicator, key: tuple, seq: int, peer: int, tag: int) -> Any:
        """Block until message ``seq`` of mailbox ``key`` arrives; return it."""
        start = time.monotonic()
        me = comm.world_rank
        with self.cond:
            box = self.mailbox(key)
            if threading.get_ident() not in self.rank_threads:
                self.detect_deadlocks = False  # a thread we do not know may still send
            while True:
                if self.failed_rank is not None:
                    raise _WorldAborted
                if seq in box.messages:
                    return box.messages.pop(seq)
                waited = time.monotonic() - start
                if comm.timeout is not None and waited >= comm.timeout:
                    raise timeout_error(comm, "receive from", peer, tag, waited)
                self.waiting[me] = (key, seq, f"rank {comm.rank} waits for rank {peer} (tag {tag})")
                try:
                    self._raise_if_deadlocked()
                    remaining = None if comm.timeout is None else comm.timeout - waited
                    self.cond.wait(remaining)
                finally:
                    del self.waiting[me]

    def take_any(self, comm: LocalCommunicator, source: int, tag: int) -> tuple[int, int, Any]:
        """Block until a message to ``comm`` matches (wildcards allowed); ``(source, tag, array)``.

        Of the next unclaimed message of every matching mailbox, the first to arrive wins.
        """
        start = time.monotonic()
        others = {rank for rank in comm.group if rank != comm.world_rank}
        with self.cond:
            while True:
                if self.failed_rank is not None:
                    raise _WorldAborted
                best = None
                for key, box in self.mailboxes.items():
                    context, sender, dest, message_tag = key
                    if (context != comm.context or dest != comm.rank or box.claimed not in box.messages
                            or source not in (ANY_SOURCE, sender) or tag not in (ANY_TAG, message_tag)):
                        continue
                    if best is None or box.stamps[box.claimed] < best[0]:
                        best = (box.stamps[box.claimed], key, box)
                if best is not None:
                    _, (_, sender, _, message_tag), box = best
                    del box.stamps[box.claimed]
                    box.claimed += 1
                    return sender, message_tag, box.messages.pop(box.claimed - 1)
                waited = time.monotonic() - start
                peer = None if source == ANY_SOURCE else source
                if comm.timeout is not None and waited >= comm.timeout:
                    raise timeout_error(comm, "receive from", peer, None if tag == ANY_TAG else tag,
                                        waited)
                if self.detect_deadlocks and others and others <= self.finished:
                    raise DeadlockError(f"deadlock: rank {comm.rank} waits for a message from "
                                        f"{'any rank' if peer is None else f'rank {peer}'} "
                                        f"(tag {'any' if tag == ANY_TAG else tag}) but every "
                                        "other rank has finished")
                self.cond.wait(None if comm.timeout is None else comm.timeout - waited)

    def _raise_if_deadlocked(self) -> None:
        """Called with the lock held by a rank about to wait."""
        if not self.detect_deadlocks or not self.rank_threads:
            return
        live = set(self.rank_threads.values()) - self.finished
        if not live <= self.waiting.keys():
            return  # some rank is still running and may send
        for key, seq, _ in self.waiting.values():
            if seq in self.mailboxes[key].messages:
                return  # a waiter's message is there; it just has not woken yet
        story = "; ".join(text for _, _, text in self.waiting.values())
        done = sorted(self.finished)
        raise DeadlockError(
            f"deadlock: every live rank waits for a message nobody can send: {story}"
            + (f"; finished ranks (world numbering): {done}" if done else "")
        )


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

    def _recv_upto(self, box: Any, source: int, tag: int) -> int:
        key = (self.context, source, self.rank, tag)
        message = self.world.take(self, key, self.world.claim(key), source, tag)
        raw = message.reshape(-1).view(np.uint8)
        if raw.size > box.nbytes:
            raise MessageSizeError(
                f"rank {self.rank}: the message from rank {source} (tag {tag}) has {raw.size} "
                f"bytes, more than the {box.nbytes}-byte receive buffer")
        box[: raw.size] = raw
        return raw.size
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
