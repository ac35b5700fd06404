"""The hierarchical all-reduce, pipelined: the link carries piece m while the host works on m +- 1.

``hierarchical_point_to_point`` (``hierarchical.py``) runs its three steps one
after another, so the link idles while the host reduces (step 1) and gathers
(step 3), and the host idles while the link carries step 2. Here the array is
cut into M pieces and two threads share the work:

    main thread (host_comm):    RS 0 | RS 1 |  AG 0 + RS 2 | AG 1 + RS 3 | ... | AG M-1
    ring thread (cross_comm):          | across 0 | across 1 | across 2 | ...

    RS m: reduce-scatter piece m inside the host; across m: ring all-reduce of this
    rank's share of piece m among the hosts; AG m: all-gather piece m inside the host.

Time ~ step 2's link time + one piece's steps 1 and 3, instead of the sum of all
three: on the emulated cluster (2 hosts x 2 ranks, 16 MiB, 2 Gbit/s) step 2 takes
~72 ms and steps 1 and 3 ~9 ms together, and the two overlap almost entirely when
run on two threads (73 ms measured); see ``benchmarks/cluster.py`` for the whole.

The pieces keep every element where the plain form puts it: local chunk i
(``array_split`` over the k ranks of the host) is cut into the cross ring's H
chunks, and each of those into M pieces; piece m is piece m of all of them. Each
element is thus added inside the host in the ring order of its local chunk and
across hosts in the ring order of its cross chunk, as in the plain form: the
same bits. The schedule above is fixed (never "whatever is ready"), so the ranks
of a host always exchange the same piece at the same time; each thread has its
own communicator, and MPI runs under ``MPI_THREAD_MULTIPLE``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from minipar.comm._common import chunk_bounds, finish_mean, scratch
from minipar.comm.communicator import Communicator
from minipar.comm.ring import ring_allgather_steps, ring_reduce_scatter_steps
from minipar.comm.safety import Collective

PIECE_BYTES = 512 << 10  # each cross-host chunk is cut into pieces of at most this many bytes

Span = tuple[list[int], list[int]]  # (starts, ends) in flat: one range per rank of a ring


def piece_spans(length: int, k: int, hosts: int, itemsize: int) -> list[list[Span]]:
    """spans[m][j] = ranges of piece m of cross chunk j, one per local rank i (offsets in flat).

    The same on every rank: it depends only on the length, k, H and the dtype.
    """
    local = chunk_bounds(length, k)
    cross = [chunk_bounds(local[i + 1] - local[i], hosts) for i in range(k)]
    largest = (cross[0][1] - cross[0][0]) * itemsize  # local chunk 0, cross chunk 0: the longest
    count = max(1, -(-largest // PIECE_BYTES))
    spans: list[list[Span]] = [[([], []) for _ in range(hosts)] for _ in range(count)]
    for i in range(k):
        for j in range(hosts):
            lo = local[i] + cross[i][j]
            pieces = chunk_bounds(cross[i][j + 1] - cross[i][j], count)
            for m in range(count):
                spans[m][j][0].append(lo + pieces[m])
                spans[m][j][1].append(lo + pieces[m + 1])
    return spans


def pipelined_allreduce(comm: Communicator, host_comm: Communicator, cross_comm: Communicator,
                        flat: Any, op: str) -> None:
    """All-reduce the 1-D ``flat`` over ``comm`` in place; ``host_comm``: my host, ``cross_comm``: my ring."""
    inner = "sum" if op == "mean" else op
    spans = piece_spans(flat.size, host_comm.size, cross_comm.size, flat.dtype.itemsize)
    me = host_comm.rank
    longest = max(e - s for piece in spans for starts, ends in piece for s, e in zip(starts, ends))
    incoming = scratch(host_comm, flat, longest)

    def inside(m: int, gather: bool) -> None:  # step 1 (or 3) on piece m, main thread only
        for starts, ends in spans[m]:  # cross chunk j = 0 .. H-1 of every local chunk
            if gather:
                ring_allgather_steps(host_comm, flat, starts, ends, f"piece {m + 1} all-gather")
            else:
                ring_reduce_scatter_steps(host_comm, flat, starts, ends, inner, incoming,
                                          f"piece {m + 1} reduce-scatter")

    reduced: queue.Queue[int | None] = queue.Queue()  # main -> ring thread: piece m is reduced
    crossed: queue.Queue[int | BaseException] = queue.Queue()  # ring thread -> main: m crossed
    ring = threading.Thread(target=_across_hosts, daemon=True,
                            args=(cross_comm, flat, spans, me, inner, comm.size, op, reduced, crossed))
    ring.start()
    try:
        inside(0, gather=False)
        reduced.put(0)
        for m in range(len(spans)):
            if m + 1 < len(spans):
                inside(m + 1, gather=False)  # while piece m crosses
                reduced.put(m + 1)
            done = crossed.get()
            if isinstance(done, BaseException):
                raise done
            inside(m, gather=True)  # while piece m + 1 crosses
    finally:
        reduced.put(None)
    ring.join()


def _across_hosts(cross: Communicator, flat: Any, spans: list[list[Span]], me: int, op: str, p: int,
                  outer_op: str, reduced: queue.Queue, crossed: queue.Queue) -> None:
    """The ring thread: step 2 on each piece as soon as it is reduced (local rank ``me``'s share)."""
    try:
        with Collective(cross, "allreduce", op, flat.dtype, flat.size, "algorithm=hierarchical",
                        label="hierarchical_allreduce"):
            longest = max(piece[j][1][me] - piece[j][0][me] for piece in spans for j in range(len(piece)))
            incoming = scratch(cross, flat, longest)
            while (m := reduced.get()) is not None:
                starts = [piece[0][me] for piece in spans[m]]  # cross chunk j of my share: host j's
                ends = [piece[1][me] for piece in spans[m]]
                ring_reduce_scatter_steps(cross, flat, starts, ends, op, incoming, f"piece {m + 1} across")
                finish_mean(flat[starts[cross.rank] : ends[cross.rank]], p, outer_op)
                ring_allgather_steps(cross, flat, starts, ends, f"piece {m + 1} across")
                crossed.put(m)
    except BaseException as error:  # the main thread raises it
        crossed.put(error)


__all__ = ["PIECE_BYTES", "piece_spans", "pipelined_allreduce"]
