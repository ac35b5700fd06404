"""Ring all-reduce, step by step.  mpiexec -n 4 python -m mpi4py lessons/03_ring_allreduce.py

All-reduce leaves on every rank the elementwise sum of every rank's array:
it is the one collective data-parallel training cannot do without (it sums
the gradients). This lesson

1. runs minipar's ``ring_allreduce`` at p = 4 inside ``message_log(comm)``,
   the communicator's record of every message it sends, and prints who sent
   how many bytes to whom at every step of the reduce-scatter and the
   all-gather, with the chunk the schedule (``ring_schedule``, the formula)
   says it was;
2. sums each rank's log and prints it beside the theory, ``2(p-1)/p * N``
   for the ring and ``(p-1) N`` at the root of the naive
   reduce-then-broadcast;
3. times naive vs ring all-reduce and prints the ratio beside the alpha-beta
   model's prediction. On the emulated cluster (``minipar cluster up --hosts 2
   --gbit 2``, then ``minipar run 3 -n 4 --cluster``: k = 2 ranks per host) the
   links set the time and the model is the link's: naive moves 2(p-k) N through
   rank 0's host, the ring 2(p-1)/p N through every host, ratio (p-k) p/(p-1),
   each time printed beside bytes x 8 / rate. On one host it says why the
   numbers there differ (cores vs ranks, memcpy, the load average at start).

``--readable`` runs the one-pass ring (``ring_allreduce(..., slabs=False)``)
instead of the slabbed default; at these sizes both send the same messages.
``MINIPAR_VERBOSE=1`` prints every logged message as it is sent, on every rank.

Only rank 0 prints. On a machine with fewer cores than ranks add
MPIR_CVAR_ENABLE_HEAVY_YIELD=1, or MPICH's busy-polling ranks starve each other.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

import minipar.comm as mc
from minipar import cluster

LOAD_AT_START = os.getloadavg()[0]  # before this lesson loads the cores

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--readable", action="store_true",
                    help="run the one-pass ring (slabs=False) instead of the slabbed one")
options = parser.parse_args()
comm = mc.world()
rank, p = comm.rank, comm.size


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


# 1. Record every message: the communicator's message log.
N = 2 * 1024 * 1024  # bytes: 524,288 float32 values
flat = np.full(N // 4, rank + 1.0, dtype=np.float32)
comm.reset_counters()
with mc.message_log(comm) as log:
    mc.ring_allreduce(comm, flat, slabs=not options.readable)
assert (flat == p * (p + 1) / 2).all()
assert comm.bytes_sent == sum(m.nbytes for m in log)  # the counters read the same stream

# Every rank sends rank 0 its log as rows of (source, dest, nbytes), in the order sent.
rows = np.array([(m.source, m.dest, m.nbytes) for m in log], dtype=np.int64).reshape(-1, 3)
gathered = mc.gather_to_root(comm, rows.view(np.uint8).reshape(-1))
if rank == 0:
    logs = [np.frombuffer(blob, dtype=np.int64).reshape(-1, 3) for blob in gathered]
    chunk_bytes = [4 * len(part) for part in np.array_split(flat, p)]
    form = "one-pass" if options.readable else "slabbed"
    say(f"1. ring all-reduce ({form}) of N = {N:,} bytes on p = {p} ranks, {p} chunks of "
        f"~N/p bytes; chunk c ends the reduce-scatter summed on rank c, then is copied round")
    schedule = mc.ring_schedule(p)  # (phase, step, sender, receiver, chunk), the formula
    for index, step in enumerate(m.step for m in log):
        for r in range(p):
            source, dest, nbytes = logs[r][index]
            chunk = schedule[index * p + r][4]
            assert (source, dest, nbytes) == (r, schedule[index * p + r][3], chunk_bytes[chunk])
            say(f"   {step if r == 0 else '':<24} rank {source} -> rank {dest}  {nbytes:>9,} B"
                f"  (chunk {chunk})")

    # 2. Bytes: each rank's log, summed, beside the formula.
    say(f"\n2. bytes sent per rank, from the log (theory 2(p-1)/p*N = {2 * (p - 1) * N // p:,};"
        f" messages 2(p-1) = {2 * (p - 1)})")
    for r, rows_r in enumerate(logs):
        say(f"   rank {r}: {len(rows_r)} messages, {int(rows_r[:, 2].sum()):,} B")
comm.reset_counters()
mc.naive_allreduce(comm, np.ones(N // 4, dtype=np.float32))
say(f"   naive, rank 0 (the root): {comm.bytes_sent:,} (theory (p-1)*N = {(p - 1) * N:,}); "
    "the root's link carries everything")


# 3. Time. Bandwidth terms: naive 2(p-1) N beta at the root, ring 2(p-1)/p N beta.
def median_time(function: Callable[..., object], array: np.ndarray, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        function(comm, array)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


big = np.zeros(16 * 1024 * 1024 // 4, dtype=np.float32)  # 16 MiB
naive_time = median_time(mc.naive_allreduce, big)
ring_time = median_time(lambda c, x: mc.ring_allreduce(c, x, slabs=not options.readable), big)
say(f"\n3. 16 MiB: naive {naive_time * 1e3:.1f} ms, ring {ring_time * 1e3:.1f} ms, "
    f"naive/ring = {naive_time / ring_time:.1f}")
blobs = mc.gather_to_root(comm, comm.host_name().encode())
names = [bytes(blob).decode() for blob in blobs or []]  # every rank's host, on rank 0
if rank == 0 and len(set(names)) > 1:  # ranks on several hosts: the links decide
    k = names.count(names[0])  # ranks per host (in blocks: ranks 0 .. k-1 share rank 0's host)
    say(f"   on {len(set(names))} hosts, k = {k} ranks per host: naive moves (p-k) N into rank 0's host, "
        f"then (p-k) N out,\n   2(p-k) N = {2 * (p - k) * big.nbytes:,} B one after the other; the ring "
        f"2(p-1)/p N = {2 * (p - 1) * big.nbytes // p:,} B each way on every host's link at once;\n"
        f"   link model naive/ring = (p-k) p/(p-1) = {(p - k) * p / (p - 1):.2f}")
    link = cluster.host_link()
    if link is not None and link.rate_bits:
        wire = cluster.tcp_framing(link.mtu) * 8 / link.rate_bits  # seconds per payload byte
        naive_model, ring_model = 2 * (p - k) * big.nbytes * wire, 2 * (p - 1) / p * big.nbytes * wire
        say(f"   at {link.rate_bits / 1e9:g} Gbit/s (x {cluster.tcp_framing(link.mtu):.3f} TCP/IP framing): "
            f"naive {naive_model * 1e3:.1f} ms (measured/model {naive_time / naive_model:.2f}), "
            f"ring {ring_model * 1e3:.1f} ms (measured/model {ring_time / ring_model:.2f})")
elif rank == 0:
    say(f"   bandwidth model naive/ring = p = {p}: naive 2(p-1) N beta at rank 0 against the ring's "
        "2(p-1)/p N beta; it holds where each rank has a link of its own")
    say("\n".join(cluster.one_host_caveats(p, LOAD_AT_START)))
