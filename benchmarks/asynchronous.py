"""Asynchronous and local SGD, measured: updates/s, staleness, accuracy vs updates and time, bytes.

    .venv/bin/python benchmarks/asynchronous.py                      # thread ranks, p = 2..4 (~1 min)
    MPIR_CVAR_ENABLE_HEAVY_YIELD=1 OMP_NUM_THREADS=1 \\
        .venv/bin/mpiexec -n 4 python -m mpi4py benchmarks/asynchronous.py   # processes, p = 4

The model is the digits MLP 64-256-256-10 (float32, SGD lr 0.1 on the mean gradient,
batch 16 per worker, each worker its own random stream). Tables:

1. Updates/s. DDP on p ranks (one update per step, p batches each) vs a parameter
   server (1 server, p - 1 workers, s = inf: one update per push, one batch each);
   median of 3 interleaved repeats. "batches/s" is the work rate both share.
2. Convergence at p = 4 for s = 0, 1, 4, inf: test accuracy after 25/50/75/100 % of the
   updates and the wall time at which it was reached, plus the staleness histogram.
3. Local SGD (H = 1, 4, 16) and DiLoCo (H = 16) at p = 4: bytes per rank and step,
   their ratio to DDP's, final accuracy and time, for the same samples.

Reading the numbers. This machine has 2 cores. Thread ranks share one interpreter, so
their Python parts take turns under the GIL: p workers do not compute p times as fast,
and a parameter server's single rank is a serial bottleneck shared with the workers.
Under mpiexec at p = 4 two ranks share each core (heavy yield), so wall times are
oversubscription times; ratios of bytes and the staleness counts do not depend on it.
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np

import minipar
from minipar import nn, optim
from minipar.comm import Communicator, allreduce, run_local, world
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, LocalSGD, ParameterServer
from minipar.utils.data import load_digits

BATCH, LR = 16, 0.1
DIGITS = load_digits()


def make_model() -> nn.Sequential:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def backward_on_a_batch(model, stream: np.random.Generator) -> None:
    rows = stream.integers(0, len(DIGITS.y_train), BATCH)
    model.zero_grad()
    F.cross_entropy(model(minipar.tensor(DIGITS.x_train[rows])), DIGITS.y_train[rows]).backward()


def accuracy(arrays: list[np.ndarray]) -> float:
    model = make_model()
    for param, array in zip(model.parameters(), arrays):
        param.array[...] = array
    with minipar.no_grad():
        logits = model(minipar.tensor(DIGITS.x_test)).array
    return float((logits.argmax(axis=1) == DIGITS.y_test).mean())


def slowest(comm: Communicator, seconds: float) -> float:
    return float(allreduce(comm, np.array([seconds]), op="max")[0])


def run_ddp(comm: Communicator, steps: int) -> tuple[float, list]:
    model = DistributedDataParallel(make_model(), comm=comm)
    opt = optim.SGD(model.parameters(), lr=LR)
    stream = np.random.default_rng(comm.rank)
    comm.barrier()
    comm.reset_counters()  # the training steps' bytes only, not the construction's broadcast
    start = time.perf_counter()
    for _ in range(steps):
        backward_on_a_batch(model, stream)
        opt.step()
    return slowest(comm, time.perf_counter() - start), [q.array.copy() for q in model.parameters()]


def run_ps(comm: Communicator, pushes: int, staleness: int | None, marks: int = 4) -> dict:
    """Each worker pushes ``pushes`` times; worker 0 snapshots at ``marks`` evenly spaced pushes."""
    model = make_model()
    ps = ParameterServer(model, comm, num_servers=1, lr=LR, max_staleness=staleness)
    stream, points = np.random.default_rng(comm.rank), []
    comm.barrier()
    start = time.perf_counter()
    if ps.is_server:
        ps.serve()
    else:
        checkpoints = {round(pushes * (k + 1) / marks) for k in range(marks)}
        for step in range(1, pushes + 1):
            ps.pull()
            backward_on_a_batch(model, stream)
            ps.push()
            if step in checkpoints:
                points.append((step * ps.num_workers, time.perf_counter() - start,
                               [q.array.copy() for q in model.parameters()]))
        ps.pull()
        ps.stop()
    seconds = slowest(comm, time.perf_counter() - start)
    return {"seconds": seconds, "points": points, "staleness": ps.staleness_counts(16)}


def run_local_sgd(comm: Communicator, steps: int, sync_every: int, diloco: bool) -> dict:
    model = make_model()
    outer = functools.partial(optim.SGD, lr=0.7, momentum=0.9, nesterov=True) if diloco else None
    local = LocalSGD(model, comm, sync_every=sync_every, outer_optimizer=outer)
    opt = optim.SGD(model.parameters(), lr=LR)
    stream = np.random.default_rng(comm.rank)
    comm.barrier()
    comm.reset_counters()
    start = time.perf_counter()
    for _ in range(steps):
        backward_on_a_batch(model, stream)
        opt.step()
        local.step()
    return {"seconds": slowest(comm, time.perf_counter() - start), "bytes": comm.bytes_sent,
            "accuracy": accuracy([q.array for q in model.parameters()])}


def rates(comm: Communicator, steps: int = 150) -> dict:
    """Table 1 at this communicator's size: median seconds of 3 interleaved repeats."""
    ddp, ps = [], []
    for _ in range(3):
        ddp.append(run_ddp(comm, steps)[0])
        ps.append(run_ps(comm, steps, None, marks=1)["seconds"])
    return {"ddp": statistics.median(ddp), "ps": statistics.median(ps), "steps": steps}


def convergence(comm: Communicator, pushes: int = 300) -> dict:
    return {s: run_ps(comm, pushes, s) for s in (0, 1, 4, None)}


def local_sgd(comm: Communicator, steps: int = 256) -> dict:
    seconds, arrays = run_ddp(comm, steps)
    out = {"DDP": {"seconds": seconds, "bytes": comm.bytes_sent, "accuracy": accuracy(arrays)}}
    for sync_every in (1, 4, 16):
        out[f"local SGD H={sync_every}"] = run_local_sgd(comm, steps, sync_every, False)
    out["DiLoCo H=16"] = run_local_sgd(comm, steps, 16, True)
    return {"steps": steps, "runs": out}


def print_rates(by_p: dict[int, dict]) -> None:
    print("1. updates/s: DDP on p ranks vs parameter server (1 server + p-1 workers, s = inf)")
    print(f"{'p':>2} {'DDP upd/s':>10} {'DDP batches/s':>14} {'PS upd/s':>9} {'PS batches/s':>13} "
          f"{'PS/DDP upd':>11}")
    for p, r in by_p.items():
        ddp_rate, ps_rate = r["steps"] / r["ddp"], r["steps"] * (p - 1) / r["ps"]
        print(f"{p:>2} {ddp_rate:>10.0f} {ddp_rate * p:>14.0f} {ps_rate:>9.0f} {ps_rate:>13.0f} "
              f"{ps_rate / ddp_rate:>11.2f}")


def print_convergence(p: int, runs: dict) -> None:
    print(f"\n2. parameter server at p = {p} ({p - 1} workers): test accuracy at updates (wall s)")
    for s, run in runs.items():
        cells = "  ".join(f"{updates:>5} {accuracy(arrays):>6.1%} ({seconds:5.2f} s)"
                          for updates, seconds, arrays in run["points"])
        print(f"s={'inf' if s is None else s:<4} {cells}")
    print("   staleness histogram (updates old: pushes)")
    for s, run in runs.items():
        shown = "  ".join(f"{age}:{n}" for age, n in enumerate(run["staleness"].tolist()) if n)
        print(f"   s={'inf' if s is None else s:<4} {shown}")


def print_local_sgd(p: int, result: dict) -> None:
    steps, runs = result["steps"], result["runs"]
    ddp_bytes = runs["DDP"]["bytes"]
    print(f"\n3. local SGD at p = {p}, {steps} steps of {BATCH} per rank")
    print(f"{'run':<16} {'bytes/rank/step':>16} {'vs DDP':>7} {'accuracy':>9} {'wall s':>7}")
    for name, run in runs.items():
        print(f"{name:<16} {run['bytes'] / steps:>16,.0f} {run['bytes'] / ddp_bytes:>7.3f} "
              f"{run['accuracy']:>9.1%} {run['seconds']:>7.2f}")


def main() -> None:
    comm = world()
    if comm.size > 1:  # under mpiexec: every table at this size
        r, c, s = rates(comm), convergence(comm), local_sgd(comm)
        if comm.rank == 0:
            print(f"mpiexec, p = {comm.size} processes\n")
            print_rates({comm.size: r})
            print_convergence(comm.size, c)
            print_local_sgd(comm.size, s)
        return
    print("thread ranks (run_local)\n")
    print_rates({p: run_local(rates, p)[0] for p in (2, 3, 4)})
    print_convergence(4, run_local(convergence, 4)[0])
    print_local_sgd(4, run_local(local_sgd, 4)[0])


if __name__ == "__main__":
    main()
