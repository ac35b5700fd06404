"""Hybrid parallelism: data x pipeline parallel on one mesh, equal to one process.

    mpiexec -n 4 python -m mpi4py lessons/08_hybrid.py

Four ranks form a ``ProcessMesh(dp=2, pp=2)``: two data-parallel replicas,
each a two-stage pipeline. This lesson

1. prints the mesh: every rank's coordinates and the world ranks in its
   dp and pp groups (tp varies fastest, then pp, then dp);
2. trains an MLP on a regression task: each replica takes its half of every
   global batch and runs a 1F1B pipeline over ``mesh.pp``; then each stage
   averages its gradients with its twin in the other replica over ``mesh.dp``
   (``average_gradients``: one flat all-reduce); then SGD;
3. trains the same model on one process with the full batches and prints the
   largest difference in losses and parameters (equal up to rounding), and the
   bytes each rank sent per step, next to what the pipeline and the gradient
   all-reduce predict.

Only rank 0 prints. (4 ranks on fewer cores: add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.)
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn
from minipar.comm import allgather, allreduce, world
from minipar.nn import functional as F
from minipar.optim import SGD
from minipar.parallel import PipelineParallel, ProcessMesh, average_gradients

comm = world()
if comm.size != 4:
    raise SystemExit(f"this lesson runs on 4 ranks (dp=2 x pp=2), got {comm.size}: mpiexec -n 4 ...")
mesh = ProcessMesh(comm, dp=2, pp=2)
STEPS, BATCH, MICROBATCHES, WIDTH = 40, 32, 4, 32


def say(*args: object) -> None:
    if comm.rank == 0:
        print(*args, flush=True)


def build() -> nn.Sequential:
    minipar.manual_seed(0)
    d = np.float64
    return nn.Sequential(nn.Linear(8, WIDTH, dtype=d), nn.Tanh(), nn.Linear(WIDTH, WIDTH, dtype=d), nn.Tanh(),
                         nn.Linear(WIDTH, WIDTH, dtype=d), nn.Tanh(), nn.Linear(WIDTH, 1, dtype=d))


# 1. The mesh
facts = np.array([*mesh.coords, *mesh.dp_group, *mesh.pp_group])
table = allgather(comm, facts).reshape(comm.size, -1)
say("1. ProcessMesh(dp=2, pp=2): rank = (dp_i * pp + pp_i) * tp + tp_i")
say("   world rank  dp_i pp_i tp_i   dp group   pp group")
for world_rank, row in enumerate(table):
    dp_group, pp_group = [int(r) for r in row[3:5]], [int(r) for r in row[5:7]]
    say(f"   {world_rank:>10} {row[0]:>5} {row[1]:>4} {row[2]:>4}   {dp_group!s:>8}   {pp_group!s:>8}")

# 2. Train dp x pp, and the same model on one process beside it
rng = np.random.default_rng(0)
xs = rng.normal(size=(STEPS, BATCH, 8))
direction = rng.normal(size=(8, 1)) / np.sqrt(8)
ys = np.tanh(2 * xs @ direction)  # (steps, batch, 1): a smooth target the MLP can learn
pipe = PipelineParallel(build(), mesh.pp, MICROBATCHES, schedule="1f1b")
optimizer = SGD(pipe.stage_module.parameters(), lr=0.1)
reference = build()
reference_optimizer = SGD(reference.parameters(), lr=0.1)
half = BATCH // 2
losses, reference_losses, sent = [], [], []
for x, y in tqdm(list(zip(xs, ys)), desc="dp x pp training", disable=comm.rank != 0):
    mine = slice(mesh.dp_rank * half, (mesh.dp_rank + 1) * half)  # this replica's half of the batch
    before = mesh.pp.bytes_sent + mesh.dp.bytes_sent
    loss = pipe.train_step(x[mine], y[mine], F.mse_loss)
    average_gradients(pipe.stage_module.parameters(), mesh.dp)
    optimizer.step()
    optimizer.zero_grad()
    sent.append(mesh.pp.bytes_sent + mesh.dp.bytes_sent - before)
    losses.append(float(allreduce(mesh.dp, np.array([loss]), op="mean")[0]))  # the global batch's loss

    reference_loss = F.mse_loss(reference(minipar.tensor(x)), minipar.tensor(y))
    reference_loss.backward()
    reference_optimizer.step()
    reference_optimizer.zero_grad()
    reference_losses.append(reference_loss.item())

# 3. Compare
worst = max(abs(a - b) for a, b in zip(losses, reference_losses))
for got, want in zip(pipe.stage_module.parameters(),
                     [q for i in pipe.layer_range for q in reference[i].parameters()]):
    worst = max(worst, float(np.abs(got.array - want.array).max()))
worst = float(allreduce(comm, np.array([worst]), op="max")[0])
say(f"\n2. loss {losses[0]:.4f} -> {losses[-1]:.4f} over {STEPS} steps (one process: "
    f"{reference_losses[0]:.4f} -> {reference_losses[-1]:.4f})")
say(f"3. largest difference from one process (losses and parameters, all ranks): {worst:.1e}")

# Bytes per step on rank 0 (stage 0 of replica 0), next to the prediction:
# activations forward: m headers-and-payloads of (batch/dp/m, WIDTH) float64, one header per step;
# gradient all-reduce over dp=2: 2(p-1)/p * N * 8 with p=2 -> N*8 for N = stage 0's parameters.
stage_params = sum(q.array.size for q in pipe.stage_module.parameters())
activations = MICROBATCHES * (half // MICROBATCHES) * WIDTH * 8 + (8 + 2) * 8
say(f"   rank 0 sent {int(np.median(sent)):,} bytes per step; predicted {activations + stage_params * 8:,} = "
    f"activations {activations:,} (incl. a {(8 + 2) * 8}-byte shape header) + gradient all-reduce "
    f"{stage_params * 8:,} (2(p-1)/p*N*8, p=2, N={stage_params:,})")
