"""The profiler: where a training step's time goes, op by op, and what watching costs.

    python lessons/16_profiler.py
    python -m minipar.bottleneck lessons/16_profiler.py     # the same, plus Python's own profile

1. Profiles three training steps of an MLP on the digits with
   ``minipar.profiler.profile`` and prints PyTorch's table: every autograd
   Function's forward (``LinearFunction``) and backward (``LinearFunctionBackward``),
   calls, self and total time, and the bytes each produced (``profile_memory``).
2. Profiles a DDP step on two thread ranks (``run_local``): the collectives appear
   in the same table, read from the communicator's event stream.
3. Measures what the profiler costs: the same step with it off (one flag test per
   op) and on (two clock reads and a record per op), median of interleaved runs.
4. Writes the Chrome trace (``prof.export_chrome_trace``): open it in Perfetto.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

import minipar
from minipar import nn, optim, profiler
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel
from minipar.utils.data import load_digits

digits = load_digits()
x_all, y_all = digits.x_train[:256], digits.y_train[:256]


def mlp() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def train(model: nn.Module, opt: optim.Optimizer, steps: int, x: np.ndarray, y: np.ndarray) -> None:
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(minipar.tensor(x)), y).backward()
        opt.step()


# ----- 1. one process -------------------------------------------------------------------------------
model = mlp()
opt = optim.SGD(model.parameters(), lr=0.1)
train(model, opt, 1, x_all, y_all)  # warm-up: BLAS threads, first allocations
with profiler.profile(profile_memory=True) as prof:
    with profiler.record_function("three training steps"):
        train(model, opt, 3, x_all, y_all)
print("1. three steps of a 64-512-512-10 MLP, batch 256 (float32):\n")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

# ----- 2. DDP on two thread ranks: collectives in the same table -----------------------------------
def ddp_step(comm: object) -> None:
    ddp = DistributedDataParallel(mlp(), comm=comm, overlap=False)
    ddp_opt = optim.SGD(ddp.parameters(), lr=0.1)
    half = slice(comm.rank * 128, (comm.rank + 1) * 128)
    train(ddp, ddp_opt, 2, x_all[half], y_all[half])


with profiler.profile() as ddp_prof:
    run_local(ddp_step, 2)
print("\n2. two DDP steps on 2 thread ranks (both ranks' events):\n")
print(ddp_prof.key_averages().table(sort_by="cpu_time_total", row_limit=8))

# ----- 3. what the profiler costs ---------------------------------------------------------------------
seconds: dict[str, list[float]] = {"off": [], "on": []}
with threadpool_limits(1):  # one BLAS thread: steadier timings on a shared machine
    for _ in range(40):
        for mode in random.sample(["off", "on"], 2):  # interleaved, in a random order
            start = time.perf_counter()
            if mode == "on":
                with profiler.profile():
                    train(model, opt, 1, x_all, y_all)
            else:
                train(model, opt, 1, x_all, y_all)
            seconds[mode].append(time.perf_counter() - start)
off, on = (statistics.median(seconds[m]) for m in ("off", "on"))
spread = np.percentile(seconds["off"], 75) - np.percentile(seconds["off"], 25)
ops = sum(a.count for a in prof.key_averages() if a.key != "three training steps") // 3
print(f"\n3. one step: {1e3 * off:.2f} ms unprofiled, {1e3 * on:.2f} ms profiled "
      f"({100 * (on - off) / off:+.1f}%, {ops} recorded ops a step); medians of 40 interleaved "
      f"steps, the unprofiled steps' interquartile range {1e3 * spread:.2f} ms")

# ----- 4. the timeline -----------------------------------------------------------------------------
path = os.path.join(tempfile.mkdtemp(prefix="minipar-profile-"), "step.json")
prof.export_chrome_trace(path)
print(f"\n4. Chrome trace of part 1: {path} (open it at ui.perfetto.dev)")
