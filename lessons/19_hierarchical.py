"""Hierarchical all-reduce: bytes on each host's link, flat ring vs hierarchical, from the message log.

A flat ring over H hosts of k ranks (p = H k, ranks in blocks by host) sends
2(p-1)/p N bytes per rank, and one ring edge per host crosses the network, so
each host's link carries 2(p-1)/p N. The hierarchical scheme reduce-scatters
inside the host, rings the N/k shards across hosts, all-gathers inside the host
(inside the host by messages, or through shared memory: ``intra_host="shm"``):

    bytes leaving each host   flat ring 2(p-1)/p N     hierarchical 2(H-1)/H N

This lesson counts every message of one all-reduce (``minipar.comm`` event
stream), classifies it as inside a host or between hosts, and prints both next
to the formulas. By default the ranks are threads with fake host labels (2 hosts
x 2 ranks); with ``--cluster`` it runs on the emulated cluster's hosts.

    python lessons/19_hierarchical.py [--hosts 2 --per-host 2 --megabytes 4]
    minipar cluster up --hosts 2 --gbit 2
    minipar cluster run -n 4 --ppn 2 -- python -m mpi4py lessons/19_hierarchical.py --cluster
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import minipar.comm as mc
from minipar.comm.hierarchical import host_topology, world_rank


def link_bytes(comm: mc.Communicator, x: np.ndarray, algorithm: str,
               intra_host: str = "auto") -> tuple[dict[int, int], float]:
    """Bytes this rank sent to another host during one all-reduce, by host, and its time."""
    host_of = host_topology(comm).host_of_rank  # one all-gather of host names, then cached
    mc.allreduce(comm, x.copy(), algorithm=algorithm, intra_host=intra_host)  # warm up (splits)
    sent: dict[int, int] = {}

    def listen(sender: Any, message: Any) -> None:  # sender: the (sub-)communicator it went on
        source, dest = world_rank(sender, message.source), world_rank(sender, message.dest)
        kind = 1 if host_of[dest] != host_of[source] else 0  # 1: crosses a link, 0: inside a host
        sent[kind] = sent.get(kind, 0) + message.nbytes

    comm.barrier()
    start = time.perf_counter()
    if comm.backend == "mpi" or comm.rank == 0:  # thread ranks share one process: one listener
        mc.add_observer(listen, messages=True)
    comm.barrier()
    y = x.copy()
    mc.allreduce(comm, y, algorithm=algorithm, intra_host=intra_host)
    comm.barrier()
    mc.remove_observer(listen)
    return sent, time.perf_counter() - start


def lesson(comm: mc.Communicator, megabytes: float) -> list[str] | None:
    topology = host_topology(comm)
    p, hosts = comm.size, topology.host_count
    n = int(megabytes * 2**20) // 8
    nbytes = 8 * n
    x = np.random.default_rng(comm.rank).standard_normal(n)
    rows = []
    for algorithm, intra_host, formula, label in (
            ("ring", "auto", 2 * (p - 1) / p, "2(p-1)/p N"),
            ("hierarchical", "ring", 2 * (hosts - 1) / hosts, "2(H-1)/H N"),  # messages inside
            ("hierarchical", "shm", 2 * (hosts - 1) / hosts, "2(H-1)/H N"),  # shared window
            ("hierarchical", "pipelined", 2 * (hosts - 1) / hosts, "2(H-1)/H N")):  # in pieces
        sent, seconds = link_bytes(comm, x, algorithm, intra_host)
        name = algorithm if algorithm == "ring" else f"hier. {intra_host}"
        rows.append((name, sent, formula, label, seconds))
    # Sum the cross-host bytes of every rank of each host (MPI: one gather; threads: all seen).
    lines = None
    if comm.backend == "mpi":
        from mpi4py import MPI

        everything = MPI.COMM_WORLD.gather([r[1] for r in rows], root=0)
    else:
        everything = [[r[1] for r in rows]] if comm.rank == 0 else None
    if comm.rank == 0 and everything is not None:
        lines = [f"p = {p} ranks on H = {hosts} hosts ({p // hosts} per host), N = {nbytes:,} B",
                 f"{'algorithm':<19} {'between hosts, per host':>24} {'formula':>22} "
                 f"{'inside hosts, total':>20} {'time':>9}"]
        for i, (algorithm, _, formula, label, seconds) in enumerate(rows):
            cross = sum(per_rank[i].get(1, 0) for per_rank in everything) / hosts
            inside = sum(per_rank[i].get(0, 0) for per_rank in everything)
            lines.append(f"{algorithm:<19} {cross:>22,.0f} B {label + ' = ':>12}"
                         f"{formula * nbytes:>10,.0f} {inside:>18,} B {seconds * 1e3:>7.1f} ms")
        lines.append("The hierarchical all-reduce moves the rest of the bytes over the fast links "
                     "inside each host, as messages (ring; pipelined: the same messages in pieces, "
                     "overlapping the link) or through a shared window (shm: no messages at all, "
                     "the ranks read each other's memory); the "
                     "time column is only meaningful on --cluster (on one host every 'link' is "
                     "memcpy on the same cores; benchmarks/cluster.py times it properly).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", action="store_true", help="run under mpiexec on the emulated hosts")
    parser.add_argument("--hosts", type=int, default=2, help="fake hosts for thread ranks")
    parser.add_argument("--per-host", type=int, default=2, help="thread ranks per fake host")
    parser.add_argument("--megabytes", type=float, default=4.0)
    args = parser.parse_args()
    if args.cluster or mc.world().size > 1:
        lines = lesson(mc.world(), args.megabytes)
    else:
        labels = [f"fake-node{h}" for h in range(args.hosts) for _ in range(args.per_host)]
        lines = mc.run_local(lambda comm: lesson(comm, args.megabytes), len(labels), hosts=labels)[0]
    for line in lines or []:
        print(line)


if __name__ == "__main__":
    main()
