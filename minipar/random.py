"""Every random draw minipar makes comes from one generator per thread.

``manual_seed(s)`` resets it; ``get_rng_state()`` / ``set_rng_state()`` save and
restore it exactly (a JSON-friendly dict, so snapshots need no pickle).

Why per thread: ``comm.run_local`` runs ranks as threads of one process, and
each rank must draw the same numbers it would draw as its own MPI process. So
each thread starts from the same default seed, like a fresh process does.
Draws for CuPy tensors are made on the host and copied, so a seed gives the
same numbers on CPU and GPU.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np

DEFAULT_SEED = 0


class _ThreadRNG(threading.local):
    def __init__(self) -> None:
        self.generator = np.random.Generator(np.random.PCG64(DEFAULT_SEED))


_rng = _ThreadRNG()


def generator() -> np.random.Generator:
    """This thread's generator (what Linear's init, Dropout and shuffling draw from)."""
    return _rng.generator


def manual_seed(seed: int) -> None:
    """Seed every random source minipar uses (in this thread / process)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _rng.generator = np.random.Generator(np.random.PCG64(int(seed)))


def get_rng_state() -> dict[str, Any]:
    """The generator's full state: ``{"bit_generator": "PCG64", "state": {...}, ...}``."""
    return copy.deepcopy(_rng.generator.bit_generator.state)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state from ``get_rng_state()``; the next draws repeat exactly."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError(
            "set_rng_state expects the dict returned by get_rng_state() "
            f"(bit_generator 'PCG64'), got {type(state).__name__}"
        )
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {k: int(v) for k, v in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }
    _rng.generator = np.random.Generator(bit_generator)
