"""A cluster on one machine: hosts with rate-limited links, bytes counted on the link, what overlap hides.

    minipar cluster up --hosts 2 --gbit 2 && minipar run 18 -n 2 --cluster
    MPIR_CVAR_ENABLE_HEAVY_YIELD=1 MPIR_CVAR_POLLS_BEFORE_YIELD=1 minipar run 18 -n 2 --cluster  # polite
    mpiexec -n 2 python -m mpi4py lessons/18_cluster.py     # one host: what it can show, and why
    minipar cluster down

``minipar cluster up`` (root; ``ip``, ``tc``, ``unshare``) makes every host a
Linux network namespace with its own hostname (node0, node1, ...), so MPI sees
separate machines; a veth pair is the host's cable, from its ``eth0`` to a
bridge (the switch); a token bucket (``tc qdisc ... tbf rate 2gbit``) on each
end of the cable limits what the host sends and receives. ``--cluster`` starts
the ranks inside the hosts and makes MPI's network use TCP (``UCX_TLS=tcp``), so
the bytes between hosts cross the cables (ranks on one host still share memory,
as on a real cluster).

1. The hosts: each rank reports its hostname, its ``eth0`` address and the token
   bucket on it (what ``tc qdisc show dev eth0`` says inside its namespace).
2. The bytes crossed the link: each host's token-bucket byte counter (the qdisc's,
   ``tc -s qdisc show dev eth0``: a rank that is root reads its own host's) before
   and after ring all-reduces of N bytes, beside the formula 2(p-1)/p N per host
   (ranks in blocks by host: one ring edge leaves each host) times TCP/IP framing,
   and the time beside what the link's rate allows.
3. What overlap hides: DDP's step on an MLP 784-1024-1024-1024-10 (batch 64 per rank),
   blocking (``overlap=False``) vs overlapped, beside compute alone and the
   all-reduce of its buckets alone; the hidden fraction
   (t_bucketed - t_overlapped) / min(t_compute, t_comm) is 1 when overlap hides all
   it can, 0 when it hides nothing; beside it DDP's ceiling, (backward + step) /
   compute (the next forward waits for every bucket), and MPICH's wait mode
   (spinning, its default, or polite: a waiting thread sleeps and leaves the core).

On one host (no ``--cluster``) step 2 has no link to count and step 3 runs there,
with the reasons its numbers differ (cores vs ranks, memcpy, the load average at
start). ~10 s by default; ``--full`` adds 1 and 64 MiB and repeats more. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

import minipar
import minipar.comm as mc
from minipar import cluster, nn, optim
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel

LOAD_AT_START = os.getloadavg()[0]  # before this lesson loads the cores
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--full", action="store_true", help="1, 16 and 64 MiB; 3x the repeats")
parser.add_argument("--megabytes", type=float, default=16.0, help="the all-reduce of step 2")
options = parser.parse_args()
REPEATS = 40 if options.full else 15
comm = mc.world()
rank, p = comm.rank, comm.size


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def gathered(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (JSON-able) on rank 0, in rank order; None elsewhere."""
    blobs = mc.gather_to_root(comm, json.dumps(value).encode())
    return None if blobs is None else [json.loads(bytes(blob)) for blob in blobs]


def link_now() -> dict[str, Any] | None:
    link = cluster.host_link()
    return None if link is None else asdict(link)


# ----- 1. the hosts ---------------------------------------------------------------------------------
ranks = gathered({"host": comm.host_name(), "link": link_now()})
hosts = sorted({r["host"] for r in ranks}, key=[r["host"] for r in ranks].index) if ranks else []
spans_hosts = len(hosts) > 1  # known on rank 0, the one that prints
counted = spans_hosts and all(r["link"] for r in ranks or [])  # every host's counters readable
if spans_hosts:
    print(f"1. p = {p} ranks on H = {len(hosts)} hosts. Each host is a network namespace with its own "
          f"hostname;\n   its eth0 is one end of a veth cable to the bridge {cluster.BRIDGE} "
          f"({cluster.BRIDGE_ADDRESS}),\n   and a token bucket on eth0 limits what it sends "
          "(another on the bridge's end, what it receives)")
    print(f"   {'rank':<6}{'host (MPI.Get_processor_name)':<32}{'eth0':<16}{'MTU':>6}  token bucket on eth0")
    for r, row in enumerate(ranks):
        link = row["link"] or {}
        rate = "none" if not link.get("rate_bits") else f"tbf rate {link['rate_bits'] / 1e9:g} Gbit/s"
        print(f"   {r:<6}{row['host']:<32}{link.get('address') or '(no eth0)':<16}"
              f"{link.get('mtu', 0):>6}  {rate}")
elif ranks:
    print(f"1. all p = {p} ranks run on one host ({hosts[0]}): there is no link between them to measure.")
    print("   To build hosts with links (root; ip and tc from iproute2, unshare from util-linux):")
    print("       minipar cluster up --hosts 2 --gbit 2 && minipar run 18 -n 2 --cluster")
    try:
        found = cluster.status()
    except cluster.ClusterUnavailable as why:
        found, reason = None, str(why)
    else:
        reason = "none is up now" if found is None else ""
    if found is not None:
        print(f"   A cluster of {len(found.hosts)} hosts is up now, but these ranks are not on it: "
              "add --cluster.")
    else:
        print(f"   ({reason})")
if p < 2:
    say("   Steps 2 and 3 need at least 2 ranks: mpiexec -n 2 python -m mpi4py lessons/18_cluster.py")
    raise SystemExit(0)

# ----- 2. the bytes crossed the link ----------------------------------------------------------------
host_of = [hosts.index(r["host"]) for r in ranks] if ranks else []
host_of = mc.broadcast(comm, np.array(host_of or [0] * p, dtype=np.int64))  # every rank needs it
H = len(set(host_of.tolist()))
say(f"\n2. ring all-reduce of N bytes, p = {p} ranks on H = {H} host(s), ranks in blocks by host:\n"
    "   one ring edge leaves each host, so each host's uplink carries 2(p-1)/p N (the formula)")
sizes = [1, 16, 64] if options.full else [options.megabytes]
for megabytes in sizes:
    x = np.ones(int(megabytes * 2**20) // 4, dtype=np.float32)
    nbytes = x.nbytes
    mc.ring_allreduce(comm, x.copy())  # warm up: connections made before anything is counted
    comm.barrier()
    before = link_now()
    seconds = []
    with mc.message_log(comm) as log:
        for _ in range(REPEATS):
            y = x.copy()
            comm.barrier()
            start = time.perf_counter()
            mc.ring_allreduce(comm, y)
            seconds.append(time.perf_counter() - start)
    assert (y == p).all()
    comm.barrier()  # every rank done before the counters are read again
    after = link_now()
    crossing = sum(m.nbytes for m in log if m.source == rank and host_of[m.dest] != host_of[rank])
    rows = gathered({"host": comm.host_name(), "before": before, "after": after, "log": crossing})
    formula = 2 * (p - 1) / p * nbytes
    median = statistics.median(seconds)
    if rank != 0:
        continue
    per_host: dict[str, dict[str, Any]] = {}
    for row in rows or []:  # the ranks of one host read the same counters: keep the first, add the logs
        entry = per_host.setdefault(row["host"], {**row, "log": 0})
        entry["log"] += row["log"] / REPEATS
    print(f"   N = {nbytes:,} B, per all-reduce (mean of {REPEATS}); formula 2(p-1)/p N = {formula:,.0f} B")
    if not counted:
        off_host = ", ".join(f"{name} {entry['log']:,.0f} B" for name, entry in per_host.items())
        print(f"   minipar sent off-host: {off_host}; time {median * 1e3:.1f} ms (median)")
        print("   " + ("every rank is on this host: MPI moves the ring's bytes through shared memory, "
                      "there is no link to count" if not spans_hosts else
                      "the hosts' link counters cannot be read here (needs root and tc on every host)"))
        continue
    print(f"   {'host':<8}{'minipar sent off-host':>22}{'uplink (qdisc)':>17}{'downlink (eth0 rx)':>20}"
          f"{'uplink/formula':>16}")
    rate, mtu = None, 1500
    for name, entry in per_host.items():
        was, now = entry["before"], entry["after"]
        sent = (now["sent_bytes"] - was["sent_bytes"]) / REPEATS
        received = (now["received_bytes"] - was["received_bytes"]) / REPEATS
        rate, mtu = now["rate_bits"], now["mtu"]
        print(f"   {name:<8}{entry['log']:>20,.0f} B{sent:>15,.0f} B{received:>18,.0f} B"
              f"{sent / formula:>16.3f}")
    framing = cluster.tcp_framing(mtu)
    worst = max((e["after"]["sent_bytes"] - e["before"]["sent_bytes"]) / REPEATS for e in per_host.values())
    print(f"   TCP/IP framing: a {mtu} B packet carries {mtu - 52} B of payload and leaves as {mtu + 14} B, "
          f"x {framing:.3f};\n   the other {(worst / formula - framing) * 100:.1f}% of N: ACKs for the bytes "
          "received, MPI's own headers, the barriers")
    if rate:
        model = formula * framing * 8 / rate
        print(f"   time {median * 1e3:.1f} ms (median); the link at {rate / 1e9:g} Gbit/s needs\n"
              f"   2(p-1)/p N x {framing:.3f} x 8 / rate = {model * 1e3:.1f} ms: measured/model = "
              f"{median / model:.2f}")


# ----- 3. what overlap hides ------------------------------------------------------------------------
SIZES = [784, 1024, 1024, 1024, 10]


def mlp() -> nn.Sequential:
    minipar.manual_seed(0)
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        layers += [nn.Linear(fan_in, fan_out, dtype=np.float32)] + ([nn.ReLU()] if index < 3 else [])
    return nn.Sequential(*layers)


xs = minipar.tensor(np.random.default_rng(rank).normal(size=(64, 784)).astype(np.float32))  # (64, 784)
ys = np.random.default_rng(rank).integers(0, 10, 64)
alone = mlp()
blocking = DistributedDataParallel(mlp(), comm=comm, bucket_cap_mb=2, overlap=False)
overlapped = DistributedDataParallel(mlp(), comm=comm, bucket_cap_mb=2, overlap=True)
alone_opt, blocking_opt, overlapped_opt = (optim.SGD(m.parameters(), lr=0.01)
                                           for m in (alone, blocking, overlapped))
buckets = [np.zeros(bucket.nbytes // 4, dtype=np.float32) for bucket in blocking.buckets]


def training_step(model: nn.Module, opt: optim.Optimizer) -> tuple[float, float, float]:
    """One step; when forward, backward and the step ended (seconds from its start)."""
    start = time.perf_counter()
    opt.zero_grad()
    loss = F.cross_entropy(model(xs), ys)
    forward = time.perf_counter()
    loss.backward()  # DDP: returns with the averaged gradients
    backward = time.perf_counter()
    opt.step()
    return forward - start, backward - start, time.perf_counter() - start


phases: list[tuple[float, float, float]] = []  # compute alone's training_step moments
marks: list[float] = []  # this overlapped step's bucket all-reduces: start, end, start, end, ...
timelines: list[list[float]] = []  # per overlapped step: forward's end, the marks, backward's, step's (s)


def timed_reduce(flat: Any, reduce: Callable[[Any], Any] = overlapped.reduce_bucket) -> Any:
    """DDP's reduce step with the moments it runs (on DDP's communication thread)."""
    marks.append(time.perf_counter())
    reduce(flat)
    marks.append(time.perf_counter())
    return flat


overlapped.reduce_bucket = timed_reduce  # DDP's reduce step is one replaceable function: wrap it


def overlapped_step() -> None:
    marks.clear()
    start = time.perf_counter()
    forward, backward, end = training_step(overlapped, overlapped_opt)
    timelines.append([forward, *(mark - start for mark in marks), backward, end])


def ring_buckets() -> None:
    for bucket in buckets:
        mc.allreduce(comm, bucket, algorithm="ring")  # what DDP calls per bucket (reduce_bucket)


def mpi_buckets() -> None:
    from mpi4py import MPI

    for bucket in buckets:
        MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, bucket)  # MPI's own: one blocking C call per bucket


def beside(communicate: Callable[[], None]) -> Callable[[], None]:
    """No DDP: ``communicate`` on a plain thread while the main thread computes a step."""
    def both() -> None:
        worker = threading.Thread(target=communicate)
        worker.start()
        training_step(alone, alone_opt)
        worker.join()
    return both


variants: dict[str, Callable[[], None]] = {
    "compute": lambda: phases.append(training_step(alone, alone_opt)),
    "ring": ring_buckets,
    "bucketed": lambda: training_step(blocking, blocking_opt),
    "overlapped": overlapped_step,
    "ring thread": beside(ring_buckets),
}
if comm.backend == "mpi":
    variants |= {"mpi": mpi_buckets, "mpi thread": beside(mpi_buckets)}
times: dict[str, list[float]] = {name: [] for name in variants}
for round_ in range(REPEATS + 1):  # rounds interleave the variants: a noisy moment hurts them alike
    for name, step in variants.items():
        comm.barrier()
        start = time.perf_counter()
        step()
        if round_:  # round 0 warms up (threads, scratch buffers, connections)
            times[name].append(time.perf_counter() - start)
t = {name: 1e3 * statistics.median(samples) for name, samples in times.items()}  # ms
compute, ring = t["compute"], t["ring"]
say(f"\n3. DDP on an MLP 784-1024-1024-1024-10, float32 ({sum(b.nbytes for b in buckets):,} B of gradients "
    f"in {len(buckets)} buckets of <= 2 MiB),\n   batch 64 per rank, p = {p}; median step of {REPEATS} (ms); "
    "hidden = (serial - overlapped) / min(t_compute, t_comm)")


def hidden(serial: float, overlapped: float, communication: float) -> float:
    return (serial - overlapped) / min(compute, communication)


both = f"max(t_compute, t_comm) = {max(compute, ring):.1f}"
rows = [("compute alone (no gradient sync)", "compute", "t_compute", None),
        ("minipar ring all-reduce of the buckets", "ring", "t_comm", None),
        ("DDP bucketed, blocking (overlap=False)", "bucketed", f"t_compute + t_comm = {compute + ring:.1f}",
         None),
        ("DDP bucketed + overlapped (overlap=True)", "overlapped", both,
         hidden(t["bucketed"], t["overlapped"], ring)),
        ("no DDP: compute | ring on a thread", "ring thread", both,
         hidden(compute + ring, t["ring thread"], ring))]
if "mpi" in t:
    mpi = t["mpi"]
    rows += [("MPI.Allreduce of the buckets", "mpi", "t_mpi", None),
             ("no DDP: compute | MPI.Allreduce on a thread", "mpi thread", f"max(t_compute, t_mpi) = "
              f"{max(compute, mpi):.1f}", hidden(compute + mpi, t["mpi thread"], mpi))]
say(f"   {'':<44}{'ms':>7}   {'model':<30}{'hidden':>7}")
for label, name, model, hidden in rows:
    shown = f"{hidden:>7.2f}" if hidden is not None else ""
    say(f"   {label:<44}{t[name]:>7.1f}   {model:<30}{shown}".rstrip())
say("   hidden 1: all that can be hidden is; 0: nothing; below 0: overlapping costs more than it hides.")
forward, backward_end, total = (1e3 * statistics.median(moment) for moment in zip(*phases[1:]))  # ms
backward, step = backward_end - forward, total - backward_end
multiply_adds = sum(a * b for a, b in zip(SIZES, SIZES[1:]))  # the forward's matmuls, per sample
# backward: grad_W for every layer, grad_x for all but the first (its input needs none)
backward_share = (2 * multiply_adds - SIZES[0] * SIZES[1]) / (3 * multiply_adds - SIZES[0] * SIZES[1])
moments = [1e3 * statistics.median(moment) for moment in zip(*timelines[1:])]  # ms from the step's start
say(f"\n   Where an overlapped step's time goes (medians of {REPEATS}, ms from the step's start)")
say(f"     forward ends at {moments[0]:.1f}; backward fills the buckets from the output layer down")
for index, bucket in enumerate(overlapped.buckets):
    began, ended = moments[1 + 2 * index], moments[2 + 2 * index]
    say(f"     bucket {index} ({bucket.nbytes:>9,} B) all-reduced {began:6.1f} - {ended:6.1f}")
say(f"     backward returns at {moments[-2]:.1f} (the last average landed); the step ends at "
    f"{moments[-1]:.1f}")
first, busy = moments[1] - moments[0], moments[-3] - moments[1]
say(f"   The buckets' all-reduces span {busy:.1f} ms, first start to last end, against t_comm = "
    f"{ring:.1f} with\n   nothing beside them (x {busy / ring:.2f}: what computing beside them costs the "
    "communication).\n"
    f"   What no overlap can hide: the forward ({forward:.1f} in compute alone), backward until bucket 0's\n"
    f"   all-reduce starts ({first:.1f}: no byte travels before) and the step after the last bucket "
    f"({step:.1f}).\n"
    f"   So hidden <= (backward - {first:.1f}) / compute = ({backward:.1f} - {first:.1f}) / {total:.1f} = "
    f"{(backward - first) / total:.2f} when the link is the bottleneck;\n"
    "   a bucket 0 sent at once and the step run in backward would still cap it at (backward + step) /\n"
    f"   compute = {(backward + step) / total:.2f} (backward is {backward_share:.2f} of the step's "
    "matmuls by count, on any machine):\n"
    "   the next forward needs layer 1's bucket, the last one backward makes. The thread rows have no such\n"
    "   order: their whole step runs beside the all-reduces.")
polite = all(os.environ.get(name) == value for name, value in cluster.POLITE_WAITS.items())
say("   MPICH's waits here: " + (
    "polite (they sleep after every poll), so a waiting thread leaves the cores to compute" if polite else
    "spinning (its default): a thread blocked in MPI keeps a core busy polling. Where the ranks\n"
    "   and the links' TCP work share cores (every emulated host shares this machine's), rerun with\n"
    f"   {' '.join(f'{name}={value}' for name, value in cluster.POLITE_WAITS.items())} "
    "to let the overlap pay"))
if rank == 0 and not spans_hosts:
    print("\n".join(cluster.one_host_caveats(p, LOAD_AT_START)))
elif rank == 0:
    print(f"   load average at start: {LOAD_AT_START:.2f} on {os.cpu_count()} cores (every emulated host "
          "shares this machine's cores; only the links are separate)")
