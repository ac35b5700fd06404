"""The per-thread modes that change what an operation records: grad mode and autocast.

Both are per thread, as in PyTorch (``run_local`` ranks and DataParallel replicas are
threads): ``no_grad()`` in one rank's thread does not switch off another's graph.

    with minipar.no_grad():           # outputs never require grad: evaluation, updates
        accuracy = (model(x).argmax(1) == y).mean()

    @minipar.no_grad()                # also a decorator, as in PyTorch
    def evaluate(model, x): ...

``autocast`` (the cast that ``minipar.amp.autocast`` switches on) lives here too, beside
grad mode, because it is the same kind of state: read by every matmul and Linear on the
hot path, set by a context manager, local to the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class _Modes(threading.local):
    """This thread's modes: grad recording on or off, and the autocast cast (None: off)."""

    grad_enabled = True
    autocast: Callable[[Any], Any] | None = None


modes = _Modes()


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return modes.grad_enabled


@contextmanager
def set_grad_enabled(enabled: bool) -> Iterator[None]:
    """Record a graph inside the block or not, then restore the mode found."""
    previous = modes.grad_enabled
    modes.grad_enabled = bool(enabled)
    try:
        yield
    finally:
        modes.grad_enabled = previous


def no_grad() -> Any:
    """Run a block (or a decorated function) without recording a graph."""
    return set_grad_enabled(False)


def enable_grad() -> Any:
    """Record a graph inside a block even when an outer ``no_grad`` is active."""
    return set_grad_enabled(True)


def autocast_cast() -> Callable[[Any], Any] | None:
    """The cast matmul and Linear apply to their operands in this thread (None: autocast off)."""
    return modes.autocast


@contextmanager
def autocast_set(cast: Callable[[Any], Any] | None) -> Iterator[None]:
    """Install ``cast`` for the block (``minipar.amp.autocast`` builds it), then restore."""
    previous = modes.autocast
    modes.autocast = cast
    try:
        yield
    finally:
        modes.autocast = previous
