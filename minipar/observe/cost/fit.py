"""Measuring alpha, beta, gamma and flops on this machine, and checking the model.

``measure(comm)`` times exchanges, an add and a matmul on ranks 0 and 1;
``fit()`` runs that in a 2-rank ``mpiexec`` job and caches the result;
``check_allreduce`` compares a measured all-reduce with the model's prediction.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from minipar.observe.cost.calibrate import fit_alpha_beta, fit_cache
from minipar.observe.cost.model import ALLREDUCE, FIT_SIZES, Machine, scaling_table


def idle_barrier(comm: Any) -> None:
    """A barrier whose waiting ranks sleep between polls, leaving the cores to the busy ranks."""
    saved = comm.timeout
    comm.timeout = saved if saved is not None else 3600.0  # MPI waits poll + sleep under a deadline
    try:
        comm.barrier()
    finally:
        comm.timeout = saved


def _rounds(comm: Any, sizes: tuple[int, ...], rounds: int, also: Callable[[], None] | None
            ) -> tuple[Machine | None, list[float], float]:
    """Interleaved samples: each round, every fit size once, then ``also`` on all ranks.

    Returns the Machine (rank 0 only, else None), the times of ``also`` on rank 0, and the
    smallest share of the timed wall-clock time any rank spent on a core (CPU time / wall
    time: MPI busy-polls while it waits, so a rank that kept its core scores about 1).
    """
    pair, peer = comm.rank < 2, 1 - comm.rank
    buffers = {n: (np.ones(n, np.uint8), np.empty(n, np.uint8)) for n in sizes} if pair else {}
    exchange: dict[int, list[float]] = {n: [] for n in sizes}
    add_times: list[float] = []
    matmul_times: list[float] = []
    also_times: list[float] = []
    cpu = wall = 0.0  # this rank's CPU and wall-clock seconds in the timed parts
    x = np.ones(sizes[-1] // 4, np.float32)
    y = np.ones_like(x)
    a = np.random.default_rng(0).standard_normal((384, 384)).astype(np.float32)
    for round_index in range(rounds + 1):  # round 0 warms up and is dropped
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        if pair:
            for n in sizes:
                out, into = buffers[n]
                repeats = max(1, min(50, 2**18 // n))  # amortise the start skew of tiny messages
                comm.sendrecv(out[:1], peer, into[:1], peer)  # line the two ranks up
                start = time.perf_counter()
                for _ in range(repeats):
                    comm.sendrecv(out, peer, into, peer)
                exchange[n].append((time.perf_counter() - start) / repeats)
            start = time.perf_counter()
            np.add(x, y, out=x)
            add_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            a @ a  # (384, 384) @ (384, 384) -> (384, 384): 2 * 384^3 flops
            matmul_times.append(time.perf_counter() - start)
        cpu, wall = cpu + time.process_time() - cpu_start, wall + time.perf_counter() - wall_start
        if also is not None:
            idle_barrier(comm)
            comm.barrier()
            cpu_start, start = time.process_time(), time.perf_counter()
            also()
            also_times.append(time.perf_counter() - start)
            cpu, wall = cpu + time.process_time() - cpu_start, wall + time.perf_counter() - start
        if round_index == 0:
            for lst in (*exchange.values(), add_times, matmul_times, also_times):
                lst.clear()
    idle_barrier(comm)
    from minipar.comm import allreduce

    share = allreduce(comm, np.array([cpu / wall if wall > 0 else 1.0]), op="min")[0]
    if comm.rank != 0:
        return None, also_times, float(share)
    medians = [float(np.median(exchange[n])) for n in sizes]
    alpha, beta = fit_alpha_beta(list(sizes), medians)
    gamma = float(np.median(add_times)) / x.nbytes
    flops = 2 * 384**3 / float(np.median(matmul_times))
    return Machine(alpha, beta, gamma, flops), also_times, float(share)


def _share(comm: Any, machine: Machine | None) -> Machine:
    from minipar.comm import broadcast as broadcast_array

    values = np.zeros(4) if machine is None else np.array(
        [machine.alpha, machine.beta, machine.gamma, machine.flops])
    broadcast_array(comm, values, root=0)
    return Machine(*(float(v) for v in values))


def measure(comm: Any, sizes: tuple[int, ...] = FIT_SIZES, rounds: int = 10) -> Machine:
    """Collective (at least 2 ranks): fit alpha, beta, gamma, flops; every rank gets the result."""
    if comm.size < 2:
        raise ValueError(f"measure needs a communicator of at least 2 ranks, got {comm.size}")
    machine, _, _ = _rounds(comm, tuple(sorted(sizes)), rounds, None)
    return _share(comm, machine)


def check_allreduce(comm: Any, nbytes: int, algorithm: str = "ring", rounds: int = 10,
                    sizes: tuple[int, ...] = FIT_SIZES) -> dict[str, float] | None:
    """Collective: fit the machine and time ``allreduce`` of nbytes float32, interleaved.

    Returns (on rank 0; None elsewhere) {"p", "bytes", "predicted", "measured", "ratio",
    "cpu_share", alpha, beta, gamma, flops} with medians over ``rounds``; ratio = measured /
    predicted. ``cpu_share`` below ~0.9 means ranks waited for a core (more ranks than
    cores, or other work on the machine): then the model, one core per rank, does not apply.
    (It relies on MPI busy-polling: not with ``MINIPAR_COMM_TIMEOUT`` or MPICH's heavy yield.)
    """
    from minipar.comm import allreduce

    array = np.zeros(nbytes // 4, np.float32)  # zeros stay zeros however often they are summed
    machine, times, share = _rounds(comm, tuple(sorted(sizes)), rounds,
                                    lambda: allreduce(comm, array, algorithm=algorithm))
    machine = _share(comm, machine)
    if comm.rank != 0:
        return None
    predicted = ALLREDUCE[algorithm](comm.size, array.nbytes, machine)
    measured = float(np.median(times))
    return {"p": comm.size, "bytes": array.nbytes, "predicted": predicted, "measured": measured,
            "ratio": measured / predicted, "cpu_share": share, **asdict(machine)}


def read_machine(path: str | os.PathLike) -> Machine:
    """The intra-host Machine in a cache file (``minipar cost fit``'s, or an older bare one)."""
    data = json.loads(Path(path).read_text())
    if "format" not in data:  # the older cache: just the four constants
        return Machine(**data)
    from minipar.comm.auto import model_from_json

    model = model_from_json(data)
    return Machine(model.intra.alpha, model.intra.beta, model.gamma, float(data["flops"]),
                   model.overhead["ring"])


def fit(comm: Any = None, cache: str | os.PathLike | None = None, refresh: bool = False) -> Machine:
    """This machine's constants: measured on ``comm`` if it has 2+ ranks, else read from ``cache``
    (default: the file ``minipar cost fit`` writes), else first fitted by that (a few seconds).
    """
    if comm is not None and comm.size >= 2:
        return measure(comm)
    from minipar.comm.auto import cache_path

    path = Path(cache) if cache is not None else cache_path()
    if refresh or not path.exists():
        fit_cache(path)
    return read_machine(path)


def main(argv: list[str] | None = None) -> None:
    """Fit (or read the cache), print the machine and a scaling table."""
    args = sys.argv[1:] if argv is None else argv
    machine = fit(refresh="--refresh" in args)
    print(f"this machine: {machine}")
    print(f"{'p':>5} {'DDP step':>10} {'eff':>5} {'pipeline':>10} {'eff':>5} {'bubble':>6} "
          f"{'TP step':>10} {'eff':>5}")
    for row in scaling_table(machine):
        print(f"{row['p']:>5} {row['ddp_time']:>9.3f}s {row['ddp_eff']:>5.2f} "
              f"{row['pipe_time']:>9.3f}s {row['pipe_eff']:>5.2f} {row['pipe_bubble']:>6.2f} "
              f"{row['tp_time']:>9.3f}s {row['tp_eff']:>5.2f}")


if __name__ == "__main__":
    main()
