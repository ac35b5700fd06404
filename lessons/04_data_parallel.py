"""Data parallelism: 4 ranks train the same model as 1 process, and talk while they differentiate.

    mpiexec -n 4 python -m mpi4py lessons/04_data_parallel.py

(On a machine with fewer cores than ranks add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.)

1. Trains an MLP on the 8x8 digits with ``DistributedDataParallel``: each rank
   reads its quarter of every global batch (``DistributedSampler``), and DDP
   averages the gradients. Rank 0 also trains a copy alone on the whole global
   batches and prints both loss curves side by side: they agree to ~1e-15,
   because the mean of the ranks' mean losses *is* the global mean loss.
2. Counts the bytes each rank sent per step beside the ring's formula
   2(p-1)/p * N * itemsize; then runs the naive per-parameter sync
   (``NaiveDataParallel``) beside DDP on a wider model and prints, from the
   message log, messages and time per step next to 2(p-1) messages per
   parameter vs per bucket.
3. Traces a few steps of a wider model and prints rank 0's timeline: the
   bucket all-reduces run on the communication thread while the main thread is
   still differentiating the earlier layers.

On the emulated cluster (``minipar cluster up --hosts 2 --gbit 2``, then
``minipar run 4 -n 4 --cluster``) step 2 also prints the least time the link
allows a step, 2(p-1)/p N bytes x 8 / rate, beside the measured steps; on one
host it says why the numbers there differ (cores vs ranks, memcpy, the load
average at start).

``--readable`` runs the plain forms (DDP's copying buckets, the whole-array SGD):
the same numbers, a little slower. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from tqdm import tqdm

import minipar
from minipar import cluster, nn, optim
from minipar.comm import allreduce, gather_to_root, message_log, world
from minipar.nn import functional as F
from minipar.observe import trace
from minipar.parallel import DistributedDataParallel, NaiveDataParallel
from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits

LOAD_AT_START = os.getloadavg()[0]  # before this lesson loads the cores
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--readable", action="store_true",
                    help="the plain forms (copying buckets, whole-array SGD)")
readable = parser.parse_args().readable
comm = world()
rank, p = comm.rank, comm.size
BATCH_PER_RANK, EPOCHS = 16, 3


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def mlp(sizes: list[int], dtype: type = np.float64) -> nn.Sequential:
    minipar.manual_seed(0)  # the same start everywhere (DDP would broadcast rank 0's anyway)
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out, dtype=dtype)] + ([nn.ReLU()] if index < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


# ----- 1. the same training, on p ranks and on one process --------------------------------------
digits = load_digits(dtype=np.float64)
train_set = TensorDataset(digits.x_train, digits.y_train)
sampler = DistributedSampler(train_set, comm=comm, shuffle=True, seed=0)
loader = DataLoader(train_set, batch_size=BATCH_PER_RANK, sampler=sampler)
ddp = DistributedDataParallel(mlp([64, 128, 128, 10]), comm=comm, reduce_in_place=not readable)
opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9, blocked=not readable)
alone = mlp([64, 128, 128, 10])  # rank 0's single-process oracle
alone_opt = optim.SGD(alone.parameters(), lr=0.1, momentum=0.9)

say(f"{p} ranks x {BATCH_PER_RANK} samples = global batch {p * BATCH_PER_RANK}; "
    f"{len(loader)} steps per epoch; buckets (last layer first): {ddp.bucket_layout}")
local_losses, alone_losses = [], []
comm.reset_counters()
progress = tqdm(total=EPOCHS * len(loader), desc="training", disable=rank != 0)
for epoch in range(EPOCHS):
    sampler.set_epoch(epoch)  # the same new permutation on every rank
    order = sampler.global_indices()  # the padded global list; rank r reads positions r, r+p, ...
    for step, (x, y) in enumerate(loader):
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()  # returns with the averaged gradients
        opt.step()
        local_losses.append(loss.item())
        if rank == 0:  # the global batch: the union of the ranks' batches of this step
            rows = order[step * BATCH_PER_RANK * p:(step + 1) * BATCH_PER_RANK * p]
            whole = F.cross_entropy(alone(minipar.tensor(digits.x_train[rows])), digits.y_train[rows])
            alone_opt.zero_grad()
            whole.backward()
            alone_opt.step()
            alone_losses.append(whole.item())
        progress.update()
progress.close()
steps = len(local_losses)
bytes_per_step = comm.bytes_sent / steps
global_losses = allreduce(comm, np.array(local_losses), op="mean")  # the curve of the global batch

if rank == 0:
    gap = np.abs(global_losses - np.array(alone_losses))
    print(f"\nstep   loss on {p} ranks     loss on 1 process")
    for i in list(range(0, steps, steps // 6)) + [steps - 1]:
        print(f"{i:4d}   {global_losses[i]:.15f}   {alone_losses[i]:.15f}")
    print(f"max |difference| over {steps} steps: {gap.max():.1e}  ->  the curves are equal "
          f"(float64 rounding only)" if gap.max() < 1e-9 else f"max |difference| {gap.max():.1e}: MISMATCH")
    weights_gap = max(np.abs(a.array - b.array).max() for a, b in zip(ddp.parameters(), alone.parameters()))
    print(f"max |weight difference| after training: {weights_gap:.1e}")

params = sum(param.array.size for param in ddp.parameters())
exact = 0  # the ring sends every chunk but its own, then every chunk but its right neighbour's
for bucket in ddp.buckets:
    size = bucket.nbytes // 8
    chunks = [len(c) for c in np.array_split(np.empty(size), p)]
    exact += (2 * size - chunks[0] - chunks[1 % p]) * 8
say(f"\nbytes sent by rank 0 per step: {bytes_per_step:,.0f}; theory 2(p-1)/p * N * 8 = "
    f"{2 * (p - 1) / p * params * 8:,.0f} for N = {params:,} float64 elements "
    f"(exactly 2N - c_0 - c_1 = {exact:,} with the array_split chunk sizes c)")

# ----- 2b. per parameter vs per bucket: messages and time per step -------------------------------
def step_messages_and_seconds(model: nn.Module, sync: object) -> tuple[int, float]:
    """Messages rank 0 sends in one training step (from the message log) and the median step time."""
    step_opt = optim.SGD(model.parameters(), lr=0.01, blocked=not readable)
    xs = minipar.tensor(np.random.default_rng(rank).normal(size=(64, 784)).astype(np.float32))
    ys = np.random.default_rng(rank).integers(0, 10, 64)
    seconds = []
    for repeat in range(6):  # the first step warms up; the second is logged
        comm.barrier()
        start = time.perf_counter()
        with message_log(comm) as log:
            step_opt.zero_grad()
            F.cross_entropy(model(xs), ys).backward()
            if sync is not None:
                sync()  # the naive form: one all-reduce per parameter, after backward
            step_opt.step()
        seconds.append(time.perf_counter() - start)
        if repeat == 1:
            sent = sum(1 for message in log if message.source == rank)
    return sent, statistics.median(seconds[1:])


sizes = [784, 1024, 1024, 1024, 10]
naive = NaiveDataParallel(mlp(sizes, np.float32), comm)
bucketed = DistributedDataParallel(mlp(sizes, np.float32), comm=comm, bucket_cap_mb=25,
                                   reduce_in_place=not readable)
n_params, n_buckets = len(naive.params), len(bucketed.buckets)
naive_sent, naive_time = step_messages_and_seconds(naive, naive.allreduce_gradients)
ddp_sent, ddp_time = step_messages_and_seconds(bucketed, None)
say(f"\n784-1024-1024-1024-10 MLP (float32, {n_params} parameter tensors), one step on {p} ranks:")
say(f"  {'sync':<26}{'messages/step':>14}{'2(p-1) x count':>16}{'step ms':>9}")
say(f"  {'naive, per parameter':<26}{naive_sent:>14}{2 * (p - 1) * n_params:>16}{1e3 * naive_time:>9.1f}")
say(f"  {f'DDP, {n_buckets} bucket(s) of 25 MiB':<26}{ddp_sent:>14}{2 * (p - 1) * n_buckets:>16}"
    f"{1e3 * ddp_time:>9.1f}")
slabs = ddp_sent // max(1, 2 * (p - 1) * n_buckets)
if slabs > 1:
    say(f"  (chunks over 2 MiB travel in K = {slabs} slabs: 2(p-1) K messages per bucket)")
blobs = gather_to_root(comm, comm.host_name().encode())
names = [bytes(blob).decode() for blob in blobs or []]  # every rank's host, on rank 0
link = cluster.host_link() if len(set(names)) > 1 else None  # rank 0's host's cable (root only)
gradient_bytes = sum(param.array.nbytes for param in bucketed.parameters())
if rank == 0 and len(set(names)) > 1:
    on_link = 2 * (p - 1) / p * gradient_bytes  # ranks in blocks by host: one ring edge leaves each host
    say(f"  on {len(set(names))} hosts: both forms send 2(p-1)/p N = {on_link:,.0f} B of gradients over each "
        "host's link per step")
    if link is not None and link.rate_bits:
        least = on_link * cluster.tcp_framing(link.mtu) * 8 / link.rate_bits
        say(f"  at {link.rate_bits / 1e9:g} Gbit/s (x {cluster.tcp_framing(link.mtu):.3f} TCP/IP framing) "
            f"that takes {least * 1e3:.1f} ms: measured step / link time = naive {naive_time / least:.2f}, "
            f"DDP {ddp_time / least:.2f}")
elif rank == 0:
    say("  (the same bytes either way)")
    say("\n".join("  " + line for line in cluster.one_host_caveats(p, LOAD_AT_START)))

# ----- 3. watch the overlap -------------------------------------------------------------------------
wide = DistributedDataParallel(mlp([784, 1024, 1024, 1024, 10], np.float32), comm=comm, bucket_cap_mb=2)
wide_opt = optim.SGD(wide.parameters(), lr=0.01)
x = minipar.tensor(np.random.default_rng(rank).normal(size=(64, 784)).astype(np.float32))
y = np.random.default_rng(rank).integers(0, 10, 64)
for traced in (False, True):  # one untraced warm-up round first
    if traced:
        trace.enable()
    for _ in range(3):
        with trace.span("forward", "compute"):
            loss = F.cross_entropy(wide(x), y)
        wide_opt.zero_grad()
        with trace.span("backward", "compute"):
            loss.backward()  # ends with DDP's "wait for gradient all-reduces"
        wide_opt.step()
trace.disable()
events = trace.events()
if rank == 0:
    last = [e for e in events if e["name"] == "forward"][-1]["ts"]  # the last step's spans
    spans = sorted((e for e in events if e["ts"] >= last), key=lambda e: e["ts"])
    wait = next(e for e in spans if e["name"] == "wait for gradient all-reduces")
    print(f"\nrank 0, one step of a 784-1024-1024-1024-10 MLP (float32), buckets of <= 2 MiB: "
          f"{wide.bucket_layout}")
    print(f"  {'span':<34}{'thread':<16}{'start ms':>9}{'end ms':>9}")
    for e in spans:
        start, end = (e["ts"] - last) / 1e3, (e["ts"] + e["dur"] - last) / 1e3
        print(f"  {e['name']:<34}{e['tid']:<16}{start:9.2f}{end:9.2f}")
    comm_spans = [e for e in spans if e["name"].startswith("allreduce bucket")]
    total = sum(e["dur"] for e in comm_spans)
    hidden = sum(max(0.0, min(e["ts"] + e["dur"], wait["ts"]) - e["ts"]) for e in comm_spans)
    print(f"  {hidden / total:.0%} of the all-reduce time ran while backward was still computing "
          f"(before the final wait at {(wait['ts'] - last) / 1e3:.2f} ms); the wait itself took "
          f"{wait['dur'] / 1e3:.2f} ms")
