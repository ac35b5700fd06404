"""What every collective shares: argument checks, reduction ops, chunks, scratch space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.comm import signature as signed
from minipar.comm.communicator import Communicator, check_array
from minipar.comm.safety import Collective

#: op name -> the ufunc that combines two arrays elementwise (mean = sum, then / p)
OPS = {"sum": "add", "mean": "add", "max": "maximum", "min": "minimum"}
SMALL_SCRATCH_BYTES = 4096  # smaller receive buffers are simply allocated


def prepare(comm: Any, array: Any, what: str, op: str = "sum") -> Any:
    """Check the arguments of a collective; return a flat 1-D view of ``array``.

    Collectives work on the flat view, so an array of any shape is fine as
    long as it is C-contiguous (the view then shares its memory).
    """
    if not isinstance(comm, Communicator):
        raise TypeError(f"{what}: first argument must be a Communicator, got {type(comm).__name__}")
    check_array(array, what, writeable=True)
    if op not in OPS:
        raise ValueError(f"{what}: op must be one of {sorted(OPS)}, got {op!r}")
    if op == "mean" and array.dtype.kind in "biu":
        raise TypeError(
            f"{what}: op='mean' needs a floating or complex dtype, got {array.dtype} (an in-place "
            "integer mean would have to round; use op='sum' and divide yourself)"
        )
    return array if array.ndim == 1 else array.reshape(-1)


NUMPY_UFUNCS = {op: getattr(np, name) for op, name in OPS.items()}  # looked up once


def combiner(flat: Any, op: str) -> Callable[..., Any]:
    """The ufunc for ``op`` from the array's own module (numpy or cupy)."""
    if type(flat) is np.ndarray:
        return NUMPY_UFUNCS[op]
    return getattr(get_array_module(flat), OPS[op])


def finish_mean(flat: Any, size: int, op: str) -> None:
    """For op='mean': divide the (already identical) sums by p, the same way on every rank."""
    if op == "mean" and size > 1:
        flat /= size


def chunk_bounds(length: int, parts: int) -> list[int]:
    """Offsets of ``numpy.array_split(range(length), parts)``: chunk i is [b[i], b[i+1]).

    The first ``length % parts`` chunks hold one element more than the rest.
    """
    base, extra = divmod(length, parts)
    return [i * base + min(i, extra) for i in range(parts + 1)]


def scratch(comm: Communicator, like: Any, length: int) -> Any:
    """A reusable receive buffer of ``length`` elements of ``like``'s dtype.

    Kept per communicator and per thread and grown on demand, so repeated
    collectives neither allocate nor page-fault fresh memory on every call.
    """
    nbytes = length * like.itemsize
    if type(like) is np.ndarray:
        if nbytes <= SMALL_SCRATCH_BYTES:
            return np.empty(length, dtype=like.dtype)  # cheaper than the cache lookup
        xp = np
    else:
        xp = get_array_module(like)
    cache = comm._local.__dict__
    name = "scratch_" + xp.__name__
    raw = cache.get(name)
    if raw is None or raw.nbytes < nbytes:
        raw = cache[name] = xp.empty(nbytes, dtype=xp.uint8)
    return raw[:nbytes].view(like.dtype)


def exchange(comm: Communicator, outgoing: Any, dest: int, incoming: Any, source: int) -> None:
    """Send ``outgoing`` to ``dest`` while receiving ``incoming`` from ``source``.

    Empty buffers are skipped (both ends know the chunk sizes, so they agree),
    which keeps lengths smaller than p from sending empty messages.
    """
    if outgoing.size and incoming.size:
        signed.sendrecv(comm, outgoing, dest, incoming, source)
    elif outgoing.size:
        signed.send(comm, outgoing, dest)
    elif incoming.size:
        signed.recv(comm, incoming, source)


def run_allreduce(comm: Communicator, array: Any, op: str, name: str,
                  core: Callable[[Communicator, Any, str], None]) -> Any:
    """Check, announce (for timeouts, MINIPAR_DEBUG and the message log), run one all-reduce core.

    ``core(comm, flat, op)`` reduces the flat view in place; it only runs when
    there is something to do (p > 1 and a non-empty array).
    """
    flat = prepare(comm, array, name, op)
    with Collective(comm, name, op, flat.dtype, flat.size):
        if comm.size > 1 and flat.size > 0:
            core(comm, flat, op)
    return array
