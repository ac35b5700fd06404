"""Soak: 1000 DDP steps on 4 ranks with a snapshot every 100 -- no hang, flat memory, no litter.

    MPIR_CVAR_ENABLE_HEAVY_YIELD=1 MPIEXEC_TIMEOUT=900 MINIPAR_COMM_TIMEOUT=120 OMP_NUM_THREADS=1 \\
        .venv/bin/mpiexec -n 4 .venv/bin/python -m mpi4py benchmarks/soak.py

(4 ranks on a 2-core machine: oversubscribed, hence MPICH's heavy yield.)

What it trains: an MLP 64-128-128-10 with dropout on the 8x8 digits, Adam,
batch 16 per rank from a DistributedSampler (an epoch is 22 steps),
``DistributedDataParallel`` with 1 MiB buckets, ``fault.check_finite`` on
every loss, and ``save_distributed(..., gather=True)`` every 100 steps into a
fresh temporary directory. ``MINIPAR_COMM_TIMEOUT`` bounds every wait, so a
hang would become an error naming the stuck rank.

What it measures and prints (rank 0):

- resident memory (``/proc/self/statm``) of every rank at every snapshot; the
  target is growth < 5% from step 100 (after warm-up) to step 1000;
- median seconds per training step and per snapshot;
- the files in the snapshot directory at the end: only ``manifest.npz`` may
  remain (every temporary file of an atomic write renamed or removed);
- the last snapshot reloaded against the live weights: bit for bit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn, optim
from minipar.comm import allgather, broadcast, world
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel
from minipar.snapshot import fault
from minipar.snapshot.sharded import load_distributed, save_distributed
from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> float:
    """This process's resident set size now (not the peak): /proc/self/statm, field 2, in pages."""
    with open("/proc/self/statm") as statm:
        return float(statm.read().split()[1]) * PAGE


def main(steps: int, every: int) -> None:
    comm = world()
    rank, p = comm.rank, comm.size
    if comm.timeout is None:  # MINIPAR_COMM_TIMEOUT unset: bound every wait anyway
        comm.timeout = 120.0

    # one directory for all ranks: rank 0 makes it, the others learn its name (as bytes)
    name = np.zeros(256, dtype=np.uint8)
    if rank == 0:
        raw = tempfile.mkdtemp(prefix="minipar-soak-").encode()
        name[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    directory = bytes(broadcast(comm, name)).rstrip(b"\0").decode()

    digits = load_digits()
    minipar.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    minipar.manual_seed(100 + rank)
    ddp = DistributedDataParallel(model, comm, bucket_cap_mb=1)
    opt = optim.Adam(ddp.parameters(), lr=1e-3)
    train_set = TensorDataset(digits.x_train, digits.y_train)
    sampler = DistributedSampler(train_set, comm=comm, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=16, sampler=sampler, drop_last=True)

    rss_rows: list[tuple[int, np.ndarray]] = []
    step_seconds: list[float] = []
    save_seconds: list[float] = []
    step, loss = 0, None
    bar = tqdm(total=steps, disable=rank != 0, desc=f"soak, {p} ranks", ncols=80, file=sys.stdout)
    while step < steps:
        for x, y in loader:
            start = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            fault.check_finite(loss, step, comm, enabled=True)
            loss.backward()
            opt.step()
            step_seconds.append(time.perf_counter() - start)
            step += 1
            bar.update(1)
            if step % every == 0:
                start = time.perf_counter()
                shared = {"model": ddp.state_dict(), "optimizer": opt.state_dict(), "step": step}
                local = {"rng": minipar.get_rng_state(), "sampler": sampler.state_dict()}
                save_distributed(directory, comm, shared=shared, local=local, gather=True)
                save_seconds.append(time.perf_counter() - start)
                # (1,) per rank -> (p,) on every rank: every rank's resident memory now
                rss = allgather(comm, np.array([resident_bytes()]), out=np.empty(p))
                rss_rows.append((step, rss.copy()))
            if step == steps:
                break
        else:
            sampler.set_epoch(sampler.epoch + 1)
    bar.close()

    shared, _ = load_distributed(directory, comm)
    live = [param.array for param in model.parameters()]
    identical = all(a.tobytes() == b.tobytes() for a, b in zip(shared["model"].values(), live))
    comm.barrier()
    if rank != 0:
        return
    leftovers = sorted(os.listdir(directory))
    shutil.rmtree(directory)

    mib = 1024 * 1024
    print(f"\nsoak: {steps} DDP steps on {p} ranks (cpu count {os.cpu_count()}), snapshot every {every}")
    print(f"final loss {loss.item():.4f}; median step {1e3 * np.median(step_seconds):.2f} ms; "
          f"median snapshot {1e3 * np.median(save_seconds):.2f} ms ({len(save_seconds)} snapshots)")
    print("\nresident memory (MiB) at each snapshot")
    print("  step " + "".join(f"   rank {r}" for r in range(p)))
    for at, rss in rss_rows:
        print(f"{at:>6} " + "".join(f"{value / mib:>9.2f}" for value in rss))
    first, last = rss_rows[0][1], rss_rows[-1][1]
    growth = 100 * (last - first) / first
    worst = float(np.max(growth))
    print(f"growth step {rss_rows[0][0]} -> {rss_rows[-1][0]}: "
          + ", ".join(f"rank {r} {g:+.2f}%" for r, g in enumerate(growth))
          + f"  (target < 5%: {'met' if worst < 5 else 'MISSED'})")
    clean = leftovers == ["manifest.npz"]
    print(f"files left in the snapshot directory: {leftovers} "
          f"(only the snapshot: {'yes' if clean else 'NO'})")
    print(f"last snapshot reloaded equals the live weights bit for bit: {identical}")
    print("no hang: every wait was bounded by MINIPAR_COMM_TIMEOUT and the job finished")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    options = parser.parse_args()
    main(options.steps, options.every)
