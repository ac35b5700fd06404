"""Data-parallel training step: weak scaling, per-parameter vs bucketed vs overlapped, PyTorch DDP.

    .venv/bin/python benchmarks/data_parallel.py              # prints the whole table (~1 minute)
    .venv/bin/python benchmarks/data_parallel.py --repeats 1  # quicker, noisier

The driver launches its own workers, alternating them ``--repeats`` times so a
noisy neighbour hurts every contender alike, and reports medians:

    mpiexec -n {1,2} python -m mpi4py benchmarks/data_parallel.py --worker minipar
    torchrun --standalone --nproc_per_node {1,2} benchmarks/data_parallel.py --worker torch

One BLAS thread per rank (OMP/OPENBLAS/MKL_NUM_THREADS=1, torch.set_num_threads(1)),
float32, SGD with momentum 0.9, cross-entropy, batch 64 per rank (weak scaling:
the global batch grows with p). A step is forward + zero_grad + backward
(+ gradient sync) + optimizer step, timed on rank 0; each worker interleaves its
variants in rounds and reports the median step.

Models: "mlp" 784-1024-1024-1024-10 (8 tensors, 2.9 M parameters), "deep256"
784-256x25-10 (26 Linear layers = 52 parameter tensors, 1.8 M parameters),
"deep128" 784-128x50-10 and "deep64" 784-64x50-10 (102 tensors each, 0.93 M
and 0.25 M parameters): the narrower the layers, the more the per-message
latency of the per-parameter form weighs against its bandwidth.
Variants: "none" (no gradient sync: two independent processes, the ceiling),
"per-parameter" (``NaiveDataParallel``: one ring all-reduce per tensor after
backward), "bucketed" (DDP, overlap=False: each bucket all-reduced inside its
hook, backward paused) and "bucketed+overlapped" (DDP: on a communication thread).

Targets (issue 4): efficiency t(p=1)/t(p=2) >= 0.80 on the mlp; bucketed+overlapped
>= 1.3x faster than per-parameter on a model with >= 50 tensors; minipar's step
<= 1.0x PyTorch DDP's (gloo, its default buckets) at p = 2.

Reading the numbers on a 2-core machine. At p = 2 each rank's main thread
already fills a core, and MPICH's shared-memory transfer is CPU work done
inside MPI calls (~10 GB/s here, against ~40 GB/s for a plain memcpy), so the
communication thread can only time-share the core backward is using: overlap
cannot hide the all-reduce, only interleave it. What the step pays is the CPU
cost of the all-reduce (~2 ms for the mlp's 11.6 MB: 2 x 5.8 MB through MPI
plus the adds) and the two ranks contending for memory bandwidth and the
shared L3. So the fast forms here are the ones that touch memory least:
one-parameter buckets are all-reduced in place in the engine's own gradient
array (no bucket copy: the engine never reads a leaf's ``.grad`` after its
hooks), ``bucketed`` runs each bucket's all-reduce at once inside the hook
while the gradient is still in cache, and the optimizer step works in
cache-sized blocks (``minipar.optim``). Overlap pays off where communication has
hardware of its own (a spare core per rank, a NIC's DMA engine); here the
thread costs ~0.5 ms a step (time-sharing, MPICH's busy polling while the
peer's thread is descheduled): raising its priority, polling politely with
sleeps or yields, and a shorter GIL switch interval were tried and did not
change that.

The ">= 1.3x over per-parameter" target needs a model whose per-parameter
sync costs more than 30% of a step. The per-parameter step over the
no-communication step bounds it (printed as "a sync costing nothing"): no
sync can gain more. For deep256 that is below 1.3x on this machine (its
52 all-reduces of 256 KiB cost ~2.5 ms against a 10 ms step), so the target
is read on the 102-tensor models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = Path(sys.executable)
BATCH = 64
MODELS = {"mlp": [784, 1024, 1024, 1024, 10], "deep256": [784] + [256] * 25 + [10],
          "deep128": [784] + [128] * 50 + [10], "deep64": [784] + [64] * 50 + [10]}
CAPTIONS = {"mlp": "MLP 784-1024-1024-1024-10 (8 tensors, 2.9 M parameters)",
            "deep256": "deep MLP 784-256x25-10 (52 tensors, 1.8 M parameters)",
            "deep128": "deep MLP 784-128x50-10 (102 tensors, 0.93 M parameters)",
            "deep64": "deep MLP 784-64x50-10 (102 tensors, 0.25 M parameters)"}
# Caps that give several buckets: 2 MiB leaves each big MLP weight alone in its bucket (no copy).
BUCKET_CAP_MB = {"mlp": 2.0, "deep256": 1.0, "deep128": 1.0, "deep64": 0.25}
VARIANTS = ["none", "per-parameter", "bucketed", "bucketed+overlapped"]
ROUNDS, STEPS_PER_ROUND, WARMUP = 6, 5, 3


def mlp(sizes: list[int]) -> object:
    """Linear layers of ``sizes`` with ReLU between, seeded: the same weights on every rank and run."""
    import minipar
    from minipar import nn

    minipar.manual_seed(0)
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if index < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    env.pop("MINIPAR_COMM_TIMEOUT", None)
    return env


# ----- workers ----------------------------------------------------------------------------------
def minipar_worker() -> None:
    import minipar
    from minipar import optim
    from minipar.comm import world
    from minipar.nn import functional as F
    from minipar.parallel import DistributedDataParallel, NaiveDataParallel

    comm = world()
    rng = np.random.default_rng(comm.rank)
    x = minipar.tensor(rng.normal(size=(BATCH, 784)).astype(np.float32))
    y = rng.integers(0, 10, BATCH)

    results = {}
    for model_name, sizes in MODELS.items():
        contenders = {}
        for variant in (VARIANTS if comm.size > 1 else ["none"]):
            model = mlp(sizes)
            sync = None
            if variant == "per-parameter":
                wrapped = NaiveDataParallel(model, comm)
                sync = wrapped.allreduce_gradients
            elif variant.startswith("bucketed"):
                wrapped = DistributedDataParallel(model, comm=comm, bucket_cap_mb=BUCKET_CAP_MB[model_name],
                                                  overlap=variant.endswith("overlapped"))
            else:
                wrapped = model
            contenders[variant] = (wrapped, optim.SGD(model.parameters(), lr=0.01, momentum=0.9), sync)
        times: dict[str, list[float]] = {variant: [] for variant in contenders}
        for round_index in range(ROUNDS + 1):
            for variant, (wrapped, opt, sync) in contenders.items():
                comm.barrier()
                for _ in range(WARMUP if round_index == 0 else STEPS_PER_ROUND):
                    start = time.perf_counter()
                    loss = F.cross_entropy(wrapped(x), y)
                    opt.zero_grad()
                    loss.backward()
                    if sync is not None:
                        sync()
                    opt.step()
                    if round_index > 0:
                        times[variant].append(time.perf_counter() - start)
        for variant, samples in times.items():
            results[f"{model_name}/{variant}"] = statistics.median(samples) * 1e3
        if model_name == "mlp" and comm.size > 1:
            results["mlp/buckets"] = contenders["bucketed+overlapped"][0].bucket_layout
    if comm.rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def torch_worker() -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    generator = np.random.default_rng(rank)
    x = torch.from_numpy(generator.normal(size=(BATCH, 784)).astype(np.float32))
    y = torch.from_numpy(generator.integers(0, 10, BATCH))
    results = {}
    for model_name, sizes in MODELS.items():
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            hidden = index < len(sizes) - 2
            layers += [torch.nn.Linear(fan_in, fan_out)] + ([torch.nn.ReLU()] if hidden else [])
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        samples = []
        for step in range(WARMUP + ROUNDS * STEPS_PER_ROUND):
            start = time.perf_counter()
            loss = F.cross_entropy(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= WARMUP:
                samples.append(time.perf_counter() - start)
        results[f"{model_name}/torch"] = statistics.median(samples) * 1e3
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)
    dist.barrier()  # both ranks done before gloo is torn down
    dist.destroy_process_group()


# ----- driver -------------------------------------------------------------------------------------
def launch(kind: str, nprocs: int) -> dict[str, float]:
    script = str(Path(__file__).resolve())
    env = one_thread_env()
    if kind == "minipar":
        env["MPIEXEC_TIMEOUT"] = "300"
        command = [str(PYTHON.with_name("mpiexec")), "-n", str(nprocs), str(PYTHON), "-m", "mpi4py",
                   script, "--worker", "minipar"]
    else:
        command = [str(PYTHON.with_name("torchrun")), "--standalone", f"--nproc_per_node={nprocs}",
                   script, "--worker", "torch"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:  # e.g. gloo aborting at teardown after the results were printed
        print(f"warning: {kind} p={nprocs} exited with {done.returncode} after reporting its results",
              file=sys.stderr)
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["minipar", "torch"])
    parser.add_argument("--repeats", type=int, default=3, help="alternating launches of every worker")
    args = parser.parse_args()
    if args.worker == "minipar":
        return minipar_worker()
    if args.worker == "torch":
        return torch_worker()

    samples: dict[tuple[int, str], list[float]] = {}
    buckets = None
    for repeat in range(args.repeats):
        for kind, nprocs in (("minipar", 1), ("minipar", 2), ("torch", 1), ("torch", 2)):
            print(f"[{repeat + 1}/{args.repeats}] {kind} p={nprocs} ...", file=sys.stderr, flush=True)
            for key, value in launch(kind, nprocs).items():
                if key == "mlp/buckets":
                    buckets = value
                else:
                    samples.setdefault((nprocs, key), []).append(value)
    t = {key: statistics.median(values) for key, values in samples.items()}

    def row(label: str, one: float | None, two: float, note: str = "") -> None:
        first = f"{one:9.2f}" if one is not None else " " * 9
        efficiency = f"{one / two:6.2f}" if one is not None else " " * 6
        print(f"  {label:<30}{first} {two:9.2f}   {efficiency}   {note}")

    load = os.getloadavg()[0]
    print(f"\nData-parallel step time (ms, median of {args.repeats} launches x {ROUNDS * STEPS_PER_ROUND} "
          f"steps), float32, batch {BATCH}/rank, 1 BLAS thread/rank, load average {load:.1f}")
    for model_name in MODELS:
        cap = BUCKET_CAP_MB[model_name]
        print(f"\n{CAPTIONS[model_name]}, minipar bucket_cap_mb={cap}")
        print(f"  {'':<30}{'p=1':>9} {'p=2':>9}   t1/t2")
        one = t[(1, f"{model_name}/none")]
        for variant in VARIANTS:
            row(f"minipar {variant}", one, t[(2, f"{model_name}/{variant}")])
        row("PyTorch DDP (gloo)", t[(1, f"{model_name}/torch")], t[(2, f"{model_name}/torch")])
    if buckets:
        print(f"\nminipar mlp buckets (reverse registration order): {buckets}")

    def efficiency(variant: str) -> float:
        return t[(1, "mlp/none")] / t[(2, f"mlp/{variant}")]

    print("\nTargets (measured, with the target)")
    overlapped = efficiency("bucketed+overlapped")
    print(f"  weak-scaling efficiency t(p=1)/t(p=2), mlp: bucketed+overlapped {overlapped:.2f}"
          f", bucketed {efficiency('bucketed'):.2f}  (>= 0.80; no-communication ceiling "
          f"{efficiency('none'):.2f})")
    for model_name in ("deep256", "deep128", "deep64"):
        per_parameter = t[(2, f"{model_name}/per-parameter")]
        print(f"  {model_name}: per-parameter / bucketed+overlapped step "
              f"{per_parameter / t[(2, f'{model_name}/bucketed+overlapped')]:.2f}x, / bucketed "
              f"{per_parameter / t[(2, f'{model_name}/bucketed')]:.2f}x  (>= 1.3x; a sync costing "
              f"nothing: {per_parameter / t[(2, f'{model_name}/none')]:.2f}x)")
    for model_name in MODELS:
        ratio = t[(2, f"{model_name}/bucketed+overlapped")] / t[(2, f"{model_name}/torch")]
        print(f"  {model_name}: minipar bucketed+overlapped / PyTorch DDP step at p=2 "
              f"{ratio:.2f}x  (<= 1.0x)")


if __name__ == "__main__":
    main()
