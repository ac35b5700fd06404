"""Fitting the cost model that ``allreduce(algorithm="auto")`` reads: ``minipar cost fit``.

    minipar cost fit [--out PATH] [--rounds R]   # one host: the intra-host link, 2 ranks
    minipar cost fit --cluster                   # the emulated cluster that is up: intra and inter
    mpiexec -n 2 python -m mpi4py -m minipar.observe.cost.calibrate --out part.json   # one link kind

One run measures one link kind with exactly 2 ranks, each on a core of its own (the
model's premise; a run with fewer cores than ranks is refused):

1. link: both ranks ``sendrecv`` n bytes, n in ``LINK_SIZES`` (8 B to 2 MiB, the largest
   message the slabbed ring sends), each call timed; the median over ``rounds``
   interleaved rounds of repeats. alpha = the median at 8 B.
   Two forms are fitted: the sum ``alpha + n beta`` (Hockney: beta the least-squares
   slope of t - alpha over the larger half of the sizes) and the *paced* form
   ``max(alpha, n beta)`` (beta through the origin over the same half: a link whose
   bytes are paced by a NIC or a token bucket while the CPU's work overlaps them).
   Kept: the form with the smaller worst relative error from 64 KiB up, between hosts;
   inside a host the CPU copies the bytes itself, so there it is always the sum.
2. gamma: an in-place add of 16 MiB float32; flops: a 384x384 matmul (rank 0).
3. overhead, per algorithm: the median time of a tiny all-reduce (2 float32) minus
   what the link predicts for its messages (``minipar.comm.auto.predict`` with no
   overhead): the Python cost of one call, separate from alpha per message.
   Hierarchical's is the sum of its three collectives' (reduce-scatter, ring, all-gather).

Rank 0 writes what it found as JSON; ``fit_cache`` merges the runs into the cache
file that ``comm`` reads (``minipar.comm.auto``: format, fallback, overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from minipar.comm import allgather, allreduce, reduce_scatter, world
from minipar.comm.auto import CANDIDATES, CostModel, Link, cache_path, model_to_json, predict, step_time

LINK_SIZES = (8, 4096, 32768, 65536, 2**18, 2**19, 2**20, 2**21)  # up to the ring's 2 MiB slabs
BYTES_REGIME = 65536  # the paced-or-not decision looks at sizes from here up
TINY = 2  # float32 elements of the all-reduce whose time is (nearly) all overhead


def fit_alpha_beta(sizes: list[float], seconds: list[float]) -> tuple[float, float]:
    """Hockney's fit: alpha = time of the smallest message; beta = least-squares slope of
    (time - alpha) against size over the larger half of the sizes (where bandwidth dominates).
    """
    order = np.argsort(sizes)
    n, t = np.asarray(sizes, float)[order], np.asarray(seconds, float)[order]
    if n.size < 2:
        raise ValueError(f"fit_alpha_beta needs at least 2 sizes, got {n.size}")
    alpha = max(float(t[0]), 0.0)
    big = slice(n.size // 2, None)
    beta = float(np.sum(n[big] * (t[big] - alpha)) / np.sum(n[big] ** 2))
    return alpha, max(beta, 1e-15)


def timings(call: Callable[[], Any], repeats: int) -> list[float]:
    """``repeats`` timings of ``call`` (seconds each)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def fit_link(sizes: list[int], seconds: list[float], may_pace: bool = True) -> tuple[Link, dict[str, float]]:
    """The Link that fits (size, median seconds) best, and the worst relative error of each form.

    ``may_pace=False`` (ranks on one host: the CPU itself copies the bytes, nothing paces them
    apart from it) keeps the sum form whatever the errors say.
    """
    n, t = np.asarray(sizes, float), np.asarray(seconds, float)
    alpha, beta_sum = fit_alpha_beta(sizes, seconds)
    big = np.argsort(n)[n.size // 2:]
    beta_paced = float(np.sum(n[big] * t[big]) / np.sum(n[big] ** 2))
    forms = {"sum": Link(alpha, beta_sum, False), "paced": Link(alpha, max(beta_paced, 1e-15), True)}
    judged = n >= BYTES_REGIME
    worst = {name: float(np.max(np.abs([link.message(x) / y - 1 for x, y in zip(n[judged], t[judged])])))
             for name, link in forms.items()}
    return forms[min(worst, key=worst.__getitem__) if may_pace else "sum"], worst


def measure_link(comm: Any, rounds: int) -> dict[str, Any] | None:
    """Collective on exactly 2 ranks: the link, gamma, flops and overheads (rank 0; None elsewhere)."""
    if comm.size != 2:
        raise ValueError(f"the cost fit runs on exactly 2 ranks, got {comm.size}")
    cores = os.cpu_count() or 1
    if cores < comm.size:
        raise ValueError(f"the cost fit needs a core per rank: {comm.size} ranks, {cores} cores here")
    load = os.getloadavg()
    peer = 1 - comm.rank
    exchange: dict[int, list[float]] = {n: [] for n in LINK_SIZES}
    buffers = {n: (np.ones(n, np.uint8), np.empty(n, np.uint8)) for n in LINK_SIZES}
    for round_index in range(rounds + 1):  # round 0 warms up and is dropped
        for n, (out, into) in buffers.items():
            comm.sendrecv(out[:1], peer, into[:1], peer)  # line the two ranks up
            times = timings(lambda out=out, into=into: comm.sendrecv(out, peer, into, peer),
                            max(3, min(50, 2**20 // n)))
            if round_index:
                exchange[n].extend(times)
    medians = {n: float(np.median(exchange[n])) for n in LINK_SIZES}
    names = host_names(comm)
    hosts = [0, 0] if names[0] == names[1] else [0, 1]
    link, worst = fit_link(list(medians), list(medians.values()), may_pace=hosts == [0, 1])
    gamma, flops = _compute_rates()
    model = CostModel(link, link if hosts == [0, 1] else None, gamma, dict.fromkeys(CANDIDATES, 0.0))
    tiny = np.zeros(TINY, np.float32)
    calls = {
        "ring": lambda: allreduce(comm, tiny, algorithm="ring"),
        "recursive_doubling": lambda: allreduce(comm, tiny, algorithm="recursive_doubling"),
        "reduce_scatter": lambda: reduce_scatter(comm, tiny),
        "allgather": lambda: allgather(comm, tiny[:1], out=np.empty(2, np.float32)),
    }
    timed: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(rounds + 1):
        for name, call in calls.items():
            comm.barrier()
            times = timings(call, 50)
            if round_index:
                timed[name].extend(times)
    took = {name: float(np.median(times)) for name, times in timed.items()}
    one_step = step_time(model, hosts, [(0, 1), (1, 0)], 4 * TINY / 2)  # 1 element each way
    overhead = {name: max(0.0, took[name] - predict(model, name, hosts, 4 * TINY))
                for name in ("ring", "recursive_doubling")}
    half = {name: max(0.0, took[name] - one_step) for name in ("reduce_scatter", "allgather")}
    overhead["hierarchical"] = overhead["ring"] + half["reduce_scatter"] + half["allgather"]
    if comm.rank != 0:
        return None
    return {"kind": "inter" if hosts == [0, 1] else "intra", "link": vars(link), "worst_error": worst,
            "gamma": gamma, "flops": flops, "overhead": overhead, "tiny_call": took,
            "exchange_medians": {str(n): t for n, t in medians.items()}, "cores": cores,
            "load_average": [round(x, 2) for x in load], "hosts": names}


def host_names(comm: Any) -> list[str]:
    """Both ranks' host names (``comm.host_name()``), in rank order."""
    rows = np.zeros((comm.size, 256), np.uint8)
    mine = comm.host_name().encode()[:256]
    rows[comm.rank, : len(mine)] = np.frombuffer(mine, np.uint8)
    allreduce(comm, rows, op="max")
    return [bytes(row).rstrip(b"\0").decode(errors="replace") for row in rows]


def _compute_rates() -> tuple[float, float]:
    x = np.ones(2**22, np.float32)
    y = np.ones_like(x)
    adds = timings(lambda: np.add(x, y, out=x), 7)
    a = np.random.default_rng(0).standard_normal((384, 384)).astype(np.float32)
    matmuls = timings(lambda: a @ a, 7)  # (384, 384) @ (384, 384): 2 * 384^3 flops
    return float(np.median(adds)) / x.nbytes, 2 * 384**3 / float(np.median(matmuls))


def merge(parts: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The cache file's content from one run per link kind. gamma, flops and the overheads
    come from the run that spans the most (inter if there is one: what cluster jobs see)."""
    by_kind = {part["kind"]: part for part in parts}
    if "intra" not in by_kind:
        raise ValueError(f"the fit needs an intra-host run, got {sorted(by_kind)}")
    main = by_kind.get("inter", by_kind["intra"])
    links = {kind: Link(**part["link"]) for kind, part in by_kind.items()}
    model = CostModel(links["intra"], links.get("inter"), main["gamma"], main["overhead"])
    return model_to_json(model, flops=main["flops"], where=where, cores=main["cores"],
                         load_average=main["load_average"], fitted=time.strftime("%Y-%m-%d %H:%M:%S"),
                         runs=parts)


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(data, indent=1))
    os.replace(scratch, path)


def fit_cache(out: str | os.PathLike[str] | None = None, cluster: bool = False, rounds: int = 5,
              timeout: float = 240.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the fit (2 ranks per run; on the cluster one intra and one inter run) and write the cache.

    ``env``: extra variables for the ranks, e.g. ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` to fit the
    way MPICH waits when a job has more ranks than cores (its latencies are then much larger).
    """
    path = Path(out) if out is not None else cache_path()
    parts = []
    with_hosts = [("intra", 2), ("inter", 1)] if cluster else [("intra", None)]
    for kind, ppn in with_hosts:
        part = path.with_name(f".{path.name}.{kind}.{os.getpid()}.json")
        command = [sys.executable, "-m", "mpi4py", "-m", "minipar.observe.cost.calibrate",
                   "--part", str(part), "--rounds", str(rounds)]
        if cluster:
            from minipar import cluster as emulated

            done = emulated.run(2, command, ppn=ppn, timeout=timeout, capture_output=True,
                                env={"OMP_NUM_THREADS": "1", **(env or {})})
        else:
            mpiexec = Path(sys.executable).with_name("mpiexec")
            launch_env = {**os.environ, "OMP_NUM_THREADS": "1", "MPIEXEC_TIMEOUT": str(round(timeout)),
                          **(env or {})}
            done = subprocess.run([str(mpiexec), "-n", "2", *command], env=launch_env, capture_output=True,
                                  text=True, timeout=timeout + 15)
        if done.returncode != 0:
            raise RuntimeError(f"the {kind}-host fit failed (exit code {done.returncode}):\n"
                               f"{(done.stderr or '')[-2000:]}")
        parts.append(json.loads(part.read_text()))
        part.unlink()
        if parts[-1]["kind"] != kind:
            raise RuntimeError(f"the {kind}-host run found ranks on hosts {parts[-1]['hosts']}")
    where = "emulated cluster" if cluster else "one host"
    data = merge(parts, where)
    write_atomically(path, data)
    return data


def main(argv: list[str] | None = None) -> None:
    """Under mpiexec with 2 ranks: measure one link kind, rank 0 writes it to --part."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", required=True, help="where rank 0 writes this run's JSON")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    args = parser.parse_args(argv)
    found = measure_link(world(), args.rounds)
    if found is not None:
        Path(args.part).write_text(json.dumps(found))


if __name__ == "__main__":
    main()
