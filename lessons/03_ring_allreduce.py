"""Ring all-reduce, step by step.  mpiexec -n 4 python -m mpi4py lessons/03_ring_allreduce.py

All-reduce leaves on every rank the elementwise sum of every rank's array:
it is the one collective data-parallel training cannot do without (it sums
the gradients). This lesson

1. runs minipar's ``ring_allreduce`` at p = 4 with the sends recorded, and
   prints who sent which chunk to whom at every step of the reduce-scatter
   and the all-gather (checked against ``ring_schedule``, the formula);
2. counts the bytes each rank sent and prints them beside the theory,
   ``2(p-1)/p * N`` for the ring and ``(p-1) N`` at the root of the naive
   reduce-then-broadcast;
3. times naive vs ring all-reduce and prints the ratio beside the alpha-beta
   model's prediction.

Only rank 0 prints. On a machine with fewer cores than ranks add
MPIR_CVAR_ENABLE_HEAVY_YIELD=1, or MPICH's busy-polling ranks starve each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

import minipar.comm as mc
from minipar.comm.ring import ring_schedule

comm = mc.world()
rank, p = comm.rank, comm.size


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


# 1. Record every message: wrap this rank's sendrecv so it notes (receiver, chunk).
N = 2 * 1024 * 1024  # bytes: 524,288 float32 values
flat = np.full(N // 4, rank + 1.0, dtype=np.float32)
bounds = [len(part) for part in np.array_split(flat, p)]
starts = np.cumsum([0] + bounds)
log = []
plain_sendrecv = comm.sendrecv


def recording_sendrecv(sendbuf: np.ndarray, dest: int, recvbuf: np.ndarray, source: int,
                       sendtag: int = 0, recvtag: int = 0) -> np.ndarray:
    offset = (sendbuf.ctypes.data - flat.ctypes.data) // flat.itemsize
    log.append((dest, int(np.searchsorted(starts, offset, side="right") - 1)))
    return plain_sendrecv(sendbuf, dest, recvbuf, source, sendtag, recvtag)


comm.sendrecv = recording_sendrecv  # an instance attribute: the collectives now call this
comm.reset_counters()
mc.ring_allreduce(comm, flat)
comm.sendrecv = plain_sendrecv
sent_by_ring = comm.bytes_sent
assert (flat == p * (p + 1) / 2).all()

# Every rank tells rank 0 its log: 2(p-1) rows of (receiver, chunk), gathered as an array.
mine = np.array(log, dtype=np.int64).reshape(-1)
everyone = mc.allgather(comm, mine, out=np.empty(p * mine.size, dtype=np.int64))
logs = everyone.reshape(p, 2 * (p - 1), 2)  # (rank, message, [receiver, chunk])
say(f"1. ring all-reduce of N = {N:,} bytes on p = {p} ranks, {p} chunks of ~N/p bytes")
say("   chunk c ends the reduce-scatter summed on rank c, then is copied round the ring")
expected = ring_schedule(p)
for index, (phase, step, *_rest) in enumerate(expected[::p]):
    for r in range(p):
        title = f"{phase} step {step}:" if r == 0 else ""
        say(f"   {title:<22} rank {r} -> rank {logs[r, index, 0]} chunk {logs[r, index, 1]}")
    for r in range(p):  # the recorded move is the one the schedule predicts
        assert (r, logs[r, index, 0], logs[r, index, 1]) == expected[index * p + r][2:]

# 2. Bytes: the ring sends every chunk twice round the ring minus what it owns.
theory = 2 * (p - 1) * N // p
say(f"\n2. bytes sent per rank: {sent_by_ring:,} (theory 2(p-1)/p*N = {theory:,})")
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
ring_time = median_time(mc.ring_allreduce, big)
say(f"\n3. 16 MiB: naive {naive_time * 1e3:.1f} ms, ring {ring_time * 1e3:.1f} ms, "
    f"naive/ring = {naive_time / ring_time:.1f} (bandwidth model: p = {p})")
say("   (with fewer cores than ranks the processes also queue for CPU, which blurs the ratio)")
