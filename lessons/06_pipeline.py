"""Pipeline parallelism: naive, GPipe and 1F1B, with the bubble measured.

    mpiexec -n 2 python -m mpi4py lessons/06_pipeline.py

A Sequential is cut into p stages, one per rank; activations travel forward
and their gradients back (send/recv written as autograd Functions). This lesson

1. trains a small float64 model with the 1F1B schedule and checks, every step,
   that the loss and the stage's parameters equal one-process training;
2. runs the three schedules on equal-cost stages (Linear(512,512) + Tanh
   blocks) and prints, per schedule, each stage's timeline in characters
   (F forward, B backward, . idle), the bubble measured from the timeline next
   to the formula -- (p-1)/p for naive, (p-1)/(m+p-1) for GPipe and 1F1B -- and
   the most micro-batches each stage held at once (GPipe m, 1F1B p - stage).

How the bubble is measured: barrier, train_step, barrier; W = time between
the barriers; busy = the stage's forward/backward compute (message waits
excluded); bubble = mean over stages of 1 - busy / W.

Runs at any p >= 2 (on a machine with at least p cores for honest timings;
with more ranks than cores add MPIR_CVAR_ENABLE_HEAVY_YIELD=1). Only rank 0 prints.
"""

from __future__ import annotations

import statistics

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn
from minipar.comm import allgather, allreduce, message_log, world
from minipar.nn import functional as F
from minipar.optim import SGD
from minipar.parallel import PipelineParallel
from minipar.parallel.pipeline.schedules import bubble_formula, one_f_one_b_phases, peak_stash_formula

comm = world()
rank, p = comm.rank, comm.size


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def mlp(blocks: int, width: int, dtype: type = np.float32) -> nn.Sequential:
    minipar.manual_seed(0)  # the same full model on every rank; each keeps its stage
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width, dtype=dtype), nn.Tanh()]
    return nn.Sequential(*layers)


# 1. Equal to one process ---------------------------------------------------------------------
STEPS = 20
rng = np.random.default_rng(0)
xs, ys = rng.normal(size=(STEPS, 16, 16)), rng.normal(size=(STEPS, 16, 16))
pipe = PipelineParallel(mlp(2 * p, 16, np.float64), comm, microbatches=4, schedule="1f1b")
reference = mlp(2 * p, 16, np.float64)  # one process's copy, trained on the full batch here
optimizer = SGD(pipe.stage_module.parameters(), lr=0.05)
reference_optimizer = SGD(reference.parameters(), lr=0.05)
worst = 0.0
for x, y in tqdm(list(zip(xs, ys)), desc="1F1B training", disable=rank != 0):
    loss = pipe.train_step(x, y, F.mse_loss)
    optimizer.step()
    optimizer.zero_grad()
    reference_loss = F.mse_loss(reference(minipar.tensor(x)), minipar.tensor(y))
    reference_loss.backward()
    reference_optimizer.step()
    reference_optimizer.zero_grad()
    worst = max(worst, abs(loss - reference_loss.item()))
    for mine, theirs in zip(pipe.stage_module.parameters(),
                            [q for i in pipe.layer_range for q in reference[i].parameters()]):
        worst = max(worst, float(np.abs(mine.array - theirs.array).max()))
worst = allreduce(comm, np.array([worst]), op="max")[0]
say(f"1. {p} stages, layers per stage {pipe.balance}; after {STEPS} SGD steps the largest difference "
    f"from one process (losses and parameters) is {worst:.1e}")

# 1b. What crosses each stage boundary: one step's messages, from the message log ----------------
with message_log(comm) as log:
    pipe.train_step(xs[0], ys[0], F.mse_loss)
pipe.stage_module.zero_grad()
mine = [m for m in log if m.nbytes >= 16 * 16 * 8 // 4]  # the activations and gradients, not headers
sent = {}
for message in mine:
    sent.setdefault(message.dest, []).append(message.nbytes)
rows_per_mb = 16 // 4
say("   one step, rank 0 (stage 0) sent: " + ", ".join(
    f"{len(sizes)} messages of {sizes[0]:,} B to rank {dest}" for dest, sizes in sorted(sent.items()))
    + f"  (formula: m = 4 activations of {rows_per_mb} x 16 float64 = {rows_per_mb * 16 * 8:,} B each "
    f"to the next stage; the gradients come back the other way)")

# 2. Bubble and stash, per schedule ------------------------------------------------------------
M, ROWS, WIDTH = 8, 64, 512
model = mlp(4 * p, WIDTH)  # 4 blocks per stage, all stages the same cost
x_big = rng.normal(size=(M * ROWS, WIDTH)).astype(np.float32)
y_big = rng.normal(size=(M * ROWS, WIDTH)).astype(np.float32)


def gather_compute_spans(stats) -> list[np.ndarray]:
    """Every stage's (kind, start, end) compute spans on rank 0 (kind 0 forward, 1 backward)."""
    mine = np.array([[0.0 if kind == "forward" else 1.0, start, end]
                     for kind, _, start, end in stats.timeline if kind in ("forward", "backward")])
    counts = allgather(comm, np.array([len(mine)]))
    width = int(counts.max())
    padded = np.zeros((width, 3))
    padded[:len(mine)] = mine
    everything = allgather(comm, padded.reshape(-1)).reshape(p, width, 3)
    return [everything[s, :counts[s]] for s in range(p)]


def text_gantt(spans: list[np.ndarray], start: float, end: float, columns: int = 64) -> list[str]:
    """One row per stage: each column shows what the stage did most of that time slice."""
    rows = []
    edges = np.linspace(start, end, columns + 1)
    for stage_spans in spans:
        row = ""
        for lo, hi in zip(edges, edges[1:]):
            cover = {0.0: 0.0, 1.0: 0.0}
            for kind, a, b in stage_spans:
                cover[kind] += max(0.0, min(b, hi) - max(a, lo))
            kind = max(cover, key=cover.get)
            row += "." if cover[kind] < (hi - lo) / 2 else "FB"[int(kind)]
        rows.append(row)
    return rows


say(f"\n2. {4 * p} blocks Linear({WIDTH},{WIDTH}) + Tanh, float32, {p} stages, m = {M} micro-batches "
    f"of {ROWS} rows (naive: the whole batch of {M * ROWS} at once)")
say("   time runs left to right, one row per stage: F forward, B backward, . idle\n")
for schedule in ("naive", "gpipe", "1f1b"):
    pipe = PipelineParallel(model, comm, M, schedule=schedule)
    bubbles, steps = [], []
    for repeat in range(4):  # the first step warms up and is not counted
        pipe.train_step(x_big, y_big, F.mse_loss, synchronize=True)
        pipe.stage_module.zero_grad()
        if repeat:
            bubbles.append(allreduce(comm, np.array([pipe.stats.bubble]), op="mean")[0])
            steps.append(pipe.stats.step_seconds)
    spans = gather_compute_spans(pipe.stats)
    starts = allgather(comm, np.array([pipe.stats.step_start]))
    peaks = [int(n) for n in allgather(comm, np.array([pipe.stats.peak_stashed]))]
    m = 1 if schedule == "naive" else M
    formula = bubble_formula(p, m)
    say(f"   {schedule}: step {1e3 * statistics.median(steps):.0f} ms")
    for stage, row in enumerate(text_gantt(spans, starts.min(), starts.min() + pipe.stats.step_seconds)):
        say(f"     stage {stage} |{row}|")
    say(f"     bubble measured {statistics.median(bubbles):.3f}   formula (p-1)/(m+p-1) = "
        f"({p}-1)/({m}+{p}-1) = {formula:.3f}")
    say(f"     peak micro-batches held per stage {peaks}   formula "
        f"{[peak_stash_formula(schedule, s, p, m) for s in range(p)]}\n")
    if schedule == "1f1b":  # where the stash limit comes from: the three phases of each stage
        say("     1F1B's phases (what each stage runs, in order):")
        for stage in range(p):
            phases = one_f_one_b_phases(stage, p, M)
            shown = "   ".join(f"{name} {' '.join(f'{kind[0].upper()}{i}' for kind, i in actions) or '-'}"
                               for name, actions in phases.items())
            say(f"     stage {stage}: {shown}")
        say("     warm-up p-s-1 forwards, then one forward per backward, then the backwards still owed\n")
say("GPipe and 1F1B share the bubble; 1F1B holds at most p - stage micro-batches instead of m.")
