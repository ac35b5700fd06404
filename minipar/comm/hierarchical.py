"""Hierarchical all-reduce: reduce inside each host, ring across hosts, gather inside the host.

Links between hosts are slow (a network card); links inside a host are fast
(shared memory). The flat ring sends 2(p-1)/p N bytes per rank, and with ranks
placed in blocks by host one ring edge per host crosses the network: each
host's link carries 2(p-1)/p N bytes. The hierarchical scheme (NCCL's and
Horovod's) first shrinks what has to cross:

    H hosts, k ranks per host (p = H k), N bytes; host h, local rank i

    host 0: [r0 r1]    host 1: [r2 r3]          1. reduce-scatter inside each host:
             |  |               |  |               local rank i holds shard i (N/k bytes)
             |  +------ ring ---|--+ i = 1      2. ring all-reduce of shard i among the
             +--------- ring ---+    i = 0         H ranks with local rank i (one per host)
                                                3. all-gather inside each host

Bytes crossing each host's link (k rings of N/k bytes each, H ranks per ring):

    hierarchical   k * 2(H-1)/H * N/k = 2(H-1)/H N        flat ring   2(p-1)/p N

e.g. 2 hosts x 2 ranks: N against 1.5 N. Time, with (alpha_l, beta_l) inside a
host, (alpha_n, beta_n) between hosts and gamma per byte reduced:

    2(k-1) alpha_l + 2(k-1)/k N beta_l + (k-1)/k N gamma            steps 1 and 3
    + 2(H-1) alpha_n + 2(H-1)/H N/k beta_n + (H-1)/H N/k gamma      step 2

Hosts are found once per communicator, from an all-gather of every rank's
``comm.host_name()`` (``MPI.Get_processor_name()``; on thread ranks the labels
given to ``run_local(..., hosts=[0, 0, 1, 1])``), and the two sub-communicators
are kept on the communicator. Ranks need not be in blocks. Every host must hold
the same number of ranks (so that shard i means the same elements everywhere):
uneven hosts raise ValueError on every rank.

Three forms, chosen by ``allreduce(..., intra_host=)``:

- ``"ring"``, ``hierarchical_point_to_point`` (first below, the picture): the ring's
  reduce-scatter and all-gather on the host's communicator, then step 2, one step
  after another;
- ``"shm"``, ``hierarchical_shared_memory``: the host's ranks share one MPI-3 window
  (``shm.py``; on thread ranks, the arrays themselves), each reduces shard i reading
  the others' buffers in place, rings it across hosts, and the host reads the
  finished shards back in place: steps 1 and 3 cost ~3 barriers + ~3N / memory
  bandwidth instead of 2(k-1) alpha_l + 2(k-1)/k N beta_l, and send no messages
  (needs the host's ranks to share memory: not under ``MPIR_CVAR_NOLOCAL=1``);
- ``"pipelined"``, ``hierarchical_pipelined`` (``host_pipeline.py``): the "ring" form
  in pieces, steps 1 and 3 of one piece on the main thread while a second thread
  rings the next across hosts, so the time is ~ step 2's alone;
- ``"auto"`` (default): "shm" on thread ranks (one process: no copies at all),
  else "pipelined", or "ring" when the array is one piece (nothing to overlap).

Measured (benchmarks/cluster.py and A/B runs: 2 hosts x 2 ranks, 16 MiB float32,
2 Gbit/s links, medians of 7-15; the 4 ranks share this machine's 2 cores, load
average 1.4-3):

    launch                               flat ring   ring form        shm form       pipelined
    MPIR_CVAR_NOLOCAL=1 (TCP loopback)     127 ms     166 ms (1.31x)   no window      -
    cluster launch (MPICH shm in a host)   107-112    81-83 (0.74-0.76) 84-86 (0.76-0.79) 76-79 (0.71)

Under NOLOCAL every intra-host message crossed TCP loopback (steps 1 and 3: ~30 ms
each, step 2: 75 ms), so the cluster's launch no longer sets it. With MPICH's own
shared memory inside the host, steps 1 and 3 take ~9 ms and step 2 ~72 ms (N + 5 %
TCP/IP headers at 2 Gbit/s: the floor), and run on two threads at once they took
73 ms. The shm window ties MPICH's messages here (a memcpy each way on the same
two cores); pipelining is what buys the rest. Where the CPU, not the link, is the
bottleneck it costs instead: at 10 Gbit/s, 16 MiB, pipelined 59.7 ms against the
ring form's 49.3 (the second thread contends for the 2 cores), at 4 MiB, 2 Gbit/s
26.1 against 23.8 (2 pieces: little to overlap).

Summation order per element: first inside the host (ring order; the shm form
adds in the same order, see ``shm.py``; the pipelined one keeps every element in
its chunk), then across hosts (ring order), so the three forms give identical
bits, and the result equals the flat ring's to float rounding, not bitwise; it
is bit-identical on every rank (each shard is finished by one ring and then copied).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minipar.comm._common import finish_mean
from minipar.comm.communicator import Communicator
from minipar.comm.host_pipeline import piece_spans, pipelined_allreduce
from minipar.comm.ring import allgather, reduce_scatter, ring_allreduce
from minipar.comm.shm import shm_core

NAME_BYTES = 256  # MPI_MAX_PROCESSOR_NAME in MPICH; longer names are refused


@dataclass(frozen=True)
class HostTopology:
    """Where the ranks of one communicator live, and the two groups the algorithm uses."""

    hosts: list[str]  # host name of each rank of the communicator
    host_of_rank: list[int]  # host index (0 = the host of rank 0, in order of appearance)
    host_comm: Communicator  # the ranks on this rank's host (local rank = host_comm.rank)
    cross_comm: Communicator  # the ranks with this local rank, one per host (rank = host index)

    @property
    def host_count(self) -> int:
        return len(set(self.host_of_rank))


def _all_host_names(comm: Communicator) -> list[str]:
    """Every rank's ``host_name()``, in rank order (a fixed-width all-gather of bytes)."""
    name = comm.host_name().encode()
    if len(name) > NAME_BYTES:
        raise ValueError(f"host name longer than {NAME_BYTES} bytes: {name[:40]!r}...")
    mine = np.zeros(NAME_BYTES, dtype=np.uint8)
    mine[: len(name)] = np.frombuffer(name, dtype=np.uint8)
    table = allgather(comm, mine, out=np.empty(NAME_BYTES * comm.size, dtype=np.uint8))
    return [bytes(row).rstrip(b"\0").decode() for row in table.reshape(comm.size, NAME_BYTES)]


def host_topology(comm: Communicator) -> HostTopology:
    """Collective on first use (then cached): group ``comm``'s ranks by host.

    Raises ValueError (on every rank) unless every host holds the same number of ranks.
    """
    cached = comm.__dict__.get("_host_topology")
    if cached is not None:
        return cached
    names = _all_host_names(comm)
    order = list(dict.fromkeys(names))  # distinct hosts, in order of first appearance
    host_of_rank = [order.index(name) for name in names]
    counts = {name: names.count(name) for name in order}
    if len(set(counts.values())) != 1:
        raise ValueError(f"hierarchical all-reduce needs the same number of ranks on every "
                         f"host, got {counts} (use algorithm='ring')")
    host = host_of_rank[comm.rank]
    local_rank = host_of_rank[: comm.rank].count(host)  # ranks of my host before me
    host_comm = comm.split(host, key=comm.rank)
    cross_comm = comm.split(local_rank, key=host)
    assert host_comm is not None and cross_comm is not None
    topology = HostTopology(names, host_of_rank, host_comm, cross_comm)
    comm.__dict__["_host_topology"] = topology
    return topology


def hierarchical_point_to_point(comm: Communicator, flat: Any, op: str) -> None:
    """All-reduce the 1-D ``flat`` in place, host by host, every step in messages (p > 1, N > 0)."""
    topology = host_topology(comm)
    inner = "sum" if op == "mean" else op  # divide once, at the end, by the whole p
    # 1. Reduce-scatter inside the host: shard i (array_split of flat over the k local
    #    ranks) now holds the host's sum; it is a view into flat.
    shard = reduce_scatter(topology.host_comm, flat, inner)
    # 2. Ring all-reduce of shard i among the hosts: the only bytes that cross a link.
    if topology.cross_comm.size > 1:
        ring_allreduce(topology.cross_comm, shard, inner)
    finish_mean(shard, comm.size, op)
    # 3. All-gather inside the host: every local rank's finished shard into flat.
    allgather(topology.host_comm, shard, out=flat)


def hierarchical_shared_memory(comm: Communicator, flat: Any, op: str) -> None:
    """The same three steps, steps 1 and 3 through the host's shared window (NumPy arrays).

    ``shm_core`` on the host's ranks maps every local rank's array, hands this rank's
    shard to ``across_hosts`` (step 1: reduce it reading the others' arrays in place;
    step 2: the same ring as above) and reads the finished shards back out of the
    others' segments (step 3).
    """
    topology = host_topology(comm)
    inner, cross = ("sum" if op == "mean" else op), topology.cross_comm
    if topology.host_comm.size == 1:  # one rank per host: nothing to share
        hierarchical_point_to_point(comm, flat, op)
        return

    def across_hosts(reduce_range: Callable[[int, int], None], lo: int, hi: int) -> None:
        reduce_range(lo, hi)  # 1. shard i = flat[lo:hi] now holds the host's sum
        if cross.size > 1 and hi > lo:
            ring_allreduce(cross, flat[lo:hi], inner)  # 2.
        finish_mean(flat[lo:hi], comm.size, op)

    shm_core(topology.host_comm, flat, inner, middle=across_hosts)  # 3. when it returns


def hierarchical_pipelined(comm: Communicator, flat: Any, op: str) -> None:
    """The point-to-point form in pieces, steps 1 and 3 overlapping step 2 (``host_pipeline.py``)."""
    topology = host_topology(comm)
    pipelined_allreduce(comm, topology.host_comm, topology.cross_comm, flat, op)


INTRA_HOST = {"ring": hierarchical_point_to_point, "shm": hierarchical_shared_memory,
              "pipelined": hierarchical_pipelined}


def intra_host_form(comm: Communicator, flat: Any, intra_host: str = "auto") -> str:
    """"ring", "shm" or "pipelined": what ``intra_host`` means for this array (see above).

    "auto" depends only on the backend, the array's type and its length, so it is the
    same on every rank.
    """
    if intra_host not in (*INTRA_HOST, "auto"):
        raise ValueError(f"allreduce: intra_host must be one of {[*INTRA_HOST, 'auto']}, "
                         f"got {intra_host!r}")
    if intra_host != "auto":
        return intra_host
    if comm.backend == "threads" and type(flat) is np.ndarray:
        return "shm"  # one process: read the other ranks' arrays, copy nothing
    topology = host_topology(comm)
    pieces = piece_spans(flat.size, topology.host_comm.size, topology.cross_comm.size,
                         flat.dtype.itemsize)
    return "pipelined" if len(pieces) > 1 else "ring"  # one piece: nothing to overlap


def hierarchical_core(comm: Communicator, flat: Any, op: str, intra_host: str = "auto") -> None:
    """``allreduce``'s core (p > 1, N > 0): the form ``intra_host`` names, or chooses ("auto")."""
    INTRA_HOST[intra_host_form(comm, flat, intra_host)](comm, flat, op)


def world_rank(comm: Communicator, rank: int) -> int:
    """Rank ``rank`` of ``comm`` as a rank of the world (to say which host a message went to)."""
    group = getattr(comm, "group", None)
    if group is not None:  # thread ranks: the world rank of each member
        return int(group[rank])
    from mpi4py import MPI

    mine = comm.mpi_comm.Get_group()  # type: ignore[attr-defined]
    return int(mine.Translate_ranks([rank], MPI.COMM_WORLD.Get_group())[0])


__all__ = ["INTRA_HOST", "HostTopology", "hierarchical_core", "hierarchical_point_to_point",
           "hierarchical_shared_memory", "host_topology", "intra_host_form", "world_rank"]
