"""What can go wrong in communication, by name, and how long a wait may take.

Every error minipar.comm raises about communication is a ``CommError``; the
subclasses say what happened and also derive from the builtin a caller would
catch (``TimeoutError`` for a deadline, ``ValueError`` for bad input such as
mismatched collectives or buffer sizes). Deadlines come from
``MINIPAR_COMM_TIMEOUT`` (``timeout_from_env``; default ``DEFAULT_DEADLINE`` =
600 s, ``0``/``inf``/``none``: no deadline) or a ``timeout=`` argument
(``check_timeout``). Imported by ``communicator.py``, which re-exports them.
"""

from __future__ import annotations

import os
from typing import Any


class CommError(RuntimeError):
    """Base class of the errors minipar.comm raises about communication."""


class CommTimeoutError(CommError, TimeoutError):
    """A blocking wait passed its deadline (``MINIPAR_COMM_TIMEOUT`` or ``timeout=``)."""


class CollectiveMismatchError(CommError, ValueError):
    """Ranks entered different collectives (or dtypes, lengths, ops, roots): bad input."""


class DeadlockError(CommError):
    """Thread backend only: every rank waits for a message nobody can still send."""


class MessageSizeError(CommError, ValueError):
    """A message was longer or shorter than the receive buffer (MPI_ERR_TRUNCATE, or a count)."""


class PeerError(CommError):
    """MPI failed a wait for another reason than the size: the peer may have died or left."""


#: Seconds a blocking wait may take by default (PyTorch's process groups also default to 10 min)
DEFAULT_DEADLINE = 600.0
NO_DEADLINE = ("0", "inf", "infinity", "none")


def timeout_from_env(default: float | None = DEFAULT_DEADLINE) -> float | None:
    """Seconds from ``MINIPAR_COMM_TIMEOUT``: unset or empty -> ``default``; 0/inf/none -> None."""
    text = os.environ.get("MINIPAR_COMM_TIMEOUT", "").strip()
    if not text:
        return default
    return check_timeout(text, "MINIPAR_COMM_TIMEOUT")


def check_timeout(value: Any, what: str = "timeout") -> float | None:
    """A deadline in seconds, or None for none (``0``, ``inf``, ``"none"``); ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() in NO_DEADLINE:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds (0 or inf: no deadline), got "
                         f"{value!r}") from None
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{what} must be a positive number of seconds (0 or inf: no deadline), "
                         f"got {value!r}")
    return None if seconds in (0.0, float("inf")) else seconds


def debug_from_env() -> bool:
    """True when ``MINIPAR_DEBUG`` is set to anything but ``""``/``0``."""
    return os.environ.get("MINIPAR_DEBUG", "0").strip() not in ("", "0")


__all__ = ["DEFAULT_DEADLINE", "NO_DEADLINE", "CollectiveMismatchError", "CommError", "CommTimeoutError",
           "DeadlockError", "MessageSizeError", "PeerError", "check_timeout", "debug_from_env",
           "timeout_from_env"]
