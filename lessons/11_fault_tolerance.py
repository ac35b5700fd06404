"""Fault tolerance: snapshots every N steps, an injected fault, the restart -- and not one bit lost.

    python lessons/11_fault_tolerance.py

(The lesson is the conductor: it launches ``mpiexec -n 4 python -m mpi4py
lessons/11_fault_tolerance.py --worker ...`` three times, each with a deadline,
adding MPIR_CVAR_ENABLE_HEAVY_YIELD=1 when 4 ranks exceed the cores.)

1. An uninterrupted run: DDP on the 8x8 digits, 4 ranks, Adam, dropout (each
   rank its own masks), shuffled by a DistributedSampler, 30 steps, a snapshot
   every N = 10 steps (``parallel.snapshot.save_distributed``: rank 0 writes
   one file holding the model, the optimizer, the step, and every rank's RNG
   state and sampler position).
2. The same run with ``MINIPAR_FAULT=2:23``: rank 2 raises before step 23.
   minipar.comm's abort hook turns it into MPI_Abort, so the job ends at once,
   non-zero, naming rank 2 -- instead of three ranks waiting forever in an
   all-reduce. The last committed snapshot is step 20: at most N - 1 steps are
   ever redone.
3. A restart that loads the snapshot and runs steps 20..29.
4. The restarted run's parameters against the uninterrupted run's: equal bit
   for bit, dropout and shuffling included, because everything random was in
   the snapshot. And the snapshot's size against its formula: weights plus
   Adam's two moments, 3 x 4 bytes x Psi parameters (float32).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import minipar

STEPS, EVERY, RANKS, FAULT = 30, 10, 4, "2:23"
LESSON = Path(__file__).resolve()


# ----- the worker: one rank of the training job ---------------------------------------------------
def worker(directory: str, out: str, resume: bool) -> None:
    from tqdm import tqdm

    from minipar import nn, optim
    from minipar.comm import world
    from minipar.nn import functional as F
    from minipar.parallel import DistributedDataParallel
    from minipar.snapshot import fault
    from minipar.snapshot.sharded import load_distributed, save_distributed
    from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits

    comm = world()
    digits = load_digits()
    minipar.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    minipar.manual_seed(100 + comm.rank)  # but each rank its own dropout masks
    ddp = DistributedDataParallel(model, comm=comm)
    opt = optim.Adam(ddp.parameters(), lr=3e-3)
    train_set = TensorDataset(digits.x_train, digits.y_train)
    sampler = DistributedSampler(train_set, comm=comm, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=16, sampler=sampler)
    step = 0
    if resume:  # everything that decides what happens next
        shared, local = load_distributed(directory, comm)
        ddp.load_state_dict(shared["model"])
        opt.load_state_dict(shared["optimizer"])
        step = shared["step"]
        sampler.load_state_dict(local["sampler"])
        minipar.set_rng_state(local["rng"])
    first = step
    bar = tqdm(total=STEPS, initial=step, desc=f"rank 0 of {comm.size}", disable=comm.rank != 0,
               file=sys.stdout, ncols=70)
    while step < STEPS:
        for x, y in loader:
            fault.maybe_fail(step, comm)  # MINIPAR_FAULT=rank:step dies here
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % EVERY == 0:
                shared = {"model": ddp.state_dict(), "optimizer": opt.state_dict(), "step": step}
                local = {"rng": minipar.get_rng_state(), "sampler": sampler.state_dict()}
                save_distributed(directory, comm, shared=shared, local=local, gather=True)
            if step == STEPS:
                break
        else:
            sampler.set_epoch(sampler.epoch + 1)
    bar.close()
    if comm.rank == 0:
        minipar.save({"params": [p.array for p in model.parameters()], "first_step": first,
                      "loss": loss.item()}, out)


# ----- the conductor: three jobs and the comparison --------------------------------------------------
Job = tuple[subprocess.CompletedProcess, float]


def launch(args: list[str], env: dict[str, str], timeout: float = 90) -> Job:
    """One ``mpiexec -n 4`` job with a deadline; returns it (stderr captured) and the time it ended.

    Its stdout (rank 0's progress bar) goes straight to ours."""
    launch_env = {**os.environ, "OMP_NUM_THREADS": "1", "MPIEXEC_TIMEOUT": str(int(timeout)),
                  "MINIPAR_COMM_TIMEOUT": "60", **env}
    if RANKS > (os.cpu_count() or 1):
        launch_env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"  # MPICH would busy-poll 4 ranks onto 2 cores
    command = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(RANKS), sys.executable,
               "-m", "mpi4py", str(LESSON), "--worker", *args]
    sys.stdout.flush()
    result = subprocess.run(command, env=launch_env, stderr=subprocess.PIPE, text=True, timeout=timeout + 30)
    return result, time.time()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="minipar-lesson11-"))
    print(f"== 1. an uninterrupted run: {STEPS} steps of DDP on {RANKS} ranks, a snapshot every {EVERY} ==")
    result, _ = launch([str(work / "reference"), str(work / "reference.npz")], {})
    if result.returncode != 0:
        sys.exit(f"the reference run failed:\n{result.stderr[-3000:]}")
    reference = minipar.load(work / "reference.npz")
    print(f"   final loss {reference['loss']:.4f}")

    print(f"\n== 2. the same run with MINIPAR_FAULT={FAULT} (rank {FAULT.split(':')[0]} dies before "
          f"step {FAULT.split(':')[1]}) ==")
    crashed = work / "crashed"
    result, ended = launch([str(crashed), str(work / "unused.npz")], {"MINIPAR_FAULT": FAULT})
    fault_at = float(re.search(r"at unix time ([0-9.]+)", result.stderr).group(1))
    said = next(line for line in result.stderr.splitlines() if line.startswith("minipar: uncaught"))
    print(f"\n   the job ended with exit code {result.returncode}, {ended - fault_at:.2f} s after the fault; "
          f"it said:\n     {said}")
    from minipar.snapshot.sharded import read_manifest

    saved_step = read_manifest(crashed)["shared"]["step"]
    fault_step = int(FAULT.split(":")[1])
    print(f"   last committed snapshot: step {saved_step}; steps to redo: {fault_step - saved_step} "
          f"(at most N - 1 = {EVERY - 1})")

    print(f"\n== 3. restart from the snapshot in {crashed.name}/ ==")
    result, _ = launch([str(crashed), str(work / "resumed.npz"), "--resume"], {})
    if result.returncode != 0:
        sys.exit(f"the restarted run failed:\n{result.stderr[-3000:]}")
    resumed = minipar.load(work / "resumed.npz")
    print(f"   resumed at step {resumed['first_step']}, ran to step {STEPS}; "
          f"final loss {resumed['loss']:.4f}")

    print("\n== 4. restarted vs uninterrupted ==")
    pairs = list(zip(resumed["params"], reference["params"]))
    gap = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    identical = all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in pairs)
    print(f"   {len(pairs)} parameter arrays, max |resumed - uninterrupted| = {gap:.1e}; "
          f"bit for bit: {identical}")
    psi = sum(a.size for a, _ in pairs)
    size = (crashed / "manifest.npz").stat().st_size
    print(f"   snapshot file: {size:,} bytes; weights + Adam m and v = 3 x 4 bytes x Psi = 3 x 4 x {psi:,} "
          f"= {12 * psi:,} bytes (the rest: RNG states, sampler positions, manifest)")
    shutil.rmtree(work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("SNAPSHOT_DIR", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(*options.worker, resume=options.resume)
    else:
        main()
