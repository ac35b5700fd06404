"""A scale model: fit alpha, beta, gamma and per-call overhead here, check at p = 2 and 4, predict 4096.

    mpiexec -n 4 python -m mpi4py lessons/13_scale_model.py [--megabytes 16]
    minipar run 13 -n 4 --cluster     # on the emulated cluster (minipar cluster up --hosts 2 --gbit 2)

1. Fit (``minipar.observe.cost.calibrate``, what ``minipar cost fit`` runs): two
   ranks exchange messages of 8 B to 8 MiB; the smallest gives alpha (latency per
   message), the large ones beta (seconds per byte); an in-place add gives gamma
   and a matmul the compute rate; a tiny all-reduce, minus its alpha terms, gives
   the **per-call overhead** o, the Python cost of one collective call. On a
   cluster (ranks on several hosts, told apart by ``MPI.Get_processor_name()``)
   a second pair, one rank per host, fits the link between hosts.
2. Check: ring all-reduce of 4 KiB ... N, model ``o + 2(p-1) alpha + 2(p-1)/p N
   beta + (p-1)/p N gamma`` against the median measured time, at p = 2 and 4,
   with and without o. Without it, small arrays are predicted several times too
   fast: the model counted only the messages, not the Python around them.
3. Predict: naive, tree and ring all-reduce of 100 MB from 8 to 4096 ranks, then
   whole training steps (``cost.scaling_table``): DDP, pipeline, tensor parallel.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from minipar.comm import allreduce, auto, world
from minipar.observe import cost
from minipar.observe.cost.calibrate import host_names, measure_link, merge


def pair_of(comm, host_of_rank: list[int], across: bool) -> list[int]:
    """Rank 0 and the first rank on another host (``across``) or on rank 0's host."""
    other = next(r for r in range(1, comm.size) if (host_of_rank[r] != host_of_rank[0]) == across)
    return [0, other]


def ring_times(comm, sizes: list[int], rounds: int = 4) -> dict[int, float]:
    """Median seconds of back-to-back ring all-reduces of each size (interleaved rounds)."""
    times: dict[int, list[float]] = {n: [] for n in sizes}
    arrays = {n: np.zeros(n // 4, np.float32) for n in sizes}  # zeros: sums stay finite
    for round_index in range(rounds + 1):  # round 0 warms up
        for n, array in arrays.items():
            comm.barrier()
            for _ in range(max(2, min(30, (2 << 20) // n))):
                start = time.perf_counter()
                allreduce(comm, array, algorithm="ring")
                if round_index:
                    times[n].append(time.perf_counter() - start)
    return {n: float(np.median(t)) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=16.0, help="largest all-reduce to check (MiB)")
    args = parser.parse_args()
    comm = world()
    load = os.getloadavg()  # before this lesson's own ranks add to it
    if comm.size < 2:
        raise SystemExit("needs at least 2 ranks: mpiexec -n 4 python -m mpi4py lessons/13_scale_model.py")
    largest = int(args.megabytes * 2**20) // 4 * 4
    sizes = sorted({n for n in (4096, 65536, 2**20) if n < largest} | {largest})
    names = host_names(comm)
    hosts = [list(dict.fromkeys(names)).index(name) for name in names]
    cluster = len(set(hosts)) > 1

    # 1. Fit one pair per link kind while the other ranks sleep, then check at p = 2 and p = p.
    parts, checks = [], {}
    kinds = [kind for kind, across in (("intra", False), ("inter", True))
             if any((h != hosts[0]) == across for h in hosts[1:])]
    for kind in kinds:
        pair = pair_of(comm, hosts, across=kind == "inter")
        sub = comm.split(0 if comm.rank in pair else None)
        if sub is not None:
            found = measure_link(sub, rounds=3)
            if found is not None:
                parts.append(found)
        cost.idle_barrier(comm)
    if comm.rank == 0 and "intra" not in kinds:  # one rank per host: no intra link; borrow the inter fit
        parts.append(parts[0] | {"kind": "intra"})
    two = pair_of(comm, hosts, across=cluster)  # p = 2: across hosts on a cluster
    sub = comm.split(0 if comm.rank in two else None)
    if sub is not None:
        checks[2] = ring_times(sub, sizes)
    cost.idle_barrier(comm)
    if comm.size > 2:
        checks[comm.size] = ring_times(comm, sizes)
    if comm.rank != 0:
        return

    model = auto.model_from_json(merge(parts, "this lesson"))
    bare = auto.CostModel(model.intra, model.inter, model.gamma, dict.fromkeys(model.overhead, 0.0))
    where = f"a cluster of {len(set(hosts))} hosts ({', '.join(dict.fromkeys(names))})" if cluster else \
        f"one host ({names[0]})"
    print(f"on {where}, {os.cpu_count()} cores, {comm.size} ranks; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for kind, link in (("intra-host", model.intra), ("inter-host", model.inter)):
        if link is not None and (kind == "inter-host" or "intra" in kinds):
            form = "max(alpha, n beta): paced by the link" if link.paced else "alpha + n beta"
            print(f"fitted {kind}: alpha {link.alpha * 1e6:.1f} us, beta {link.beta * 1e12:.0f} ps/byte "
                  f"({1e-9 / link.beta:.2f} GB/s), a message costs {form}")
    overhead = model.overhead["ring"]
    print(f"gamma {model.gamma * 1e12:.0f} ps/byte; per-call overhead o = {overhead * 1e6:.1f} us "
          "(a tiny ring all-reduce minus its 2 alpha)")

    print("\nring all-reduce: model o + 2(p-1) alpha + 2(p-1)/p N beta + (p-1)/p N gamma, "
          "measured = median of back-to-back calls")
    print(f"{'p':>3} {'bytes':>10} {'no o':>10} {'with o':>10} {'measured':>10} "
          f"{'meas/no o':>10} {'meas/with o':>12}")
    for p, measured in checks.items():
        layout = [hosts[r] for r in (two if p == 2 else range(comm.size))]
        for n, seconds in measured.items():
            without, with_o = auto.predict(bare, "ring", layout, n), auto.predict(model, "ring", layout, n)
            print(f"{p:>3} {n:>10,} {without * 1e3:>8.3f}ms {with_o * 1e3:>8.3f}ms {seconds * 1e3:>8.3f}ms "
                  f"{seconds / without:>10.2f} {seconds / with_o:>12.2f}")
    print("(the overhead is paid once per call: it is most of a small all-reduce, nothing of a big one)")
    explain(comm.size, cluster, load)

    machine = cost.Machine(model.intra.alpha, model.intra.beta, model.gamma,
                           float(parts[0]["flops"]), overhead)
    size = 100e6
    print(f"\nall-reduce of {size / 1e6:.0f} MB, predicted seconds (this machine's alpha, beta, gamma, o)")
    print(f"{'p':>5} {'naive':>9} {'tree':>9} {'ring':>9}   ring bytes sent per rank 2(p-1)/p N")
    for p in cost.RANKS:
        naive, tree = cost.naive_allreduce(p, size, machine), cost.tree_allreduce(p, size, machine)
        print(f"{p:>5} {naive:>9.3f} {tree:>9.3f} {cost.ring_allreduce(p, size, machine):>9.3f}   "
              f"{2 * (p - 1) / p * size / 1e6:,.1f} MB")

    print("\ntraining steps (see cost.scaling_table): DDP 100M params, 8 samples/rank; pipeline the same "
          "model, 4p microbatches of 8; tensor parallel 8 MLP blocks of hidden 2048, 1024 tokens")
    print(f"{'p':>5} {'DDP step':>10} {'eff':>5} {'pipeline':>10} {'eff':>5} {'bubble':>7} "
          f"{'TP step':>10} {'eff':>5}")
    for row in cost.scaling_table(machine):
        print(f"{row['p']:>5} {row['ddp_time']:>9.3f}s {row['ddp_eff']:>5.2f} "
              f"{row['pipe_time']:>9.3f}s {row['pipe_eff']:>5.2f} {row['pipe_bubble']:>7.3f} "
              f"{row['tp_time']:>9.3f}s {row['tp_eff']:>5.2f}")
    print("(efficiency = one rank's time for the same work / (p x step time); bubble = (p-1)/(m+p-1))")


def explain(p: int, cluster: bool, load: tuple[float, float, float]) -> None:
    """Why measured and predicted differ where they do, in plain words."""
    cores = os.cpu_count() or 1
    notes = []
    if p > cores:
        notes.append(f"p = {p} runs on {cores} cores: ranks take turns on them (and MPICH's heavy yield "
                     "puts waiting ranks to sleep), which the model, a core per rank, does not know.")
    if not cluster:
        notes.append("On one host MPI moves bytes by memcpy on the same cores that reduce: beta is a "
                     "memory bandwidth, which also depends on the size (caches), so mid-sized arrays can be "
                     "off. For a network's figures: minipar cluster up --hosts 2 --gbit 2, then "
                     "minipar run 13 -n 4 --cluster.")
    if load[0] > 0.5 * cores:
        notes.append(f"The load average was {load[0]:.2f} at start on {cores} cores: other work shares "
                     "them, and every measurement is slower for it.")
    if notes:
        print("Why the numbers differ here: " + " ".join(notes))


if __name__ == "__main__":
    main()
