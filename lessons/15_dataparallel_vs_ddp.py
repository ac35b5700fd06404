"""DataParallel vs DDP: one process with a replica per device, or one process per device.

    mpiexec -n 2 python -m mpi4py lessons/15_dataparallel_vs_ddp.py

(On a machine with fewer cores than ranks add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.)

1. ``nn.DataParallel`` on rank 0 alone: the same loss and gradients as the plain
   module (max difference printed), then where its step time goes, measured: the
   re-replication of the module every forward (``replicate``), the replicas'
   forwards on threads sharing one interpreter (the GIL: only NumPy's matmuls run in
   parallel), and the gather plus the *whole* backward on the output device's thread.
2. ``DistributedDataParallel`` on all ranks, the same model and per-replica batch:
   one process per replica, nothing re-replicated, every backward in parallel, the
   gradients averaged by bucketed all-reduces.
3. The table PyTorch's advice rests on: step time of the plain module, DataParallel at
   2 (and 4) replicas and DDP at this many ranks, for the same global batch.

Only rank 0 prints. On this machine (2 cores) 4 replicas or ranks share 2 cores.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import minipar
from minipar import nn, optim
from minipar.comm import world
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel
from minipar.parallel.data_parallel.dataparallel import replicate

comm = world()
rank, p = comm.rank, comm.size
SIZES, PER_REPLICA, REPEATS = (784, 1024, 1024, 10), 64, 8


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def mlp() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]), nn.ReLU(),
                         nn.Linear(SIZES[2], SIZES[3]))


def data(rows: int, seed: int) -> tuple[minipar.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    return minipar.tensor(rng.standard_normal((rows, SIZES[0])).astype(np.float32)), rng.integers(0, 10, rows)


def step_seconds(model: nn.Module, x: minipar.Tensor, y: np.ndarray) -> dict[str, float]:
    """Median forward, backward and optimizer times of REPEATS steps (after one warm-up)."""
    opt = optim.SGD(model.parameters(), lr=0.01)
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "step": []}
    for repeat in range(REPEATS + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if repeat:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(seconds)
    return {name: statistics.median(values) for name, values in parts.items()}


# ----- 1. DataParallel in one process (rank 0) ------------------------------------------------------
rows = {}
if rank == 0:
    x, y = data(PER_REPLICA * 2, 0)
    plain, wrapped = mlp(), nn.DataParallel(mlp(), device_ids=[0, 1])
    losses = [F.cross_entropy(m(x), y) for m in (plain, wrapped)]
    for loss in losses:
        loss.backward()
    worst = max(float(np.abs(a.grad.array - b.grad.array).max())
                for a, b in zip(plain.parameters(), wrapped.module.parameters()))
    say(f"1. DataParallel(2 replicas) vs the plain module: loss {losses[1].item():.7f} vs "
        f"{losses[0].item():.7f}, largest gradient difference {worst:.1e} (float32 rounding)")
    replicate_ms = statistics.median(
        [(lambda t: (replicate(plain, "cpu"), time.perf_counter() - t)[1])(time.perf_counter())
         for _ in range(20)]) * 1e3
    say(f"   re-replicating the module, every forward: {replicate_ms:.3f} ms per replica "
        f"({len(list(plain.parameters()))} Broadcast nodes each)")
    for replicas in (1, 2, 4):
        x, y = data(PER_REPLICA * 2, 1)  # the same global batch for every row of the table
        model = mlp() if replicas == 1 else nn.DataParallel(mlp(), device_ids=list(range(replicas)))
        rows[f"{'plain module' if replicas == 1 else f'DataParallel, {replicas} replicas'}"] = \
            step_seconds(model, x, y)

# The other ranks wait for rank 0 without spinning (a blocking MPI wait busy-polls a core that
# DataParallel's threads need): a non-blocking receive, tested every 10 ms.
token = np.zeros(1)
if rank == 0:
    for other in range(1, p):
        comm.send(token, other, tag=15)
else:
    request = comm.irecv(token, 0, tag=15)
    while not request.test():
        time.sleep(0.01)

# ----- 2. DDP: one process per replica --------------------------------------------------------------
x, y = data(PER_REPLICA * 2 // p, 10 + rank)  # this rank's share of the same global batch size
ddp_row = step_seconds(DistributedDataParallel(mlp(), comm=comm), x, y)
rows[f"DDP, {p} ranks"] = ddp_row

# ----- 3. the table -----------------------------------------------------------------------------------
say(f"\n2-3. one step of {'-'.join(map(str, SIZES))} (float32), global batch {PER_REPLICA * 2}, "
    f"median of {REPEATS}:")
say(f"   {'':<26}{'forward':>9}{'backward':>10}{'step':>8}{'total':>9}")
for name, parts in rows.items():
    total = sum(parts.values())
    say(f"   {name:<26}{1e3 * parts['forward']:>7.1f}ms{1e3 * parts['backward']:>8.1f}ms"
        f"{1e3 * parts['step']:>6.1f}ms{1e3 * total:>7.1f}ms")
say("\n   DataParallel's forward runs in parallel only inside NumPy's matmuls (the GIL), pays the "
    "replication\n   every step, and runs the whole backward on one thread; DDP's processes "
    "compute both passes in parallel\n   and pay only the all-reduce. That is why PyTorch "
    "recommends DDP even on one machine.")
