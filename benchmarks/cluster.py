"""Benchmarks on the emulated cluster: 2 hosts, links at 1, 2 and 10 Gbit/s, medians, table + plot.

    sudo MINIPAR_CLUSTER_ID=1 flock /tmp/bench.lock python benchmarks/cluster.py            # all
    sudo python benchmarks/cluster.py --quick              # 2 Gbit/s, 1 and 16 MiB: under 2 min
    sudo python benchmarks/cluster.py --gbit 2 10          # chosen link rates

It brings up its own cluster (``minipar.cluster.up(2, gbit=G)``, under
``MINIPAR_CLUSTER_ID`` like every cluster command), runs each section at each
link rate, and tears the cluster down at the end, even when a section fails.

Section "all-reduce" (this file): 2 hosts x 2 ranks, float32, in place, 1 to 64 MiB.
The algorithms are interleaved (a noisy neighbour hurts them all alike); each
sample is one call after a barrier, timed on every rank; a cell is the median
over samples of the slowest rank. Columns: minipar's flat ``ring``,
``hierarchical`` (``intra_host="auto"``: pipelined, the link busy while the host
works), its plain forms ``hier-msg`` (``intra_host="ring"``: messages inside each
host, one step after another) and ``hier-shm`` (``"shm"``: a shared window inside
each host), and MPICH's ``MPI.Allreduce`` (node-aware itself: N on each link).
Bytes on each host's link per call, counted by the link's token bucket (``tc -s
qdisc``, read by one rank on each host), against the formulas: flat ring
2(p-1)/p N, hierarchical 2(H-1)/H N (p = 4, H = 2: 1.5 N and N, plus ~5 % of
TCP/IP headers). Link-bound, the ratio hierarchical / ring tends to 2/3.

Target (issue 14): hierarchical <= 0.8x flat ring at 16 MiB, 2 Gbit/s.

Sections of other files run too when present: ``benchmarks/cluster_ddp.py``'s
``ddp_section(gbit, quick)`` and ``benchmarks/cluster_model.py``'s
``model_section(gbit, quick)``, each returning the lines of its table. Results:
``benchmarks/results/cluster.json`` and ``cluster.png`` (with matplotlib).

Every host here shares this machine's cores, so at 10 Gbit/s the CPU, not the
link, bounds the time; the load average at the start of each section is printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MIB = 1 << 20
SIZES, QUICK_SIZES = [1 * MIB, 4 * MIB, 16 * MIB, 64 * MIB], [1 * MIB, 16 * MIB]
RATES, QUICK_RATES = [1.0, 2.0, 10.0], [2.0]
HOSTS, PER_HOST = 2, 2
ALGORITHMS = ["ring", "hierarchical", "hier-msg", "hier-shm", "MPI"]
TARGET_BYTES, TARGET_GBIT, TARGET_RATIO = 16 * MIB, 2.0, 0.8
OTHER_SECTIONS = [("cluster_ddp", "ddp_section"), ("cluster_model", "model_section")]


# ----- the MPI side: 4 ranks on 2 hosts ------------------------------------------------------
def link_counter() -> int:
    """Bytes this host's uplink token bucket has let through (run inside the host's namespace)."""
    shown = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", "eth0"], capture_output=True,
                           text=True, check=True).stdout
    return sum(int(q["bytes"]) for q in json.loads(shown) if q.get("kind") == "tbf")


def worker(sizes: list[int], reps: int, out: str) -> None:
    """Time every algorithm at every size; rank 0 writes medians and link bytes to ``out``."""
    from mpi4py import MPI

    import minipar.comm as mc
    from minipar.comm.hierarchical import host_topology, intra_host_form

    comm, world = mc.world(), MPI.COMM_WORLD
    leader = host_topology(comm).host_comm.rank == 0  # one rank per host reads its link
    result: dict[str, Any] = {"times": {name: {} for name in ALGORITHMS}, "link_bytes": {}}
    for nbytes in sizes:
        buffer = np.zeros(nbytes // 4, dtype=np.float32)  # zeros stay zeros: no overflow
        runs = {
            "ring": lambda b=buffer: mc.allreduce(comm, b, algorithm="ring"),
            "hierarchical": lambda b=buffer: mc.allreduce(comm, b, algorithm="hierarchical"),
            "hier-msg": lambda b=buffer: mc.allreduce(comm, b, algorithm="hierarchical",
                                                      intra_host="ring"),
            "hier-shm": lambda b=buffer: mc.allreduce(comm, b, algorithm="hierarchical",
                                                      intra_host="shm"),
            "MPI": lambda b=buffer: world.Allreduce(MPI.IN_PLACE, b, MPI.SUM),
        }
        check = np.full(nbytes // 4, comm.rank + 1.0, dtype=np.float32)
        mc.allreduce(comm, check, algorithm="hierarchical")  # sanity: the right answer
        assert (check == comm.size * (comm.size + 1) / 2).all()
        for name, run in runs.items():  # warm up (connections, windows), and count link bytes
            run()
            world.Barrier()
            before = link_counter() if leader else 0
            world.Barrier()
            run()
            world.Barrier()
            sent = world.allreduce(link_counter() - before if leader else 0) / HOSTS
            result["link_bytes"].setdefault(name, {})[nbytes] = sent
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(reps):
            for name, run in runs.items():
                world.Barrier()
                start = time.perf_counter()
                run()
                samples[name].append(world.allreduce(time.perf_counter() - start, op=MPI.MAX))
        for name, times in samples.items():
            result["times"][name][nbytes] = statistics.median(times)
    result["intra_host"] = intra_host_form(comm, np.zeros(TARGET_BYTES // 4, dtype=np.float32))
    if comm.rank == 0:
        Path(out).write_text(json.dumps(result))


# ----- the driver: cluster up, sections, table, plot, cluster down ---------------------------
def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def label(nbytes: int) -> str:
    return f"{nbytes // MIB} MiB"


def allreduce_section(gbit: float, sizes: list[int], reps: int) -> tuple[list[str], dict]:
    """Run the worker as 4 ranks on the cluster; the table's lines and the raw result."""
    from minipar import cluster

    out = RESULTS / f"cluster_allreduce_{gbit:g}gbit.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "mpi4py", str(Path(__file__).resolve()), "--worker",
               "--json", str(out), "--reps", str(reps), "--sizes", *map(str, sizes)]
    done = cluster.run(HOSTS * PER_HOST, command, ppn=PER_HOST, timeout=170, capture_output=True,
                       env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "UCX_LOG_LEVEL": "error"})
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"all-reduce worker failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(out.read_text())
    times = {name: {int(k): v for k, v in by_size.items()} for name, by_size in result["times"].items()}
    link = {name: {int(k): v for k, v in by_size.items()} for name, by_size in result["link_bytes"].items()}
    lines = [f"all-reduce, {HOSTS} hosts x {PER_HOST} ranks, float32, links {gbit:g} Gbit/s, "
             f"median of {reps} (slowest rank); hierarchical at 16 MiB: {result['intra_host']}",
             f"{'size':>7}" + "".join(f"{name + ' ms':>16}" for name in ALGORITHMS)
             + f"{'hier/ring':>10}{'hier/MPI':>9}{'msg/ring':>9}{'shm/ring':>9}"]
    for nbytes in sizes:
        row = {name: times[name][nbytes] for name in ALGORITHMS}
        lines.append(f"{label(nbytes):>7}" + "".join(f"{row[n] * 1e3:>16.1f}" for n in ALGORITHMS)
                     + f"{row['hierarchical'] / row['ring']:>10.2f}{row['hierarchical'] / row['MPI']:>9.2f}"
                     + f"{row['hier-msg'] / row['ring']:>9.2f}{row['hier-shm'] / row['ring']:>9.2f}")
    probe = TARGET_BYTES if TARGET_BYTES in sizes else sizes[-1]
    p, hosts = HOSTS * PER_HOST, HOSTS
    lines.append(f"bytes on each host's link per call, N = {label(probe)} (qdisc counters): "
                 + ", ".join(f"{name} {link[name][probe] / probe:.2f} N" for name in ALGORITHMS)
                 + f"; formulas: ring 2(p-1)/p N = {2 * (p - 1) / p:.2f} N, "
                 f"hierarchical 2(H-1)/H N = {2 * (hosts - 1) / hosts:.2f} N (+ TCP/IP headers)")
    if gbit == TARGET_GBIT and TARGET_BYTES in sizes:
        ratio = times["hierarchical"][TARGET_BYTES] / times["ring"][TARGET_BYTES]
        verdict = "MET" if ratio <= TARGET_RATIO else "NOT MET"
        lines.append(f"target: hierarchical <= {TARGET_RATIO}x flat ring at 16 MiB, {TARGET_GBIT:g} "
                     f"Gbit/s: {verdict} ({ratio:.2f})")
    return lines, {"times": times, "link_bytes": link, "intra_host": result["intra_host"]}


def other_sections(gbit: float, quick: bool) -> list[str]:
    """The sections of cluster_ddp.py / cluster_model.py, where those files exist."""
    lines: list[str] = []
    sys.path.insert(0, str(HERE))
    for module_name, function in OTHER_SECTIONS:
        if not (HERE / f"{module_name}.py").exists():
            lines.append(f"({module_name}.py not present: its section is skipped)")
            continue
        try:
            section = getattr(importlib.import_module(module_name), function)
            lines += [f"-- {module_name}.{function}, {load()}", *section(gbit, quick)]
        except Exception:  # one section's failure must not hide the others' figures
            lines += [f"({module_name}.{function} failed:)", traceback.format_exc(limit=3)]
    return lines


def plot(results: dict[float, dict], sizes: list[int], path: Path) -> str:
    """Time against size, one panel per link rate; returns what was written (or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(matplotlib is not installed: no plot; pip install matplotlib)"
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (gbit, result) in zip(axes[0], sorted(results.items())):
        for name in ALGORITHMS:
            ax.plot([s / MIB for s in sizes], [result["times"][name][s] * 1e3 for s in sizes],
                    marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("all-reduce size (MiB)")
        ax.set_ylabel("time (ms, median)")
        ax.set_title(f"{HOSTS} hosts x {PER_HOST} ranks, {gbit:g} Gbit/s links")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot written to {path}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 Gbit/s only, 1 and 16 MiB, fewer repeats")
    parser.add_argument("--gbit", type=float, nargs="+", help="link rates in Gbit/s (default 1 2 10)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=7, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.sizes, args.reps, args.json)
        return 0
    from minipar import cluster

    try:
        cluster.require_tools()
    except cluster.ClusterUnavailable as error:
        print(f"benchmarks/cluster.py: {error}", file=sys.stderr)
        return 2
    rates = args.gbit or (QUICK_RATES if args.quick else RATES)
    sizes, reps = (QUICK_SIZES, 5) if args.quick else (SIZES, 7)
    RESULTS.mkdir(exist_ok=True)
    results: dict[float, dict] = {}
    try:
        for gbit in rates:
            cluster.up(HOSTS, gbit=gbit)
            print(f"== links {gbit:g} Gbit/s; {load()}", flush=True)
            lines, results[gbit] = allreduce_section(gbit, sizes, reps)
            print("\n".join(lines), flush=True)
            print("\n".join(other_sections(gbit, args.quick)), flush=True)
    finally:
        cluster.down()  # even when a section failed or the run was interrupted
    (RESULTS / "cluster.json").write_text(json.dumps(
        {f"{g:g}": {k: v for k, v in r.items()} for g, r in results.items()}, indent=1))
    print(plot(results, sizes, RESULTS / "cluster.png"))
    print(f"finished; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
