"""Synchronous, asynchronous and local SGD on the digits: loss vs steps, vs wall time, vs bytes.

    mpiexec -n 4 python -m mpi4py lessons/17_async_and_local_sgd.py

(On a machine with fewer cores than ranks add MPIR_CVAR_ENABLE_HEAVY_YIELD=1. A plain
``python lessons/17_async_and_local_sgd.py`` runs the same on 4 thread ranks.)

Every run trains the same MLP (64-64-10, SGD, lr 0.1 on the mean gradient, batches of
16 per worker drawn at random from each worker's own stream) for the same number of
samples, and rank 0 snapshots the parameters every 16 of its steps; the snapshots are
evaluated on the test digits afterwards, so evaluating costs no training time.

1. Sync: ``DistributedDataParallel`` on all p ranks: one all-reduce per step.
2. Async: ``ParameterServer``, the last rank serving, p - 1 workers pulling and pushing;
   fully asynchronous (s = inf) and bulk-synchronous (s = 0, equal to sync SGD on p - 1
   workers). Rank 0 prints the servers' staleness histogram: how many updates old
   each pushed gradient was.
3. Local SGD (``LocalSGD``, H = 4 and 16) and DiLoCo (H = 16, outer Nesterov SGD
   lr 0.7, momentum 0.9): one parameter all-reduce every H steps, 1/H of DDP's bytes.

Columns: samples seen (all workers), wall seconds, bytes rank 0 has sent, test loss and
accuracy. ``--full`` trains 4x longer and adds s = 1, 4 and H = 1. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import numpy as np

import minipar
from minipar import nn, optim
from minipar.comm import Communicator, allreduce, run_local, world
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, LocalSGD, ParameterServer
from minipar.utils.data import load_digits

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--full", action="store_true", help="4x the samples; s = 0, 1, 4, inf; H = 1, 4, 16")
FULL = parser.parse_args().full
BATCH, LR, EVERY = 16, 0.1, 16
SAMPLES = (4 if FULL else 1) * 32_768  # per run, summed over workers (~23 epochs of the 1438 digits)
DIGITS = load_digits()


def make_model() -> nn.Sequential:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train_step(model, worker: int, step: int, stream: np.random.Generator) -> None:
    rows = stream.integers(0, len(DIGITS.y_train), BATCH)  # this worker's own random batch
    model.zero_grad()
    F.cross_entropy(model(minipar.tensor(DIGITS.x_train[rows])), DIGITS.y_train[rows]).backward()


class Curve:
    """Rank 0's snapshots: (samples seen, seconds, bytes sent, parameters), evaluated at the end."""

    def __init__(self, comm: Communicator) -> None:
        self.comm, self.points, self.start = comm, [], time.perf_counter()

    def snap(self, model, samples: int) -> None:
        self.points.append((samples, time.perf_counter() - self.start, self.comm.bytes_sent,
                            [param.array.copy() for param in model.parameters()]))

    def rows(self) -> list[tuple[int, float, int, float, float]]:
        model = make_model()
        out = []
        for samples, seconds, nbytes, arrays in self.points:
            for param, array in zip(model.parameters(), arrays):
                param.array[...] = array
            with minipar.no_grad():
                logits = model(minipar.tensor(DIGITS.x_test))
                loss = float(F.cross_entropy(logits, DIGITS.y_test).item())
            accuracy = float((logits.array.argmax(axis=1) == DIGITS.y_test).mean())
            out.append((samples, seconds, nbytes, loss, accuracy))
        return out


def start(comm: Communicator) -> Curve:
    comm.barrier()
    comm.reset_counters()
    return Curve(comm)


def run_sync(comm: Communicator) -> Curve:
    model = DistributedDataParallel(make_model(), comm=comm)
    opt = optim.SGD(model.parameters(), lr=LR)
    stream, curve = np.random.default_rng(comm.rank), start(comm)
    steps = SAMPLES // (BATCH * comm.size)
    for step in range(1, steps + 1):
        train_step(model, comm.rank, step, stream)
        opt.step()
        if step % EVERY == 0 or step == steps:
            curve.snap(model, step * BATCH * comm.size)
    return curve


def run_async(comm: Communicator, staleness: int | None) -> tuple[Curve, np.ndarray]:
    model = make_model()
    ps = ParameterServer(model, comm, num_servers=1, lr=LR, max_staleness=staleness)
    stream, curve = np.random.default_rng(comm.rank), start(comm)
    if ps.is_server:
        ps.serve()
    else:
        pushes = SAMPLES // (BATCH * ps.num_workers)
        for step in range(1, pushes + 1):
            ps.pull()
            if step % EVERY == 1 or step == pushes:  # what the servers held when this worker pulled
                curve.snap(model, (step - 1) * BATCH * ps.num_workers)
            train_step(model, comm.rank, step, stream)
            ps.push()
        ps.pull()
        curve.snap(model, pushes * BATCH * ps.num_workers)
        ps.stop()
    return curve, ps.staleness_counts(12)


def run_local_sgd(comm: Communicator, sync_every: int, diloco: bool) -> Curve:
    model = make_model()
    outer = functools.partial(optim.SGD, lr=0.7, momentum=0.9, nesterov=True) if diloco else None
    local = LocalSGD(model, comm, sync_every=sync_every, outer_optimizer=outer)
    opt = optim.SGD(model.parameters(), lr=LR)
    stream, curve = np.random.default_rng(comm.rank), start(comm)
    steps = SAMPLES // (BATCH * comm.size)
    for step in range(1, steps + 1):
        train_step(model, comm.rank, step, stream)
        opt.step()
        if local.step() and (step % EVERY == 0 or step == steps):  # rank 0 holds the average
            curve.snap(model, step * BATCH * comm.size)
    return curve


def lesson(comm: Communicator) -> None:
    def say(*args: object) -> None:
        if comm.rank == 0:
            print(*args, flush=True)

    p = comm.size
    say(f"{p} ranks; every run sees {SAMPLES:,} samples (batch {BATCH} per worker), lr {LR}\n")
    runs: list[tuple[str, Any]] = [("sync  DDP", lambda: run_sync(comm))]
    for staleness in ([0, 1, 4, None] if FULL else [0, None]):
        name = f"async PS s={'inf' if staleness is None else staleness}"
        runs.append((name, functools.partial(run_async, comm, staleness)))
    for sync_every in ([1, 4, 16] if FULL else [4, 16]):
        runs.append((f"local SGD H={sync_every}", functools.partial(run_local_sgd, comm, sync_every, False)))
    runs.append(("DiLoCo H=16", functools.partial(run_local_sgd, comm, 16, True)))
    summary = []
    for name, run in runs:
        result = run()
        curve, histogram = result if isinstance(result, tuple) else (result, None)
        total_bytes = int(allreduce(comm, np.array([comm.bytes_sent], dtype=np.int64))[0])
        if comm.rank != 0:
            continue
        rows = curve.rows()
        print(f"--- {name}: {'samples':>8} {'wall s':>7} {'rank-0 bytes':>13} {'loss':>7} {'acc':>6}")
        for index in sorted({0, len(rows) // 4, len(rows) // 2, 3 * len(rows) // 4, len(rows) - 1}):
            samples, seconds, nbytes, loss, accuracy = rows[index]
            print(f"{'':>{len(name) + 5}} {samples:>8,} {seconds:>7.2f} {nbytes:>13,} {loss:>7.3f} "
                  f"{accuracy:>6.1%}")
        if histogram is not None:
            shown = "  ".join(f"{s}:{n}" for s, n in enumerate(histogram.tolist()) if n)
            print(f"{'':>{len(name) + 5}} staleness (updates old : pushes): {shown}")
        summary.append((name, rows[-1][1], total_bytes, rows[-1][3], rows[-1][4]))
    say(f"\n{'run':<18} {'wall s':>7} {'bytes, all ranks':>17} {'test loss':>9} {'acc':>6}")
    for name, seconds, total_bytes, loss, accuracy in summary:
        say(f"{name:<18} {seconds:>7.2f} {total_bytes:>17,} {loss:>9.3f} {accuracy:>6.1%}")
    say("\nDDP sends 2(p-1)/p * N floats per rank and step; local SGD the same every H steps;"
        "\na parameter server moves N floats each way per push, all through one server rank.")


if __name__ == "__main__":
    comm = world()
    if comm.size > 1:
        lesson(comm)
    else:
        run_local(lesson, 4)
