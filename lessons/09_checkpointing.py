"""Gradient checkpointing: trade one extra forward for O(sqrt(n)) instead of O(n) stored activations.

    python lessons/09_checkpointing.py [--blocks 64]

1. A deep MLP, n blocks of Linear(256, 256) + Tanh on a batch of 256 (float32).
   Plain backprop keeps one (256 x 256) activation per block for backward:
   n x 256 KiB. ``minipar.observe.memory.graph_bytes(loss)`` counts what the graph holds.
2. ``checkpoint_sequential(model, k, x)`` keeps only the k - 1 boundaries between
   segments plus the last segment's activations (it runs normally), and
   recomputes each other segment during backward:
        stored = (k - 1) + (n - (k - 1) * floor(n/k))  activations
   which at k = sqrt(n) is 2 sqrt(n) - 1: 15 instead of 64 for n = 64.
3. For k = 1, 2, 4, ..., n: stored activations (measured next to the formula),
   the peak memory of a whole step (tracemalloc; it adds the recomputed segment
   and backward's temporary gradients), and the step time next to the
   prediction 1 + (1/3) (k - 1) floor(n/k) / n (one extra forward of the
   checkpointed layers, a forward being ~1/3 of a step).
4. The checkpointed gradients equal the plain ones.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS: steady timings

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import minipar  # noqa: E402
from minipar import nn
from minipar.checkpoint import checkpoint_sequential  # noqa: E402
from minipar.observe import memory  # noqa: E402
from minipar.optim import SGD  # noqa: E402

WIDTH = BATCH = 256
MiB = 1024 * 1024


def stored_formula(n: int, k: int) -> int:
    """Activations kept after forward: k - 1 boundaries + the last (normal) segment's n - (k-1) floor(n/k)."""
    return (k - 1) + (n - (k - 1) * (n // k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=64)
    args = parser.parse_args()
    n = args.blocks
    minipar.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh()) for _ in range(n)])
    optimizer = SGD(model.parameters(), lr=1e-3)
    x = minipar.randn(BATCH, WIDTH)
    activation = BATCH * WIDTH * 4  # bytes of one float32 (256 x 256) activation

    def loss_of(k: int) -> minipar.Tensor:
        out = model(x) if k == 1 else checkpoint_sequential(model, k, x)
        return (out * out).mean()

    def step(k: int) -> None:
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated between steps
        loss_of(k).backward()

    print(f"{n} blocks of Linear({WIDTH}, {WIDTH}) + Tanh, batch {BATCH}, float32; "
          f"one activation = {activation / 1024:.0f} KiB, parameters = "
          f"{sum(p.array.nbytes for p in model.parameters()) / MiB:.1f} MiB\n")
    segment_counts = sorted({2 ** i for i in range(int(math.log2(n)) + 1)} | {round(math.sqrt(n))})
    measured = {}
    tracemalloc.start()  # traced from here, so the gradients' reallocations are seen both ways
    for k in tqdm(segment_counts, desc="memory per k", unit="k"):
        stored = memory.graph_bytes(loss_of(k))
        step(k)  # warm-up
        with memory.track() as region:
            step(k)
        measured[k] = (stored, region.peak_bytes)
    tracemalloc.stop()
    times: dict[int, list[float]] = {k: [] for k in segment_counts}
    for _ in tqdm(range(3), desc="timing rounds", unit="round"):  # every k once per round: fair
        for k in segment_counts:
            start = time.process_time()  # CPU seconds: robust to other jobs on a shared machine
            step(k)
            times[k].append(time.process_time() - start)
    rows = [(k, *measured[k], statistics.median(times[k])) for k in segment_counts]

    plain_time, plain_peak = rows[0][3], rows[0][2]
    print(f"{'k':>4} {'stored activations':>20} {'formula':>9} {'step peak':>10} {'vs plain':>9} "
          f"{'step CPU':>10} {'vs plain':>9} {'predicted':>10}")
    for k, stored, peak, seconds in rows:
        formula = stored_formula(n, k)
        predicted = 1 + (k - 1) * (n // k) / n / 3 if k > 1 else 1.0
        print(f"{k:>4} {stored / MiB:>11.2f} MiB ({stored // activation:>3}) {formula:>9} "
              f"{peak / MiB:>6.1f} MiB {plain_peak / peak:>8.2f}x {seconds * 1e3:>7.0f} ms "
              f"{seconds / plain_time:>8.2f}x {predicted:>9.2f}x")
    best = min(rows[1:], key=lambda row: row[2])
    print(f"\nsmallest step peak at k = {best[0]} (sqrt(n) = {math.sqrt(n):.1f}); stored activations "
          f"2 sqrt(n) - 1 = {2 * math.sqrt(n) - 1:.0f} at k = sqrt(n) against n = {n} without checkpointing")
    print("the step peak is stored activations + the segment being recomputed + backward's temporary "
          "gradients, so it falls less than the stored count")

    k = round(math.sqrt(n))
    grads = []
    for segments in (1, k):
        model.zero_grad()
        loss_of(segments).backward()
        grads.append([p.grad.array.copy() for p in model.parameters()])
    worst = max(float(np.abs(a - b).max()) for a, b in zip(*grads))
    print(f"\nmax |gradient difference| plain vs k = {k} checkpointed: {worst:.1e} (the same float32 ops, "
          "recomputed)")


if __name__ == "__main__":
    main()
