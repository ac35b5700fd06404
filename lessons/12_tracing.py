"""Tracing: a per-rank timeline of data-parallel training, showing compute, communication and overlap.

    mpiexec -n 2 python -m mpi4py lessons/12_tracing.py [--steps 6] [--out trace.json]

1. ``trace.enable()`` (or ``MINIPAR_TRACE=1``) starts recording on every rank.
   The lesson wraps forward, backward and the optimizer step in "compute"
   spans; DDP adds one "comm" span per gradient bucket, on its communication
   thread, and one for the wait at the end of backward.
2. An MLP 512-1024-1024-1024-10 trains for a few steps with DDP, once with
   ``overlap=False`` (the main thread all-reduces each bucket, backward paused)
   and once with ``overlap=True`` (each bucket's all-reduce runs on a thread
   while backward computes the earlier layers).
3. ``trace.save(path, comm)`` gathers every rank's spans to rank 0 and writes one
   Chrome-trace JSON: open it at https://ui.perfetto.dev to see a row per rank
   and per thread. Rank 0 prints the text timeline (``plot.text_timeline``).
4. Figures beside their formulas: bucket spans = steps x buckets; bytes all-reduced
   per step = 4 x parameters; and how much of the communication ran during
   computation (``overlap``), which only the overlapped run can have.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn
from minipar.comm import world
from minipar.nn import functional as F
from minipar.observe import plot, trace
from minipar.optim import SGD
from minipar.parallel import DistributedDataParallel

SIZES = (512, 1024, 1024, 1024, 10)
BATCH_PER_RANK = 256
BUCKET_MB = 1.0


def make_model() -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(SIZES, SIZES[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no ReLU after the last layer


def train(comm: object, steps: int, overlap: bool, show_bar: bool) -> DistributedDataParallel:
    """``steps`` DDP steps on random data (each rank its own batch); returns the wrapped model."""
    minipar.manual_seed(0)  # DDP broadcasts rank 0's weights anyway
    model = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=BUCKET_MB, overlap=overlap)
    optimizer = SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(1 + comm.rank)
    for _ in tqdm(range(steps), desc=f"overlap={overlap}", disable=not show_bar):
        x = rng.standard_normal((BATCH_PER_RANK, SIZES[0])).astype(np.float32)
        y = rng.integers(0, SIZES[-1], BATCH_PER_RANK)
        with trace.span("forward", "compute"):
            loss = F.cross_entropy(model(minipar.tensor(x)), y)
        with trace.span("backward", "compute"):  # DDP's all-reduces run inside, on its thread
            loss.backward()
        with trace.span("optimizer step", "compute"):
            optimizer.step()
            optimizer.zero_grad()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "minipar_trace_12.json"))
    args = parser.parse_args()
    comm = world()
    root = comm.rank == 0
    params = sum(p.array.size for p in make_model().parameters())
    step_ms: dict[bool, float] = {}
    for overlap in (False, True):
        trace.enable()  # clears the previous run's spans
        model = train(comm, args.steps, overlap, show_bar=root)
        trace.disable()
        path = args.out.replace(".json", f"_overlap_{str(overlap).lower()}.json")
        document = trace.save(path, comm)  # every rank calls it; rank 0 writes
        if not root:
            continue
        buckets = len(model.bucket_layout)
        bucket_spans = [e for e in document["traceEvents"]
                        if e["ph"] == "X" and e["name"].startswith("allreduce bucket")]
        moved = sum(e["args"].get("bytes", 0) for e in bucket_spans) / (comm.size * args.steps)
        busy = plot.busy_time(document)
        step_ms[overlap] = max(row["wall"] for row in busy.values()) / args.steps * 1e3
        print(f"\n=== DDP, overlap={overlap}: {comm.size} ranks, {args.steps} steps ===")
        print(plot.text_timeline(document))
        print(f"bucket spans: {len(bucket_spans)} (theory steps x buckets x ranks = "
              f"{args.steps} x {buckets} x {comm.size} = {args.steps * buckets * comm.size})")
        print(f"bytes all-reduced per rank and step: {moved:,.0f} (theory 4 x {params:,} parameters = "
              f"{4 * params:,})")
        for rank, row in busy.items():
            share = row["overlap"] / row["comm"] if row.get("comm") else 0.0
            print(f"rank {rank}: comm {row.get('comm', 0) * 1e3:.1f} ms, of which {share:.0%} ran while "
                  f"this rank computed (theory: {'> 0' if overlap else '0'}, "
                  f"{'buckets start during backward' if overlap else 'backward pauses for each bucket'})")
        print(f"trace written to {path} (open it at https://ui.perfetto.dev)")
    if root:
        print(f"\nstep time: {step_ms[False]:.1f} ms without overlap, {step_ms[True]:.1f} ms with it. "
              f"Overlap hides communication only if a core is free to run it: here {comm.size} ranks x 2 "
              f"threads share {os.cpu_count()} cores, so the comm thread may slow the compute it overlaps.")


if __name__ == "__main__":
    main()
