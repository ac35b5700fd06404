"""Collectives, built only on the Communicator's point-to-point calls.

All work in place on a C-contiguous NumPy or CuPy array of any shape and any
length (0 and lengths below p included), for any number of ranks p, and
return the array. Results are bit-identical on every rank: each element's
final value is computed by one rank (or by every rank from the same operands
in the same order) and then copied. ``op`` is sum, mean, max or min; mean is
the sum divided by p, floating dtypes only.

Cost model: a message of n bytes takes ``alpha + n beta`` (latency, inverse
bandwidth); reducing n bytes takes ``n gamma``; N is the array's size in bytes.

    algorithm            time                                         bytes sent per rank
    naive (root 0)       2(p-1)(alpha + N beta) + (p-1) N gamma       root (p-1) N, others N
    tree (binomial)      2 L (alpha + N beta) + L N gamma, L=ceil(log2 p)  at most L N
    recursive doubling   L (alpha + N beta + N gamma), +2(alpha + N beta) if p not 2^k   ~ L N
    ring                 2(p-1) alpha + 2(p-1)/p N beta + (p-1)/p N gamma   2(p-1)/p N

The ring's bandwidth term does not grow with p, so it wins for big arrays;
recursive doubling has the fewest latencies, so it wins for small ones.
``allreduce(..., algorithm="auto")`` picks whichever the fitted cost model
(``auto.py``: alpha and beta per link kind, a per-call overhead) predicts
fastest, and falls back to a switch at ``AUTO_SMALL_BYTES`` without one.
These formulas are computed in one place, ``minipar/observe/cost/model.py`` (the scale
model that lesson 13 and ``minipar cost`` evaluate); the table here is their summary.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from minipar.comm import auto, shm_arrays
from minipar.comm import signature as signed
from minipar.comm._common import (
    combiner,
    finish_mean,
    prepare,
    run_allreduce,
    scratch,
)
from minipar.comm.auto import AUTO_SMALL_BYTES
from minipar.comm.communicator import Communicator, require_communicator
from minipar.comm.hierarchical import INTRA_HOST, hierarchical_core
from minipar.comm.ring import allgather, reduce_scatter, ring_allreduce, ring_allreduce_in_slabs
from minipar.comm.safety import Collective
from minipar.comm.shm import shm_core


def broadcast(comm: Communicator, array: Any, root: int = 0) -> Any:
    """Copy ``root``'s array to every rank, along a binomial tree; returns ``array``.

    Number ranks relative to the root, v = (rank - root) mod p. In round k
    (k = 0, 1, ...) every rank v < 2^k, which already has the data, sends it to
    v + 2^k, so the number of ranks holding it doubles each round.
    Cost ``ceil(log2 p) (alpha + N beta)``; a rank sends N bytes to each of its
    children (the root: ceil(log2 p) times N).
    """
    flat = prepare(comm, array, "broadcast")
    if not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"broadcast: root must be a rank in [0, {comm.size}), got {root!r}")
    with Collective(comm, "broadcast", None, flat.dtype, flat.size, root=int(root)):
        signed.check_round_the_ring(comm)  # two ranks that both think they are root only send
        _broadcast(comm, flat, int(root))
    return array


def _broadcast(comm: Communicator, flat: Any, root: int) -> None:
    p = comm.size
    if p == 1 or flat.size == 0:
        return
    relative = (comm.rank - root) % p
    # Receive from the parent: the rank that differs from us in our lowest set bit.
    mask = 1
    while mask < p:
        if relative & mask:
            signed.recv(comm, flat, (relative - mask + root) % p)
            break
        mask <<= 1
    # Send to the children: relative + 2^k for every 2^k below that bit (biggest first).
    mask >>= 1
    while mask > 0:
        if relative + mask < p:
            signed.send(comm, flat, (relative + mask + root) % p)
        mask >>= 1


def naive_allreduce(comm: Communicator, array: Any, op: str = "sum") -> Any:
    """The baseline: every rank sends its array to rank 0, which reduces and sends back.

    Rank 0 receives p - 1 arrays, one after another, then sends p - 1 copies:
    its link carries 2(p-1) N bytes while the others idle, so the time grows
    linearly with p: ``2(p-1)(alpha + N beta) + (p-1) N gamma``. Bytes sent
    per rank: rank 0 (p-1) N, every other rank N.
    """
    return run_allreduce(comm, array, op, "naive_allreduce", _naive)


def _naive(comm: Communicator, flat: Any, op: str) -> None:
    if comm.rank == 0:
        combine = combiner(flat, op)
        incoming = scratch(comm, flat, flat.size)
        for source in range(1, comm.size):  # a fixed order: ((x0 + x1) + x2) + ...
            signed.recv(comm, incoming, source)
            combine(flat, incoming, out=flat)
        finish_mean(flat, comm.size, op)
        for dest in range(1, comm.size):
            signed.send(comm, flat, dest)
    else:
        signed.send(comm, flat, 0)
        signed.recv(comm, flat, 0)  # already divided by rank 0 for op="mean"


def tree_allreduce(comm: Communicator, array: Any, op: str = "sum") -> Any:
    """Binomial-tree reduce to rank 0, then binomial-tree broadcast.

    Reduce: in round k (mask 2^k) every rank with bit k set sends its partial
    result to rank - 2^k and drops out; the receiver combines. After
    L = ceil(log2 p) rounds rank 0 holds the result, which the broadcast sends
    back down the same tree. Cost ``2 L (alpha + N beta) + L N gamma``: fewer
    latencies than naive, but every round moves the whole array.
    """
    return run_allreduce(comm, array, op, "tree_allreduce", _tree)


def _tree(comm: Communicator, flat: Any, op: str) -> None:
    combine = combiner(flat, op)
    rank, mask = comm.rank, 1
    while mask < comm.size:
        if rank & mask:  # hand our partial result down the tree and stop
            signed.send(comm, flat, rank - mask)
            break
        if rank + mask < comm.size:
            incoming = scratch(comm, flat, flat.size)
            signed.recv(comm, incoming, rank + mask)
            combine(flat, incoming, out=flat)  # the lower rank's data first, always
        mask <<= 1
    if rank == 0:
        finish_mean(flat, comm.size, op)
    _broadcast(comm, flat, 0)


def recursive_doubling_allreduce(comm: Communicator, array: Any, op: str = "sum") -> Any:
    """Latency-optimal all-reduce: in round k, rank r swaps arrays with rank r XOR 2^k.

    After round k every rank holds the combination of its block of 2^(k+1)
    ranks, so log2 p rounds suffice. Both partners compute ``combine(lower
    rank's value, higher rank's value)``: the same operands in the same order,
    hence the same bits. When p is not a power of two, the first 2*rem ranks
    (rem = p - 2^floor(log2 p)) first pair up (even sends to odd, which
    combines), the rest double, and the odd ranks send the result back.
    Cost ``L (alpha + N beta + N gamma)`` (+ ``2 (alpha + N beta)`` if p is not
    a power of two): best for small arrays, wasteful for big ones.
    """
    return run_allreduce(comm, array, op, "recursive_doubling_allreduce", _recursive_doubling)


def _recursive_doubling(comm: Communicator, flat: Any, op: str) -> None:
    p, rank = comm.size, comm.rank
    combine = combiner(flat, op)
    incoming = scratch(comm, flat, flat.size)
    power = 1 << (p.bit_length() - 1)  # largest power of two <= p
    rem = p - power
    if rank < 2 * rem:  # fold the extra ranks in: rank 2i -> rank 2i+1
        if rank % 2 == 0:
            signed.send(comm, flat, rank + 1)
            virtual = -1  # sits out the doubling
        else:
            signed.recv(comm, incoming, rank - 1)
            combine(incoming, flat, out=flat)
            virtual = rank // 2
    else:
        virtual = rank - rem
    if virtual >= 0:
        mask = 1
        while mask < power:  # virtual ranks v and v ^ mask swap and combine
            other = virtual ^ mask
            partner = 2 * other + 1 if other < rem else other + rem
            signed.sendrecv(comm, flat, partner, incoming, partner)
            if partner < rank:
                combine(incoming, flat, out=flat)
            else:
                combine(flat, incoming, out=flat)
            mask <<= 1
        finish_mean(flat, p, op)
    if rank < 2 * rem:  # hand the result back to the ranks that sat out
        if rank % 2 == 0:
            signed.recv(comm, flat, rank + 1)
        else:
            signed.send(comm, flat, rank - 1)


ALGORITHMS = {  # ring_allreduce (ring.py) is the first, and the default
    "ring": ring_allreduce_in_slabs,
    "naive": _naive,
    "tree": _tree,
    "recursive_doubling": _recursive_doubling,
    "hierarchical": hierarchical_core,  # hierarchical.py: by host, fewer bytes between hosts
}

NOTHING: dict[int, str] = {}  # no "auto" choices yet
ONE_HOST_ALGORITHMS = {"shm": shm_core}  # shm.py: shared memory, every rank on one host

#: name -> (core, the signature's last field, the message log's label): one lookup per call
_RUNS = {name: (core, f"algorithm={name}", f"{name}_allreduce")
         for name, core in [*ALGORITHMS.items(), *ONE_HOST_ALGORITHMS.items()]}


def allreduce(comm: Communicator, array: Any, op: str = "sum", algorithm: str = "ring",
              intra_host: str = "auto") -> Any:
    """All-reduce ``array`` in place with the chosen algorithm; returns ``array``.

    ``algorithm``: "ring", "naive", "tree", "recursive_doubling", "hierarchical"
    (``hierarchical.py``), "shm" (``shm.py``: ranks on one host only) or "auto"
    (``auto.py``: ring, recursive doubling or hierarchical, whichever the fitted cost
    model predicts fastest; without a fitted model, after a warning, recursive doubling
    below ``AUTO_SMALL_BYTES`` = 64 KiB and ring from there on).
    ``op``: "sum", "mean" (floating dtypes), "max" or "min". ``intra_host`` (for
    "hierarchical" only): the steps inside each host by "ring" messages, through
    "shm" shared memory, "pipelined" (``host_pipeline.py``), or "auto".
    """
    flat = prepare(comm, array, "allreduce", op)
    if algorithm == "auto":  # a size seen before: one lookup; else auto.choose (collective, once)
        algorithm = comm.__dict__.get("_auto_choices", NOTHING).get(flat.nbytes) \
            or auto.choose(comm, flat.nbytes)
    run = _RUNS.get(algorithm)
    if run is None:
        raise ValueError(f"allreduce: algorithm must be one of "
                         f"{sorted([*ALGORITHMS, *ONE_HOST_ALGORITHMS]) + ['auto']}, got {algorithm!r}")
    if intra_host != "auto" and intra_host not in INTRA_HOST:
        raise ValueError(f"allreduce: intra_host must be one of {[*INTRA_HOST, 'auto']}, "
                         f"got {intra_host!r}")
    core, detail, label = run
    if algorithm == "hierarchical":
        detail += f" intra_host={intra_host}"
        core = partial(hierarchical_core, intra_host=intra_host)
    elif algorithm == "shm" and (shared := shm_arrays.lookup(comm, flat)) is not None:
        detail += f" shared={shared.number}"  # ranks passing different arrays: a mismatch
        core = partial(shm_arrays.allreduce_in_place, record=shared)
    with Collective(comm, "allreduce", op, flat.dtype, flat.size, detail, label=label):
        if comm.size > 1 and flat.size > 0:
            core(comm, flat, op)
    return array


def gather_to_root(comm: Communicator, payload: bytes | Any, root: int = 0) -> list[bytes] | None:
    """Collective: every rank's ``payload`` (bytes, or a uint8 array) on ``root``, in rank order.

    Returns the list of p ``bytes`` objects on ``root``, None on the other ranks.
    Payloads may differ in length, so each rank sends two messages: its length
    (an int64), then the bytes into a buffer of that length. Cost on the root's
    link: ``2(p-1) alpha + (sum of the others' bytes) beta``, in series.
    """
    require_communicator(comm, "gather_to_root")
    if not isinstance(root, (int, np.integer)) or not 0 <= root < comm.size:
        raise ValueError(f"gather_to_root: root must be a rank in [0, {comm.size}), got {root!r}")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        blob = np.frombuffer(bytes(payload), dtype=np.uint8)
    elif isinstance(payload, np.ndarray) and payload.dtype == np.uint8:
        blob = np.ascontiguousarray(payload).reshape(-1)
    else:
        raise TypeError(f"gather_to_root: payload must be bytes or a uint8 numpy array, got "
                        f"{type(payload).__name__}{getattr(payload, 'dtype', '')}")
    with Collective(comm, "gather_to_root", None, "uint8", "?", root=int(root)):
        signed.check_round_the_ring(comm)
        if comm.rank != root:
            signed.send(comm, np.array([blob.size], dtype=np.int64), int(root))
            signed.send(comm, blob, int(root))
            return None
        gathered = []
        for source in range(comm.size):
            if source == root:
                gathered.append(blob.tobytes())
                continue
            length = signed.recv(comm, np.zeros(1, dtype=np.int64), source)
            buffer = signed.recv(comm, np.empty(int(length[0]), dtype=np.uint8), source)
            gathered.append(buffer.tobytes())
        return gathered


__all__ = [
    "ALGORITHMS", "AUTO_SMALL_BYTES", "allgather", "allreduce", "broadcast", "gather_to_root",
    "naive_allreduce",
    "recursive_doubling_allreduce", "reduce_scatter", "ring_allreduce", "tree_allreduce",
]
