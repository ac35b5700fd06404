"""Pipeline bubble measured from each stage's timeline, next to (p-1)/(m+p-1); stash counts at p = 4.

    python benchmarks/pipeline.py                 # the whole table (~1 minute)
    python benchmarks/pipeline.py --rounds 3      # quicker, noisier

The driver launches its own workers (one BLAS thread per rank) and prints one table:

    mpiexec -n 2 python -m mpi4py benchmarks/pipeline.py --worker bubble
    mpiexec -n 4 python -m mpi4py benchmarks/pipeline.py --worker stash

Bubble, p = 2. The model is 8 equal blocks Linear(1024, 1024) + Tanh, float32,
4 blocks per stage; a micro-batch is 128 rows whatever m is (so per-micro-batch
work is fixed). The input requires grad, so stage 0's backward computes dL/dx as
stage 1's does and both stages cost the same. How the bubble is measured:

    each step:   barrier; train_step; barrier        (train_step(..., synchronize=True))
    W          = time from leaving the first barrier to leaving the second (one global span)
    busy_s     = sum of stage s's compute spans: each forward/backward from the end of its
                 receive to the start of its send (message waits and sends excluded)
    bubble     = mean over stages of 1 - busy_s / W
    bottleneck = min over stages of 1 - busy_s / W   (the idle share of the slowest stage)

The formula assumes stages of exactly equal cost. When one stage is slower (here
stage 1 also computes the loss, and the two processes never run at quite the same
speed), the faster stage also waits for it every micro-batch: that imbalance adds
to the mean but is not the schedule's fill-and-drain bubble, which the slowest
stage's idle share isolates. Both are printed.

For equal stages theory gives (p-1)/(m+p-1) on every stage (GPipe and 1F1B
alike).

The workers run with glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_), as a caching allocator would. Otherwise
GPipe at m = 16, which stashes 16 micro-batches (~64 MiB a stage), hands that
memory back to the OS after every backward and page-faults it in again during the
next forward; the faults land unevenly on the two stages' phases and showed up as
+3 to +4 points of extra idle that belong to the allocator, not the schedule
(1F1B, stashing at most p - s micro-batches, barely notices).

Rounds interleave every (m, schedule) pair; each cell is the median over rounds,
with the minimum in brackets (a shared machine adds noise, mostly idle time).

Stash, p = 4, m = 8: the most micro-batches whose activations a stage held at
once (counted, not timed: 4 ranks share 2 cores). GPipe holds all m on every
stage; 1F1B holds p - s on stage s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = Path(sys.executable)
MICROBATCH_ROWS, WIDTH, BLOCKS = 128, 1024, 8
MS = [1, 2, 4, 8, 16]
SCHEDULES = ["gpipe", "1f1b"]
STASH_M = 8


def worker_env(ranks: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    if ranks > (os.cpu_count() or 1):
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    env["MPIEXEC_TIMEOUT"] = "600"
    env.pop("MINIPAR_COMM_TIMEOUT", None)
    # Keep freed memory in the process (see the docstring): time the schedule, not page faults.
    for name, value in (("MALLOC_MMAP_THRESHOLD_", "4000000000"), ("MALLOC_TRIM_THRESHOLD_", "4000000000"),
                        ("MALLOC_TOP_PAD_", str(256 << 20))):
        env.setdefault(name, value)
    return env


def build(blocks: int, width: int, seed: int = 0):
    import minipar
    from minipar import nn

    minipar.manual_seed(seed)
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers)


# ----- workers ----------------------------------------------------------------------------------
def bubble_worker(rounds: int) -> None:
    import minipar
    from minipar.comm import allgather, world
    from minipar.nn import functional as F
    from minipar.parallel import PipelineParallel

    comm = world()
    rng = np.random.default_rng(0)
    model = build(BLOCKS, WIDTH)  # one model; every pipeline below shares its layers (no updates)
    pipes = {(m, s): PipelineParallel(model, comm, m, schedule=s) for m in MS for s in SCHEDULES}
    data = {m: (rng.normal(size=(m * MICROBATCH_ROWS, WIDTH)).astype(np.float32),
                rng.normal(size=(m * MICROBATCH_ROWS, WIDTH)).astype(np.float32)) for m in MS}
    samples: dict[str, list[list[float]]] = {f"{m} {s}": [] for m in MS for s in SCHEDULES}
    for round_index in range(rounds + 1):  # round 0 warms up (page faults, BLAS buffers)
        for (m, schedule), pipe in pipes.items():
            x = minipar.tensor(data[m][0], requires_grad=True)
            pipe.train_step(x, data[m][1], F.mse_loss, synchronize=True)
            pipe.stage_module.zero_grad()
            stats = pipe.stats
            row = np.array([stats.bubble, stats.step_seconds, stats.busy_seconds])
            everyone = allgather(comm, row).reshape(comm.size, 3)
            if round_index > 0:
                samples[f"{m} {schedule}"].append(everyone.tolist())
    if comm.rank == 0:
        print(json.dumps({"bubble": samples, "p": comm.size}), flush=True)


def stash_worker() -> None:
    from minipar.comm import allgather, world
    from minipar.nn import functional as F
    from minipar.parallel import PipelineParallel

    comm = world()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STASH_M * 4, 32))
    y = rng.normal(size=(STASH_M * 4, 32))
    peaks = {}
    for schedule in ("naive", "gpipe", "1f1b"):
        pipe = PipelineParallel(build(4, 32), comm, STASH_M, schedule=schedule)
        pipe.train_step(x, y, F.mse_loss)
        peaks[schedule] = [int(n) for n in allgather(comm, np.array([pipe.stats.peak_stashed]))]
    if comm.rank == 0:
        print(json.dumps({"stash": peaks, "p": comm.size}), flush=True)


# ----- driver -----------------------------------------------------------------------------------
def launch(ranks: int, *args: str) -> dict:
    mpiexec = PYTHON.with_name("mpiexec")
    command = [str(mpiexec), "-n", str(ranks), str(PYTHON), "-m", "mpi4py", __file__, *args]
    done = subprocess.run(command, env=worker_env(ranks), capture_output=True, text=True, timeout=660)
    if done.returncode != 0:
        sys.exit(f"worker failed ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["bubble", "stash"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.worker == "bubble":
        return bubble_worker(args.rounds)
    if args.worker == "stash":
        return stash_worker()

    from minipar.parallel.pipeline.schedules import bubble_formula, peak_stash_formula

    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bubble = launch(2, "--worker", "bubble", "--rounds", str(args.rounds))
    stash = launch(4, "--worker", "stash")
    p = bubble["p"]
    print(f"\nPipeline bubble at p = {p}: {BLOCKS} x [Linear({WIDTH},{WIDTH}) + Tanh] float32, "
          f"{MICROBATCH_ROWS} rows per micro-batch, median of {args.rounds} rounds")
    print("mean = mean over stages of 1 - busy/W, W = barrier-to-barrier step time; "
          "bneck = min over stages (the slowest stage); diffs = median - formula\n")
    columns = " ".join(f"{s + ' mean (min)':>15} {'diff':>7} {'bneck':>6} {'diff':>7}" for s in SCHEDULES)
    header = f"{'m':>3} {'(p-1)/(m+p-1)':>14} {columns} {'1f1b step ms':>13} {'busy/mb ms':>11}"
    print(header)
    print("-" * len(header))
    for m in MS:
        formula = bubble_formula(p, m)
        cells = []
        for schedule in SCHEDULES:
            runs = bubble["bubble"][f"{m} {schedule}"]  # [round][stage] = (bubble, W, busy)
            per_round = [float(np.mean([stage[0] for stage in run])) for run in runs]
            measured = statistics.median(per_round)
            slowest = statistics.median(min(stage[0] for stage in run) for run in runs)  # least idle
            cells.append(f"{measured:7.3f} ({min(per_round):.3f}) {100 * (measured - formula):+6.1f}pp"
                         f" {slowest:6.3f} {100 * (slowest - formula):+6.1f}pp")
        runs = bubble["bubble"][f"{m} 1f1b"]
        step_ms = 1e3 * statistics.median(run[0][1] for run in runs)
        busy_ms = 1e3 * statistics.median(float(np.mean([stage[2] for stage in run])) / m for run in runs)
        print(f"{m:>3} {formula:14.3f} " + " ".join(cells) + f" {step_ms:13.1f} {busy_ms:11.1f}")

    q = stash["p"]
    print(f"\nPeak micro-batches stashed per stage at p = {q}, m = {STASH_M} (counts)\n")
    print(f"{'schedule':>8} {'measured (stage 0..p-1)':>26} {'formula':>20}")
    for schedule, peaks in stash["stash"].items():
        formula = [peak_stash_formula(schedule, s, q, STASH_M) for s in range(q)]
        print(f"{schedule:>8} {str(peaks):>26} {str(formula):>20}")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
