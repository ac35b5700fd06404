"""Point-to-point messages and what they cost.  mpiexec -n 2 python -m mpi4py lessons/02_point_to_point.py

Every collective in minipar is built from the calls shown here: ``send`` /
``recv`` (blocking), ``isend`` / ``irecv`` (start now, ``wait`` later) and
``sendrecv`` (both at once). This lesson

1. sends an array from rank 0 to rank 1 and back (arrays travel as raw bytes
   into a buffer the receiver allocated: nothing is pickled);
2. times a ping-pong for sizes from 8 B to 4 MiB and fits the alpha-beta
   model ``t(n) = alpha + n * beta``, the model every collective's cost is
   written in;
3. shows why two ranks that both ``send`` first may deadlock, and how
   ``sendrecv`` (or ``isend``/``irecv``) avoids it;
4. reads the communicator's message log (``message_log``: every message it
   sent, with its destination, bytes and tag) and checks the counters
   against it and against what was sent.

``--readable`` is accepted like every lesson's (there is no optimised form
here to swap out: point-to-point calls are the primitives). ``MINIPAR_VERBOSE=1``
prints every logged message as it is sent. Only rank 0 prints. With fewer
cores than ranks, add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import minipar.comm as mc

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--readable", action="store_true",
                    help="accepted for uniformity; this lesson has one form only")
parser.parse_args()
comm = mc.world()
rank, p = comm.rank, comm.size
if p != 2:
    raise SystemExit("run with exactly 2 ranks: mpiexec -n 2 python -m mpi4py "
                     "lessons/02_point_to_point.py")
other = 1 - rank


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


# 1. One message each way. recv fills a buffer we allocated, of the right size and dtype.
if rank == 0:
    comm.send(np.arange(5, dtype=np.float64), dest=1)
    back = comm.recv(np.empty(5), source=1)
    say(f"1. sent [0 1 2 3 4], got back {back} (rank 1 doubled it)")
else:
    buffer = comm.recv(np.empty(5), source=0)
    comm.send(buffer * 2, dest=0)

# 2. Ping-pong: half a round trip is the one-way time t(n) = alpha + n beta.
sizes = [8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20]
one_way = []
for nbytes in sizes:
    message = np.zeros(nbytes, dtype=np.uint8)
    samples = []
    for _ in range(200 if nbytes <= 32768 else 20):
        comm.barrier()
        start = time.perf_counter()
        if rank == 0:
            comm.send(message, 1)
            comm.recv(message, 1)
        else:
            comm.recv(message, 0)
            comm.send(message, 0)
        samples.append((time.perf_counter() - start) / 2)
    one_way.append(float(np.median(samples)))
# Fit t = alpha + n beta, weighting each size by 1/t so small and big sizes count alike.
times = np.array(one_way)
beta, alpha = np.polyfit(sizes, times, 1, w=1 / times)
say(f"\n2. ping-pong, one-way time; fitted t(n) = alpha + n * beta with alpha = "
    f"{alpha * 1e6:.1f} us, 1/beta = {1 / beta / 1e9:.2f} GB/s")
say(f"   {'bytes':>9}  {'measured':>10}  {'model':>10}  {'bandwidth':>10}")
for nbytes, measured in zip(sizes, one_way):
    say(f"   {nbytes:>9,}  {measured * 1e6:8.1f}us  {(alpha + beta * nbytes) * 1e6:8.1f}us  "
        f"{nbytes / measured / 1e9:6.2f}GB/s")
say(f"   below ~alpha/beta = {alpha / beta:,.0f} bytes a message costs mostly latency")

# 3. Deadlock. If both ranks call send first with a big message, each send waits for a
#    matching recv that the other rank never reaches (MPI may buffer small messages,
#    which hides the bug until the message grows). sendrecv posts both halves at once.
big = np.full(1 << 20, rank, dtype=np.float32)
incoming = np.empty_like(big)
comm.sendrecv(big, other, incoming, other)
say(f"\n3. sendrecv swapped 4 MiB without deadlock: rank 0 received rank {int(incoming[0])}'s data")
requests = [comm.irecv(incoming, other, tag=1), comm.isend(big, other, tag=1)]
for request in requests:
    request.wait()
say("   isend/irecv then wait(): the same exchange, and room to compute before waiting")

# 4. The message log: every message this communicator sends passes once through one place,
#    which adds it to the counters and, inside message_log, records it.
comm.reset_counters()
with mc.message_log(comm) as log:
    for step in range(10):
        comm.sendrecv(big, other, incoming, other, sendtag=step, recvtag=step)
say("\n4. the message log of ten sendrecv calls, first three:")
for message in log[:3]:
    say(f"   {message}")  # Message(source, dest, nbytes, tag, collective=None, step=None)
logged = sum(message.nbytes for message in log)
assert (comm.bytes_sent, comm.messages_sent) == (logged, len(log))
say(f"   bytes sent per rank: {logged:,} in {len(log)} messages (theory 10 * N = "
    f"{10 * big.nbytes:,} in 10); the counters say {comm.bytes_sent:,} in {comm.messages_sent}")
