"""Soak: 1000 DDP steps on 4 ranks, a snapshot every 100, a rank SIGKILLed twice and restarted.

    python benchmarks/soak.py                       # both jobs below, then the tables
    python benchmarks/soak.py --steps 300 --every 50 --kills 1

The driver runs the same training job twice through the CLI, each on 4 ranks
(oversubscribed on a 2-core machine, so MPICH's heavy yield is on):

    minipar bench soak -n 4 -- --worker DIR OUT                    # uninterrupted
    minipar bench soak -n 4 --max-restarts 2 -- --worker DIR OUT --kill 2:317 --kill 1:742

In the second, launch k SIGKILLs the k-th ``--kill`` rank at that step
(``MINIPAR_FAULT=rank:step:kill``; seeded random ranks and steps), and
``--max-restarts`` relaunches the job, which resumes with ``minipar.elastic``
from its last snapshot. ``MINIPAR_COMM_TIMEOUT`` bounds every wait, so a hang
would become an error naming the stuck rank.

What it trains: an MLP 64-128-128-10 with dropout on the 8x8 digits, Adam,
batch 16 per rank from a DistributedSampler (an epoch is 22 steps),
``DistributedDataParallel`` with 1 MiB buckets, ``fault.check_finite`` on
every loss, ``elastic.snapshot(..., gather=True)`` every 100 steps.

What it measures and prints:

- resident memory (``/proc/self/statm``) of every rank at every snapshot, and
  its growth from the first to the last snapshot of each launch (target < 5%);
- restart time: from the kill to the relaunched job's first finished step,
  split into relaunch (mpiexec ends the job and starts it again, up to the
  script's first line), start-up (imports, MPI start-up, data, model), resume
  (reading the snapshot) and the first step; and the steps done twice;
- median seconds per training step and per snapshot;
- the files left in the snapshot directory (only ``manifest.npz`` may remain);
- the restarted run's final weights against the uninterrupted run's: bit for bit.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

import minipar

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
CLI = "import sys; from minipar.cli import main; sys.exit(main())"


def resident_bytes() -> float:
    """This process's resident set size now (not the peak): /proc/self/statm, field 2, in pages."""
    with open("/proc/self/statm") as statm:
        return float(statm.read().split()[1]) * PAGE


def make_ddp(model: object, comm: object) -> object:
    """The one place DDP is built (its signature may move ``comm`` to a keyword)."""
    from minipar.parallel import DistributedDataParallel

    return DistributedDataParallel(model, comm=comm, bucket_cap_mb=1)


# ----- the training job (under mpiexec) ------------------------------------------------------------
def worker(steps: int, every: int, directory: str, out: str, kills: list[str]) -> None:
    began = time.time()
    from minipar import elastic, nn, optim
    from minipar.comm import allgather, world
    from minipar.nn import functional as F
    from minipar.snapshot import fault
    from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits

    launch = elastic.restart_count()
    os.environ.pop(fault.FAULT_ENV, None)
    if launch < len(kills):  # this launch's SIGKILL
        os.environ[fault.FAULT_ENV] = f"{kills[launch]}:kill"
    comm = world()
    rank, p = comm.rank, comm.size
    if comm.timeout is None:  # MINIPAR_COMM_TIMEOUT unset: bound every wait anyway
        comm.timeout = 120.0
    digits = load_digits()
    minipar.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    minipar.manual_seed(100 + rank)
    ddp = make_ddp(model, comm)
    opt = optim.Adam(ddp.parameters(), lr=1e-3)
    train_set = TensorDataset(digits.x_train, digits.y_train)
    sampler = DistributedSampler(train_set, comm=comm, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=16, sampler=sampler, drop_last=True)
    parts = {"shared": {"model": ddp, "optimizer": opt}, "local": {"sampler": sampler}}
    started = time.time()
    step = first = elastic.resume(directory, comm, **parts)
    resumed = time.time()

    rss_steps: list[int] = []
    rss_rows: list[np.ndarray] = []
    step_seconds: list[float] = []
    save_seconds: list[float] = []
    first_step_done = 0.0
    while step < steps:
        for x, y in loader:
            fault.maybe_fail(step, comm)
            start = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            fault.check_finite(loss, step, comm, enabled=True)
            loss.backward()
            opt.step()
            step_seconds.append(time.perf_counter() - start)
            step += 1
            first_step_done = first_step_done or time.time()
            if step % every == 0 or step == steps:
                start = time.perf_counter()
                elastic.snapshot(directory, comm, step, **parts, gather=True)
                save_seconds.append(time.perf_counter() - start)
                # (1,) per rank -> (p,) on every rank: every rank's resident memory now
                rss_rows.append(allgather(comm, np.array([resident_bytes()]), out=np.empty(p)).copy())
                rss_steps.append(step)
                if rank == 0:  # at every snapshot: a launch that is killed keeps what it measured
                    minipar.save({"began": began, "started": started, "resumed": resumed,
                                  "first_step": first_step_done, "from_step": first,
                                  "rss_steps": np.array(rss_steps), "rss": np.array(rss_rows),
                                  "step_s": float(np.median(step_seconds)),
                                  "save_s": float(np.median(save_seconds))}, f"{out}-launch{launch}.npz")
            if step == steps:
                break
        else:
            sampler.set_epoch(sampler.epoch + 1)
    minipar.save({"params": [param.array.copy() for param in model.parameters()]}, f"{out}-rank{rank}.npz")
    comm.barrier()


# ----- the driver (plain python) -------------------------------------------------------------------
def run_job(ranks: int, steps: int, every: int, directory: str, out: str, kills: list[str]
            ) -> tuple[subprocess.CompletedProcess[str], float]:
    command = [sys.executable, "-c", CLI, "bench", "soak", "-n", str(ranks), "--timeout", "900",
               "--max-restarts", str(len(kills)), "--", "--worker", directory, out,
               "--steps", str(steps), "--every", str(every), *[f"--kill={kill}" for kill in kills]]
    env = dict(os.environ, MINIPAR_COMM_TIMEOUT=os.environ.get("MINIPAR_COMM_TIMEOUT", "120"))
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=2000)
    if result.returncode != 0:
        sys.exit(f"soak: the job failed (exit {result.returncode})\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    return result, time.perf_counter() - start


def params_of(out: str, ranks: int) -> list[list[np.ndarray]]:
    return [minipar.load(f"{out}-rank{r}.npz")["params"] for r in range(ranks)]


def memory_rows(name: str, stats: dict) -> list[str]:
    first, last = stats["rss"][0], stats["rss"][-1]
    growth = 100 * (last - first) / first
    span = f"{int(stats['rss_steps'][0])}->{int(stats['rss_steps'][-1])}"
    cells = "".join(f"{value / MIB:>8.1f}" for value in last)
    return [f"{name:<22} {span:>10} {cells}   " + " ".join(f"{g:+.2f}%" for g in growth)
            + f"  (< 5%: {'met' if float(np.max(growth)) < 5 else 'MISSED'})"]


def driver(ranks: int, steps: int, every: int, kill_count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bounds = np.linspace(every, steps, kill_count + 1).astype(int)  # one kill inside each span
    kills = [f"{int(rng.integers(ranks))}:{int(rng.integers(lo + 1, hi))}"
             for lo, hi in zip(bounds[:-1], bounds[1:])]
    with tempfile.TemporaryDirectory(prefix="minipar-soak-") as work:
        plain, plain_s = run_job(ranks, steps, every, f"{work}/plain", f"{work}/plain", [])
        chaos, chaos_s = run_job(ranks, steps, every, f"{work}/chaos", f"{work}/chaos", kills)
        reference, restarted = params_of(f"{work}/plain", ranks), params_of(f"{work}/chaos", ranks)
        identical = all(np.array_equal(a, b) for mine, theirs in zip(restarted, reference)
                        for a, b in zip(mine, theirs))
        plain_stats = minipar.load(f"{work}/plain-launch0.npz")
        launches = [minipar.load(f"{work}/chaos-launch{k}.npz") for k in range(kill_count + 1)]
        leftovers = sorted(os.listdir(f"{work}/chaos"))
    killed_at = [float(t) for t in re.findall(r"at unix time ([0-9.]+)", chaos.stderr)]
    restarts = chaos.stderr.count("relaunching")

    print(f"soak: {steps} DDP steps on {ranks} ranks (cpu count {os.cpu_count()}), snapshot every {every}, "
          f"kills {kills} (seed {seed})")
    print(f"wall time: uninterrupted {plain_s:.1f} s, with {restarts} restarts {chaos_s:.1f} s; median step "
          f"{1e3 * plain_stats['step_s']:.2f} ms, median snapshot {1e3 * plain_stats['save_s']:.2f} ms")
    print("\nresident memory: MiB per rank at the launch's last snapshot, growth from its first")
    print(f"{'run':<22} {'steps':>10} " + "".join(f"  rank {r}" for r in range(ranks)) + "   growth")
    rows = memory_rows("uninterrupted", plain_stats)
    for k, stats in enumerate(launches):
        rows += memory_rows(f"restarted, launch {k}", stats)
    print("\n".join(rows))
    print("\nrestart time (s): from the kill to the relaunched job's first finished step")
    print("  relaunch: mpiexec ends the job and starts it again, up to the script's first line;")
    print("  start-up: imports, MPI start-up, data, model; resume: reading the snapshot into it")
    print(f"{'restart':>7} {'kill':>7} {'resumed at':>10} {'relaunch':>9} {'start-up':>9} {'resume':>7} "
          f"{'1st step':>9} {'total':>7} {'steps redone':>12}")
    for k, (spec, at) in enumerate(zip(kills, killed_at), start=1):
        stats = launches[k]
        killed_step = int(spec.split(":")[1])
        print(f"{k:>7} {spec:>7} {int(stats['from_step']):>10} {stats['began'] - at:>9.2f} "
              f"{stats['started'] - stats['began']:>9.2f} {stats['resumed'] - stats['started']:>7.3f} "
              f"{stats['first_step'] - stats['resumed']:>9.3f} {stats['first_step'] - at:>7.2f} "
              f"{killed_step - int(stats['from_step']):>12}")
    print(f"\nfiles left in the snapshot directory: {leftovers} "
          f"(only the snapshot: {'yes' if leftovers == ['manifest.npz'] else 'NO'})")
    print(f"restarted run's final weights equal the uninterrupted run's bit for bit (np.array_equal, "
          f"{ranks} ranks): {identical}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs during the second run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("DIR", "OUT"), help="(internal) be the training job")
    parser.add_argument("--kill", action="append", default=[], help="(internal) rank:step, one per launch")
    options = parser.parse_args()
    if options.worker:
        worker(options.steps, options.every, *options.worker, options.kill)
    else:
        driver(options.ranks, options.steps, options.every, options.kills, options.seed)
