"""A scale model: fit alpha, beta, gamma and flop/s here, check them at p = 2 and 4, predict 8 to 4096 ranks.

    mpiexec -n 4 python -m mpi4py lessons/13_scale_model.py [--megabytes 16]

1. Fit (``minipar.observe.cost.measure``): ranks 0 and 1 exchange messages of 8 B to
   16 MiB; the smallest gives alpha (latency per message), the large ones beta
   (seconds per byte); an in-place add gives gamma (seconds per byte reduced)
   and a 384x384 matmul the compute rate. Ranks 2 and 3 sleep meanwhile.
2. Check: ring all-reduce of N bytes, model ``2(p-1) alpha + 2(p-1)/p N beta +
   (p-1)/p N gamma`` against the median measured time, at p = 2 (ranks 0, 1)
   and p = 4 (everyone); the fit and the timed runs are interleaved so both
   see the same machine. The model assumes one core per rank: with more
   ranks than cores, the measured time exceeds it.
3. Predict: naive, tree and ring all-reduce of 100 MB from 8 to 4096 ranks,
   then whole training steps (``cost.scaling_table``): DDP (weak scaling),
   pipeline (bubble (p-1)/(m+p-1)) and tensor parallel (two all-reduces per
   block), with their parallel efficiency.
"""

from __future__ import annotations

import argparse
import os

from minipar.comm import world
from minipar.observe import cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=16.0, help="all-reduce size to check (MiB)")
    args = parser.parse_args()
    comm = world()
    nbytes = int(args.megabytes * 2**20) // 4 * 4
    root = comm.rank == 0
    if comm.size < 2:
        raise SystemExit("needs at least 2 ranks: mpiexec -n 4 python -m mpi4py lessons/13_scale_model.py")

    checks = []
    pair = comm.split(0 if comm.rank < 2 else None)  # ranks 0 and 1; the others get None
    if pair is not None:
        checks.append(cost.check_allreduce(pair, nbytes))
    cost.idle_barrier(comm)  # ranks 2.. sleep here while 0 and 1 measure
    if comm.size > 2:
        checks.append(cost.check_allreduce(comm, nbytes))
    if not root:
        return
    machine = cost.Machine(*(checks[0][name] for name in ("alpha", "beta", "gamma", "flops")))  # p = 2 fit

    print(f"fitted on this machine: {machine}")
    print(f"\nring all-reduce of {nbytes:,} bytes: model 2(p-1) alpha + 2(p-1)/p N beta + (p-1)/p N gamma")
    print(f"{'p':>3} {'predicted':>11} {'measured':>11} {'measured/predicted':>19} {'cpu share':>10}")
    for check in checks:
        print(f"{check['p']:>3} {check['predicted'] * 1e3:>9.3f}ms {check['measured'] * 1e3:>9.3f}ms "
              f"{check['ratio']:>19.2f} {check['cpu_share']:>10.2f}")
    print("(cpu share: CPU time / wall time of the rank that had its core least. MPI busy-polls while\n"
          " it waits, so 1.0 means every rank kept a core all along: the model assumes exactly that.)")
    cores = os.cpu_count() or 1
    if os.environ.get("MPIR_CVAR_ENABLE_HEAVY_YIELD") == "1":
        print(f"Here {comm.size} ranks share {cores} cores, so MPICH's heavy yield is on: a waiting rank "
              "sleeps instead of\npolling. That inflates every latency (alpha above) and the cpu share no "
              "longer measures\nwaiting for a core. The p = 4 time also includes ranks taking turns on the "
              f"cores. On a\nmachine with {comm.size} or more cores, run without heavy yield for a clean "
              "check.")
    elif comm.size > cores:
        print(f"p = {comm.size} runs on {cores} cores: ranks take turns, so the measured time exceeds a "
              "model that gives every rank its own core.")

    size = 100e6
    print(f"\nall-reduce of {size / 1e6:.0f} MB, predicted seconds (this machine's alpha, beta, gamma)")
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


if __name__ == "__main__":
    main()
