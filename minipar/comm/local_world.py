"""The shared mailboxes of in-process ranks: the one ``_LocalWorld`` that ``run_local``'s
threads send through (``thread_backend.py`` says how messages travel and are matched).

One mailbox per (context, source, dest, tag): ``post`` appends a message with an arrival
stamp, ``claim`` hands out tickets in posting order (MPI's matching), ``take`` waits for a
ticket's message under the deadline, ``take_any`` serves wildcard receives (the earliest
matching arrival), and ``abort`` / ``rank_finished`` wake waiters so nothing ever hangs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from minipar.comm.communicator import ANY_SOURCE, ANY_TAG
from minipar.comm.errors import DeadlockError
from minipar.comm.safety import timeout_error
from minipar.comm.signature import is_signed, mismatch_error


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

    def take(self, comm: Any, key: tuple, seq: int, peer: int, tag: int) -> Any:
        """Block until message ``seq`` of mailbox ``key`` arrives; return it."""
        start = time.monotonic()
        me = comm.world_rank
        with self.cond:
            box = self.mailbox(key)
            known = threading.get_ident() in self.rank_threads
            if not known:
                self.detect_deadlocks = False  # a thread we do not know may still send
            while True:
                if self.failed_rank is not None:
                    raise _WorldAborted
                if seq in box.messages:
                    message = box.messages.pop(seq)
                    if not box.messages and box.sent == box.claimed:
                        del self.mailboxes[key]  # every call has tags of its own: drop spent boxes
                    return message
                if is_signed(tag):  # a collective: is the peer's message under another call's tag?
                    other = self._other_call(key)
                    if other is not None:
                        raise mismatch_error(comm.rank, tag, peer, other)
                waited = time.monotonic() - start
                if comm.timeout is not None and waited >= comm.timeout:
                    raise timeout_error(comm, "receive from", peer, tag, waited)
                if not known:  # a rank's helper thread (its main thread may be waiting too)
                    self.cond.wait(None if comm.timeout is None else comm.timeout - waited)
                    continue
                self.waiting[me] = (key, seq, f"rank {comm.rank} waits for rank {peer} (tag {tag})")
                try:
                    self._raise_if_deadlocked()
                    remaining = None if comm.timeout is None else comm.timeout - waited
                    self.cond.wait(remaining)
                finally:
                    del self.waiting[me]

    def take_any(self, comm: Any, source: int, tag: int) -> tuple[int, int, Any]:
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

    def _other_call(self, key: tuple) -> int | None:
        """The tag of an unclaimed message from ``key``'s source to its dest under another
        collective call's tag (the mismatch ``signature.py`` describes), or None."""
        context, source, dest, tag = key
        for (c, s, d, t), box in self.mailboxes.items():
            if t != tag and s == source and d == dest and c == context and is_signed(t) \
                    and box.sent > box.claimed:
                return t
        return None

    def _raise_if_deadlocked(self) -> None:
        """Called with the lock held by a rank about to wait."""
        if not self.detect_deadlocks or not self.rank_threads:
            return
        live = set(self.rank_threads.values()) - self.finished
        if not live <= self.waiting.keys():
            return  # some rank is still running and may send
        for key, seq, _ in self.waiting.values():
            if seq in self.mailbox(key).messages:
                return  # a waiter's message is there; it just has not woken yet
        for key, _, _ in self.waiting.values():  # a mismatch explains it better than "deadlock"
            other = self._other_call(key) if is_signed(key[3]) else None
            if other is not None:
                raise mismatch_error(key[2], key[3], key[1], other)
        story = "; ".join(text for _, _, text in self.waiting.values())
        done = sorted(self.finished)
        raise DeadlockError(
            f"deadlock: every live rank waits for a message nobody can send: {story}"
            + (f"; finished ranks (world numbering): {done}" if done else "")
        )
