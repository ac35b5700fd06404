"""The one event stream: every counted message and every collective call, recorded once.

    import minipar.comm as mc

    with mc.message_log(comm) as log:      # every point-to-point message comm sends
        mc.ring_allreduce(comm, x)
    log[0]   # Message(source=0, dest=1, nbytes=1048576, tag=30001,
             #         collective='ring_allreduce', step='reduce-scatter step 1/3')

One place records: ``Communicator.send``/``isend``/``sendrecv`` call
``Communicator._message``, which adds to ``bytes_sent``/``messages_sent`` (the
counters are the stream's first, always-on reader) and, only while someone
listens, builds a ``Message`` and hands it to the listeners. A collective
(``safety.Collective``) likewise hands a ``CollectiveCall`` (name, start,
end, bytes and messages it sent) to the collective listeners when it ends.
Readers of the stream: ``message_log`` (messages of one communicator), the
trace (``minipar.observe.trace`` adds a collective listener while tracing is
on: its "comm" spans) and ``MINIPAR_VERBOSE=1`` (a message log prints its
messages as they are sent):

    rank 2 -> rank 3  1,048,576 B  ring_allreduce reduce-scatter step 2/3

Cost when nobody listens: one test of a module-level list per message, and one
attribute set on the running collective per collective step (``at_step``).

Which collective and step a message belongs to is announced by the code that
sends it, on its own thread: ``Collective`` pushes itself on ``here.stack``
and the algorithms call ``at_step("reduce-scatter", 2, 3)`` before each step.
This module imports nothing else from ``minipar``; every other comm module
may import it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One point-to-point message, as its sender saw it (ranks are ranks of the communicator)."""

    source: int
    dest: int
    nbytes: int
    tag: int
    collective: str | None = None  # innermost collective running on the sending thread
    step: str | None = None  # e.g. "reduce-scatter step 2/3", when the collective announced one

    def __str__(self) -> str:
        where = " ".join(part for part in (self.collective, self.step) if part) or f"tag {self.tag}"
        return f"rank {self.source} -> rank {self.dest}  {self.nbytes:,} B  {where}"


@dataclass(frozen=True, slots=True)
class CollectiveCall:
    """One collective call on one rank: ``perf_counter`` start and end, what it sent."""

    name: str
    rank: int | None  # the world rank on thread ranks (``comm.world_rank``); None under MPI
    start: float
    end: float
    nbytes: int  # bytes this communicator sent meanwhile (read from its counters)
    messages: int
    args: dict[str, Any]  # op, dtype, length, extra: what the MINIPAR_DEBUG fingerprint names


#: Readers of the stream. Mutated in place (never rebound), so ``from ... import`` sees changes.
message_listeners: list[Callable[[Any, Message], None]] = []
collective_listeners: list[Callable[[CollectiveCall], None]] = []
_lock = threading.Lock()

# Per thread: ``here.stack``, the running collectives (outermost first), each with its
# ``label`` and the ``step`` it last announced.
here = threading.local()


def describe_running(stack: list[Any] | None) -> str:
    """``allreduce > ring_allreduce``: a thread's running collectives, for error messages."""
    return " > ".join(call.label for call in stack) if stack else "point-to-point (no collective)"


def current_step() -> str | None:
    """The step the innermost running collective on this thread announced, in words, or None."""
    stack = getattr(here, "stack", None)
    step = stack[-1].step if stack else None
    return None if step is None else f"{step[0]} step {step[1]}/{step[2]}"


def at_step(phase: str, index: int, count: int) -> None:
    """Announce that this thread's next messages belong to step ``index`` of ``count`` of ``phase``.

    Kept on the innermost running collective (so a new call starts with none), as a
    tuple, formatted only when a listener builds a Message.
    """
    stack = getattr(here, "stack", None)
    if stack:
        stack[-1].step = (phase, index, count)


def add_observer(fn: Callable[..., None], *, messages: bool = False, collectives: bool = False
                 ) -> None:
    """Make ``fn`` a reader of the stream.

    ``messages=True``: ``fn(comm, message)`` for every message any communicator sends;
    ``collectives=True``: ``fn(call)`` for every ``CollectiveCall`` as it ends.
    """
    if not (messages or collectives):
        raise ValueError("add_observer: pass messages=True and/or collectives=True")
    with _lock:
        if messages:
            message_listeners.append(fn)
        if collectives:
            collective_listeners.append(fn)


def remove_observer(fn: Callable[..., None]) -> None:
    """Stop ``fn`` reading the stream (no error if it was not reading)."""
    with _lock:
        for listeners in (message_listeners, collective_listeners):
            while fn in listeners:
                listeners.remove(fn)


def emit_message(comm: Any, nbytes: int, dest: int, tag: int) -> None:
    """Build the Message for a send and hand it to every message listener."""
    stack = getattr(here, "stack", None)
    message = Message(comm.rank, dest, nbytes, tag, stack[-1].label if stack else None,
                      current_step() if stack else None)
    for listener in tuple(message_listeners):
        listener(comm, message)


def emit_collective(call: CollectiveCall) -> None:
    for listener in tuple(collective_listeners):
        listener(call)


def verbose_from_env() -> bool:
    """True when ``MINIPAR_VERBOSE`` is set to anything but ``""``/``0``."""
    return os.environ.get("MINIPAR_VERBOSE", "0").strip() not in ("", "0")


@contextmanager
def message_log(comm: Any, verbose: bool | None = None) -> Iterator[list[Message]]:
    """``with message_log(comm) as log:`` -> ``log``, the list of every Message ``comm`` sends.

    Records the counted messages (``send``, ``isend``, ``sendrecv`` and every
    collective built on them) sent through this communicator object, from any
    thread, until the block ends. ``verbose`` (default: ``MINIPAR_VERBOSE=1``)
    also prints each one as it is sent, e.g.
    ``rank 2 -> rank 3  1,048,576 B  ring_allreduce reduce-scatter step 2/3``.
    """
    if not hasattr(comm, "_message"):
        raise TypeError(f"message_log needs a minipar.comm Communicator, got {type(comm).__name__}")
    log: list[Message] = []
    loud = verbose_from_env() if verbose is None else verbose

    def record(sender: Any, message: Message) -> None:
        if sender is comm:
            log.append(message)
            if loud:
                print(message, flush=True)

    add_observer(record, messages=True)
    try:
        yield log
    finally:
        remove_observer(record)
