"""allreduce(algorithm="shm") against MPI.Allreduce, interleaved A/B rounds in one job.

    OMP_NUM_THREADS=1 mpiexec -bind-to core -n 2 python -m mpi4py benchmarks/shm_allreduce.py
    python benchmarks/shm_allreduce.py --rounds 30          # launches mpiexec -bind-to core -n 2 itself

Each round runs every contestant once per (size, dtype), in an order that
alternates from round to round (so a noisy neighbour, or whoever runs second,
hurts them all alike): minipar's shm all-reduce of an ordinary array in both forms
(``plain``: ``shm.py``'s three barriers over windows of N bytes; ``pipelined``:
``shm_pipeline.py``), of an array that lives in the window (``shared``:
``shm_arrays.shared_empty``, all-reduced where it lies: no copy in or out, 2N bytes
touched per rank) and MPICH's ``MPI.Allreduce`` (in place, SUM, an ordinary array). A sample is
one call started right after a barrier and lasts until the slowest rank is done
(the max over ranks); cells are medians over rounds, with the interquartile
range, and the per-round ratio shm/MPI (the two calls of the same round) gives
the spread of the ratio itself.

Launched by itself (plain ``python``), the two ranks are pinned one per core
(``-bind-to core``, as MPI benchmarks are run): unpinned, the scheduler now and then
puts both on one core, which slows every contestant and the spread doubles.

Target (issue 14): shm <= 0.6x MPI.Allreduce at 16 and 64 MiB, p = 2, one host.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGET = 0.6
FORMS = ["plain", "pipelined", "shared"]
JUDGED = ["pipelined", "shared"]  # the default form for any array, and the array in the window


def measure(sizes_mib: list[int], dtypes: list[str], rounds: int) -> dict:
    """{(MiB, dtype): {contestant: seconds per round (slowest rank)}}."""
    from mpi4py import MPI

    import minipar.comm as mc
    from minipar.comm.shm import shm_core
    from minipar.comm.shm_arrays import shared_empty

    comm, world = mc.world(), MPI.COMM_WORLD
    results = {}
    for mib in sizes_mib:
        for name in dtypes:
            dtype = np.dtype(name)
            n = (mib << 20) // dtype.itemsize
            rng = np.random.default_rng(comm.rank)
            buffers = {key: rng.uniform(-1, 1, n).astype(dtype) for key in [*FORMS, "MPI"]}
            shared = shared_empty(comm, n, dtype)
            shared[...] = buffers["shared"]
            runs = {"plain": lambda b=buffers["plain"]: shm_core(comm, b, "sum", form="plain"),
                    "pipelined": lambda b=buffers["pipelined"]: mc.allreduce(comm, b, algorithm="shm"),
                    "shared": lambda b=shared: mc.allreduce(comm, b, algorithm="shm")}
            runs["MPI"] = lambda b=buffers["MPI"]: world.Allreduce(MPI.IN_PLACE, b, MPI.SUM)
            for run in runs.values():  # warm up: windows made, pages touched
                for _ in range(3):
                    run()
            times = {key: np.empty(rounds) for key in runs}
            names = list(runs)
            for rnd in range(rounds):
                for key in names if rnd % 2 == 0 else names[::-1]:
                    world.Barrier()
                    start = time.perf_counter()
                    runs[key]()
                    times[key][rnd] = time.perf_counter() - start
            for key in names:  # a call lasts until its slowest rank is done
                world.Allreduce(MPI.IN_PLACE, times[key], MPI.MAX)
            results[(mib, name)] = times
    return results


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(median), float(q3)


def report(results: dict, rounds: int) -> str:
    load = os.getloadavg()
    lines = [f"shm all-reduce vs MPI.Allreduce, p = 2, in place, {rounds} interleaved rounds; "
             f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores",
             "times in ms: median [IQR] of the slowest rank per call; ratio = median of per-round "
             "shm/MPI [IQR]",
             f"{'size':>7} {'dtype':>7} {'MPI':>20} " + " ".join(f"{f:>20}" for f in FORMS)
             + " " + " ".join(f"{f + '/MPI':>20}" for f in FORMS)]
    verdicts = []
    for (mib, dtype), times in results.items():
        cells = []
        for key in ["MPI", *FORMS]:
            q1, med, q3 = quartiles(times[key] * 1e3)
            cells.append(f"{med:7.2f} [{q1:5.2f}-{q3:5.2f}]")
        for form in FORMS:
            q1, med, q3 = quartiles(times[form] / times["MPI"])
            cells.append(f"{med:7.2f} [{q1:4.2f}-{q3:4.2f}]")
            if form in JUDGED and mib in (16, 64):
                verdicts.append((form, mib, dtype, med, q3))
        lines.append(f"{mib:4d} MiB {dtype:>7} " + " ".join(f"{c:>20}" for c in cells))
    for form, mib, dtype, med, q3 in verdicts:
        lines.append(f"target shm <= {TARGET}x MPI at {mib} MiB {dtype}, {form}: median {med:.2f}x "
                     f"(upper quartile {q3:.2f}x) " + ("MET" if med <= TARGET else "NOT MET"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64], help="MiB")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    from minipar.comm.safety import launched_rank_and_size

    if launched_rank_and_size() is None:  # plain python: launch the p = 2 job
        mpiexec = Path(sys.executable).with_name("mpiexec")
        env = dict(os.environ, OMP_NUM_THREADS="1", MPIEXEC_TIMEOUT="300")
        command = [str(mpiexec), "-bind-to", "core", "-n", "2", sys.executable, "-m", "mpi4py",
                   __file__, *sys.argv[1:]]
        subprocess.run(command, env=env, check=True)
        return
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() != 2:
        raise SystemExit(f"the target is at p = 2; run with mpiexec -n 2, not "
                         f"-n {MPI.COMM_WORLD.Get_size()}")
    results = measure(args.sizes, args.dtypes, args.rounds)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(report(results, args.rounds), flush=True)


if __name__ == "__main__":
    main()
