"""The ring: reduce-scatter and all-gather, the two halves of ring all-reduce.

The array (N elements) is cut into p chunks at ``numpy.array_split``
boundaries; chunk c is "owned" by rank c. Ranks form a ring: each sends only
to its right neighbour ``(r + 1) % p`` and receives only from its left
``(r - 1) % p``, so every link carries the same load at the same time.

Reduce-scatter, p - 1 steps. At step s (0-based) rank r sends chunk
``(r - s - 1) % p`` to the right, receives chunk ``(r - s - 2) % p`` from the
left and adds it into its own copy of that chunk. The chunk a rank sends at
step s + 1 is the one it just added to, so each chunk travels once round the
ring collecting one contribution per rank, and arrives complete at its owner
at the last step (``(r - (p-2) - 2) % p == r``). Rank r then holds the sum
of chunk r.

All-gather, p - 1 steps. At step s rank r sends chunk ``(r - s) % p`` (its own
at step 0) to the right and receives chunk ``(r - s - 1) % p`` from the left
straight into place; after p - 1 steps everyone has every chunk. Each chunk's
final value was computed once, by its owner, so all ranks hold identical bits.

Cost, with alpha the latency of a message, beta the time per byte, gamma the
time per byte reduced and N the array's bytes:

    reduce_scatter:  (p-1) alpha + (p-1)/p N beta + (p-1)/p N gamma
    allgather:       (p-1) alpha + (p-1)/p N beta

Bytes sent per rank, exactly (chunk lengths c_i from array_split):
reduce-scatter sends every chunk but its own, ``N - c_r``; all-gather every
chunk but its right neighbour's, ``N - c_{(r+1) % p}``.

Slabs (an optimisation that keeps the data in cache). A big array does not
fit in the CPU caches, so receiving a whole chunk, then adding it, then
sending it on makes three trips through main memory. Instead each chunk is
cut into K pieces of at most ``SLAB_BYTES`` (again at array_split
boundaries) and the ring runs K times, on slab k = piece k of every chunk:
piece k is received, added and passed on while it is still in cache.
Bytes sent are unchanged; messages and latency terms are multiplied by K.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.comm._common import (
    chunk_bounds,
    combiner,
    exchange,
    finish_mean,
    prepare,
    scratch,
)
from minipar.comm.communicator import Communicator, check_array
from minipar.comm.safety import Collective


def reduce_scatter_chunks(rank: int, step: int, p: int) -> tuple[int, int]:
    """(chunk rank sends right, chunk it receives from the left) at reduce-scatter ``step``."""
    return (rank - step - 1) % p, (rank - step - 2) % p


def allgather_chunks(rank: int, step: int, p: int) -> tuple[int, int]:
    """(chunk rank sends right, chunk it receives from the left) at all-gather ``step``."""
    return (rank - step) % p, (rank - step - 1) % p


def ring_schedule(p: int) -> list[tuple[str, int, int, int, int]]:
    """Every message of ring all-reduce as (phase, step, sender, receiver, chunk), steps from 1."""
    moves = []
    for phase, chunks in (("reduce-scatter", reduce_scatter_chunks), ("all-gather", allgather_chunks)):
        for step in range(p - 1):
            for rank in range(p):
                moves.append((phase, step + 1, rank, (rank + 1) % p, chunks(rank, step, p)[0]))
    return moves


SLAB_BYTES = 2 << 20  # ring chunks are processed in pieces of at most 2 MiB (see above)


def slabs(bounds: list[int], itemsize: int) -> list[tuple[list[int], list[int]]]:
    """Cut every chunk [bounds[c], bounds[c+1]) into K pieces; one (starts, ends) per slab.

    K is the same for every chunk (the largest chunk over SLAB_BYTES, rounded
    up), so a sender and its receiver always agree on each piece's length.
    """
    largest = (bounds[1] - bounds[0]) * itemsize  # chunk 0 is never shorter than the others
    count = max(1, -(-largest // SLAB_BYTES))
    pieces = [chunk_bounds(hi - lo, count) for lo, hi in zip(bounds, bounds[1:])]
    return [
        ([lo + piece[k] for lo, piece in zip(bounds, pieces)],
         [lo + piece[k + 1] for lo, piece in zip(bounds, pieces)])
        for k in range(count)
    ]


def ring_reduce_scatter_steps(comm: Communicator, flat: Any, starts: list[int], ends: list[int],
                              op: str, incoming: Any) -> None:
    """The p - 1 reduce-scatter steps; chunk c is ``flat[starts[c]:ends[c]]``.

    ``incoming`` is scratch space at least as long as the longest chunk.
    Afterwards chunk ``rank`` holds the reduction over all ranks.
    """
    p, rank = comm.size, comm.rank
    right, left = (rank + 1) % p, (rank - 1) % p
    combine = combiner(flat, op)
    for step in range(p - 1):
        send_chunk, recv_chunk = reduce_scatter_chunks(rank, step, p)
        lo, hi = starts[recv_chunk], ends[recv_chunk]
        received = incoming[: hi - lo]
        # rank -> right: chunk send_chunk (a partial sum); left -> rank: chunk recv_chunk
        exchange(comm, flat[starts[send_chunk] : ends[send_chunk]], right, received, left)
        mine = flat[lo:hi]
        combine(mine, received, out=mine)  # in place: no temporary array


def ring_allgather_steps(comm: Communicator, flat: Any, starts: list[int], ends: list[int]
                         ) -> None:
    """The p - 1 all-gather steps; beforehand rank r holds chunk r, afterwards all chunks."""
    p, rank = comm.size, comm.rank
    right, left = (rank + 1) % p, (rank - 1) % p
    for step in range(p - 1):
        send_chunk, recv_chunk = allgather_chunks(rank, step, p)
        # rank -> right: chunk send_chunk; left -> rank: chunk recv_chunk, received in place
        exchange(comm, flat[starts[send_chunk] : ends[send_chunk]], right,
                 flat[starts[recv_chunk] : ends[recv_chunk]], left)


def ring_allreduce_steps(comm: Communicator, flat: Any, op: str) -> None:
    """Reduce-scatter then all-gather, slab by slab (the body of ``ring_allreduce``)."""
    bounds = chunk_bounds(flat.size, comm.size)
    pieces = slabs(bounds, flat.dtype.itemsize)
    incoming = scratch(comm, flat, pieces[0][1][0] - pieces[0][0][0])  # longest piece
    for starts, ends in pieces:
        ring_reduce_scatter_steps(comm, flat, starts, ends, op, incoming)
        # Divide only our own piece: the all-gather then spreads the identical result.
        finish_mean(flat[starts[comm.rank] : ends[comm.rank]], comm.size, op)
        ring_allgather_steps(comm, flat, starts, ends)


def reduce_scatter(comm: Communicator, array: Any, op: str = "sum") -> Any:
    """Reduce ``array`` over all ranks and return this rank's shard of the result.

    The shard is chunk ``rank`` of ``numpy.array_split(array.reshape(-1), p)``,
    returned as a 1-D **view into array**: ``array`` is the workspace, and its
    other chunks are left holding partial sums. Ring algorithm, cost
    ``(p-1) alpha + (p-1)/p N beta + (p-1)/p N gamma``; bytes sent per rank
    ``N - c_rank`` (= (p-1)/p N when p divides N). ``op``: sum, mean, max, min.
    """
    flat = prepare(comm, array, "reduce_scatter", op)
    bounds = chunk_bounds(flat.size, comm.size)
    with Collective(comm, "reduce_scatter", op, flat.dtype, flat.size):
        if comm.size > 1 and flat.size:
            pieces = slabs(bounds, flat.dtype.itemsize)
            incoming = scratch(comm, flat, pieces[0][1][0] - pieces[0][0][0])
            for starts, ends in pieces:
                ring_reduce_scatter_steps(comm, flat, starts, ends, op, incoming)
    shard = flat[bounds[comm.rank] : bounds[comm.rank + 1]]
    finish_mean(shard, comm.size, op)
    return shard


def allgather(comm: Communicator, shard: Any, out: Any = None) -> Any:
    """Gather every rank's shard into the full array, on every rank; returns it.

    Shard r holds elements ``[b_r, b_{r+1})`` of the result, with the
    boundaries of ``numpy.array_split`` (so shards may differ in length by
    one). With ``out`` (a C-contiguous array of the total length) the result
    is written there; without it the ranks first all-reduce their lengths
    (ceil(log2 p) tiny messages) to learn the total and a new 1-D array is
    returned. Ring algorithm: ``(p-1) alpha + (p-1)/p N beta``; bytes sent per
    rank ``N - c_{(rank+1) % p}``.
    """
    if not isinstance(comm, Communicator):
        raise TypeError(f"allgather: first argument must be a Communicator, got {type(comm)}")
    check_array(shard, "allgather shard")
    xp = get_array_module(shard)
    p, rank = comm.size, comm.rank
    with Collective(comm, "allgather", None, shard.dtype, "?" if out is None else out.size):
        if out is None:
            from minipar.comm.collectives import recursive_doubling_allreduce

            lengths = np.zeros(p, dtype=np.int64)
            lengths[rank] = shard.size
            recursive_doubling_allreduce(comm, lengths)  # every rank learns every length
            lengths = [int(n) for n in lengths]
            bounds = chunk_bounds(sum(lengths), p)
            if any(n != hi - lo for n, lo, hi in zip(lengths, bounds, bounds[1:])):
                raise ValueError(
                    f"allgather: shard lengths {lengths} do not follow numpy.array_split of "
                    f"{sum(lengths)} elements over {p} ranks, which gives "
                    f"{[hi - lo for lo, hi in zip(bounds, bounds[1:])]}"
                )
            out = xp.empty(bounds[-1], dtype=shard.dtype)
        else:
            check_array(out, "allgather out", writeable=True)
            if out.dtype != shard.dtype:
                raise TypeError(f"allgather: out has dtype {out.dtype}, shard has {shard.dtype}")
            bounds = chunk_bounds(out.size, p)
            if shard.size != bounds[rank + 1] - bounds[rank]:
                raise ValueError(
                    f"allgather: rank {rank}'s shard of an array of {out.size} elements over "
                    f"{p} ranks must have {bounds[rank + 1] - bounds[rank]} elements "
                    f"(numpy.array_split), got {shard.size}"
                )
        flat = out.reshape(-1)
        flat[bounds[rank] : bounds[rank + 1]] = shard.reshape(-1)
        for starts, ends in slabs(bounds, flat.dtype.itemsize):
            ring_allgather_steps(comm, flat, starts, ends)
    return out
