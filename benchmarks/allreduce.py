"""All-reduce: minipar's naive / tree / ring / auto / shm vs MPI.Allreduce vs PyTorch gloo.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/allreduce.py   # p = 2
    python benchmarks/allreduce.py --nprocs 2 4                                 # launches both

Under mpiexec every rank times minipar's algorithms and MPI's own Allreduce
(float32, in place, sizes 8 B to 64 MiB, the algorithms interleaved so that a
noisy neighbour hurts them all alike). Each sample is one call, started right
after a barrier; a cell is the median over samples on each rank, averaged over
the ranks (as the OSU micro-benchmarks average their ranks). The median of the
slowest rank per sample, which also charges the barrier's exit skew, is kept
in the JSON and printed for the 8 B target. Then rank 0 starts the gloo peer,
``torchrun --nproc_per_node p benchmarks/allreduce.py --gloo-worker``, while
the other ranks sleep, merges its medians into the table, prints it and
writes ``benchmarks/results/allreduce_p{p}.png`` and ``.json``.

Bandwidth columns (as in nccl-tests): algbw = N / time; busbw = algbw *
2(p-1)/p, the rate each link actually carries in a ring, comparable across p.

Targets at p = 2 (issue 3): ring <= 0.90x MPI.Allreduce at 4 and 16 MiB;
ring <= 1.0x gloo from 1 MiB; auto <= 10 us at 8 B. Issue 14: shm <= 0.6x
MPI.Allreduce at 16 and 64 MiB (``benchmarks/shm_allreduce.py`` measures that
target alone, with quartiles, float32 and float64, both forms of shm).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SIZES = [8, 64, 512, 2048, 8192, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
OURS = ["naive", "tree", "ring", "auto", "shm"]
COLUMNS = OURS + ["MPI", "gloo"]


def repetitions(nbytes: int, quick: bool) -> int:
    reps = 200 if nbytes <= 65536 else 40 if nbytes <= 4 << 20 else 25 if nbytes <= 16 << 20 else 9
    return max(3, reps // 4) if quick else reps


def label(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


# ----- the MPI side -------------------------------------------------------------------------
def measure_mpi(sizes: list[int], quick: bool) -> tuple[dict, dict]:
    """Seconds per (algorithm, size): mean over ranks of medians, and slowest-rank medians."""
    from mpi4py import MPI

    import minipar.comm as mc

    comm, world = mc.world(), MPI.COMM_WORLD
    p = comm.size
    medians: dict[str, dict[int, float]] = {name: {} for name in OURS + ["MPI"]}
    slowest: dict[str, dict[int, float]] = {name: {} for name in OURS + ["MPI"]}
    for nbytes in sizes:
        buffer = np.zeros(nbytes // 4, dtype=np.float32)  # zeros stay zeros: no overflow
        runs = {
            "naive": lambda b=buffer: mc.allreduce(comm, b, algorithm="naive"),
            "tree": lambda b=buffer: mc.allreduce(comm, b, algorithm="tree"),
            "ring": lambda b=buffer: mc.allreduce(comm, b, algorithm="ring"),
            "auto": lambda b=buffer: mc.allreduce(comm, b, algorithm="auto"),
            "shm": lambda b=buffer: mc.allreduce(comm, b, algorithm="shm"),
            "MPI": lambda b=buffer: world.Allreduce(MPI.IN_PLACE, b, MPI.SUM),
        }
        check = np.full(nbytes // 4, comm.rank + 1.0, dtype=np.float32)
        mc.ring_allreduce(comm, check)  # sanity: the ring gives the right answer
        assert (check == p * (p + 1) / 2).all()
        reps = repetitions(nbytes, quick)
        samples = {name: np.empty(reps) for name in runs}
        for run in runs.values():  # warm up: connections, scratch buffers, page faults
            for _ in range(3):
                run()
        for rep in range(reps):
            for name, run in runs.items():
                world.Barrier()
                start = time.perf_counter()
                run()
                samples[name][rep] = time.perf_counter() - start
        for name, times in samples.items():
            mine = np.array([np.median(times)])
            total = np.empty_like(mine)
            world.Allreduce(mine, total, MPI.SUM)
            medians[name][nbytes] = float(total[0]) / p
            last = np.empty_like(times)
            world.Allreduce(times, last, MPI.MAX)  # a sample lasts until the last rank is done
            slowest[name][nbytes] = float(np.median(last))
    return medians, slowest


def sleep_at_barrier(world: object) -> None:
    """Wait for rank 0 without spinning a core (so gloo gets the CPU)."""
    request = world.Ibarrier()  # type: ignore[attr-defined]
    while not request.Test():
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_gloo(p: int, sizes: list[int], quick: bool) -> dict[int, float]:
    """Start the torchrun gloo peer with p processes; its medians, or {} if it failed."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        print(f"(no {torchrun}: gloo column left empty)")
        return {}
    out = RESULTS / f"gloo_p{p}.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "HYDI_", "HYDRA_", "MPIR_", "MPI_"))}
    env["OMP_NUM_THREADS"] = "1"
    command = [str(torchrun), "--nproc_per_node", str(p), "--master_port", str(free_port()),
               str(Path(__file__).resolve()), "--gloo-worker", "--json", str(out),
               "--sizes", *map(str, sizes)] + (["--quick"] if quick else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        print(f"(gloo peer failed, column left empty)\n{done.stderr[-2000:]}")
        return {}
    return {int(k): v for k, v in json.loads(out.read_text()).items()}


# ----- the gloo side (under torchrun) ------------------------------------------------------------
def gloo_worker(sizes: list[int], quick: bool, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    medians = {}
    for nbytes in sizes:
        tensor = torch.zeros(nbytes // 4, dtype=torch.float32)
        for _ in range(3):
            dist.all_reduce(tensor)
        reps = repetitions(nbytes, quick)
        times = torch.empty(reps, dtype=torch.float64)
        for rep in range(reps):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            times[rep] = time.perf_counter() - start
        median = times.median().reshape(1)  # this rank's median, then the mean over ranks
        dist.all_reduce(median)
        medians[nbytes] = float(median[0]) / dist.get_world_size()
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(medians))
    dist.destroy_process_group()


# ----- report -------------------------------------------------------------------------------
def report(p: int, medians: dict[str, dict[int, float]], slowest: dict[str, dict[int, float]],
           sizes: list[int]) -> str:
    bus = 2 * (p - 1) / p
    head = (f"{'size':>8} " + " ".join(f"{name + ' us':>11}" for name in COLUMNS)
            + f" {'ring/MPI':>8} {'ring/gloo':>9} {'ring algbw':>10} {'busbw GB/s':>10}")
    lines = [f"all-reduce, float32, in place, p = {p}: per-rank median time, mean over ranks", head]
    for nbytes in sizes:
        cell = [medians.get(name, {}).get(nbytes) for name in COLUMNS]
        ring, mpi, gloo = medians["ring"][nbytes], medians["MPI"][nbytes], cell[-1]
        algbw = nbytes / ring / 1e9
        lines.append(
            f"{label(nbytes):>8} " + " ".join(f"{t * 1e6:11.1f}" if t else f"{'-':>11}" for t in cell)
            + f" {ring / mpi:8.2f} " + (f"{ring / gloo:9.2f}" if gloo else f"{'-':>9}")
            + f" {algbw:10.2f} {algbw * bus:10.2f}"
        )
    if p == 2:
        lines.append("targets at p = 2:")
        for nbytes in (4 << 20, 16 << 20):
            if nbytes in sizes:
                ratio = medians["ring"][nbytes] / medians["MPI"][nbytes]
                lines.append(f"  ring <= 0.90x MPI at {label(nbytes)}: {ratio:.2f}x "
                             + ("MET" if ratio <= 0.90 else "MISSED"))
        for nbytes in (16 << 20, 64 << 20):
            if nbytes in sizes:
                ratio = medians["shm"][nbytes] / medians["MPI"][nbytes]
                lines.append(f"  shm <= 0.6x MPI at {label(nbytes)}: {ratio:.2f}x "
                             + ("MET" if ratio <= 0.6 else "NOT MET"))
        gloo = medians.get("gloo", {})
        big = [n for n in sizes if n >= 1 << 20 and n in gloo]
        if big:
            worst = max(medians["ring"][n] / gloo[n] for n in big)
            lines.append(f"  ring <= 1.0x gloo from 1 MiB: worst {worst:.2f}x "
                         + ("MET" if worst <= 1.0 else "MISSED"))
        if 8 in sizes:
            auto = medians["auto"][8] * 1e6
            lines.append(f"  auto <= 10 us at 8 B: {auto:.1f} us " + ("MET" if auto <= 10 else "MISSED")
                         + f" (slowest rank per call: auto {slowest['auto'][8] * 1e6:.1f} us, "
                         f"MPI {slowest['MPI'][8] * 1e6:.1f} us)")
    return "\n".join(lines)


def plot(p: int, medians: dict[str, dict[int, float]], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in COLUMNS:
        points = [(n, medians[name][n]) for n in sizes if medians.get(name, {}).get(n)]
        if not points:
            continue
        x = [n for n, _ in points]
        left.loglog(x, [t * 1e6 for _, t in points], marker="o", label=name)
        right.semilogx(x, [n / t / 1e9 * 2 * (p - 1) / p for n, t in points], marker="o",
                       label=name)
    left.set(xlabel="bytes", ylabel="time (us)", title=f"all-reduce time, p = {p}")
    right.set(xlabel="bytes", ylabel="bus bandwidth (GB/s)", title="busbw = N/t * 2(p-1)/p")
    for axes in (left, right):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="bytes")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[2, 4],
                        help="rank counts to launch when run without mpiexec")
    parser.add_argument("--no-gloo", action="store_true")
    parser.add_argument("--gloo-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gloo_worker:
        gloo_worker(args.sizes, args.quick, args.json)
        return
    from minipar.comm.safety import launched_rank_and_size

    if launched_rank_and_size() is None:  # plain python: launch one MPI job per rank count
        mpiexec = Path(sys.executable).with_name("mpiexec")
        for p in args.nprocs:
            env = dict(os.environ, OMP_NUM_THREADS="1", MPIEXEC_TIMEOUT="1800")
            if p > (os.cpu_count() or 1):
                env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
            command = [str(mpiexec), "-n", str(p), sys.executable, "-m", "mpi4py", __file__,
                       *sys.argv[1:]]
            subprocess.run(command, env=env, check=True)
        return
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    p = world.Get_size()
    medians, slowest = measure_mpi(args.sizes, args.quick)
    if world.Get_rank() == 0:
        RESULTS.mkdir(parents=True, exist_ok=True)
        medians["gloo"] = {} if args.no_gloo else run_gloo(p, args.sizes, args.quick)
        (RESULTS / f"allreduce_p{p}.json").write_text(
            json.dumps({"mean_of_rank_medians": medians, "slowest_rank_median": slowest}, indent=1)
        )
        print(report(p, medians, slowest, args.sizes))
        png = RESULTS / f"allreduce_p{p}.png"
        plot(p, medians, args.sizes, png)
        print(f"plot: {png.relative_to(HERE.parent)}")
        sys.stdout.flush()
    sleep_at_barrier(world)


if __name__ == "__main__":
    main()
