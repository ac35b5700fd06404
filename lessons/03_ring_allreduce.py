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
   model's prediction.

``--readable`` runs the one-pass ring (``ring_allreduce(..., slabs=False)``)
instead of the slabbed default; at these sizes both send the same messages.
``MINIPAR_VERBOSE=1`` prints every logged message as it is sent, on every rank.

Only rank 0 prints. On a machine with fewer cores than ranks add
MPIR_CVAR_ENABLE_HEAVY_YIELD=1, or MPICH's busy-polling ranks starve each other.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import minipar.comm as mc

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
    f"naive/ring = {naive_time / ring_time:.1f} (bandwidth model: p = {p})")
say("   (with fewer cores than ranks the processes also queue for CPU, which blurs the ratio)")
