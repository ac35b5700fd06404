"""Tensor parallelism: a Megatron MLP block split over ranks.

    mpiexec -n 2 python -m mpi4py lessons/07_tensor_parallel.py

Megatron-LM (Shoeybi et al. 2019) splits an MLP block Y = relu(X A^T) B^T:
A by rows (``ColumnParallelLinear``: each rank computes its own slice of the
hidden layer, no message) and B by columns (``RowParallelLinear``: each rank
makes a partial Y, and one all-reduce sums them). Backward mirrors it with one
all-reduce of dX. This lesson

1. shards a dense block's weights (``from_dense``) and prints what each rank holds;
2. counts the messages and bytes of one forward and one backward, next to the
   theory: one ring all-reduce each, 2(p-1) messages and 2(p-1)/p * N * 8 bytes
   per rank for an (batch, d) float64 activation of N elements;
3. checks the output and every gradient slice against the dense block;
4. trains both for a few SGD steps and prints the largest parameter difference.

Runs at any p that divides the sizes below (2 or 4). Only rank 0 prints.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn
from minipar.comm import allreduce, world
from minipar.optim import SGD
from minipar.parallel import ColumnParallelLinear, RowParallelLinear

comm = world()
rank, p = comm.rank, comm.size
D, HIDDEN, BATCH = 64, 256, 32


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def worst_over_ranks(value: float) -> float:
    return float(allreduce(comm, np.array([value]), op="max")[0])


minipar.manual_seed(0)  # the same dense block on every rank: the reference
dense = nn.Sequential(nn.Linear(D, HIDDEN, dtype=np.float64), nn.ReLU(),
                      nn.Linear(HIDDEN, D, dtype=np.float64))
block = nn.Sequential(ColumnParallelLinear.from_dense(dense[0], comm), nn.ReLU(),
                      RowParallelLinear.from_dense(dense[2], comm))
rows = np.array_split(np.arange(HIDDEN), p)[rank]

# 1. What each rank holds
say(f"1. MLP {D} -> {HIDDEN} -> {D} over {p} ranks; rank 0 holds")
say(f"   column-parallel A: weight {block[0].weight.shape} of {dense[0].weight.shape} "
    f"(rows {rows[0]}..{rows[-1]}), bias {block[0].bias.shape}")
say(f"   row-parallel    B: weight {block[2].weight.shape} of {dense[2].weight.shape} "
    f"(columns {rows[0]}..{rows[-1]}), bias {block[2].bias.shape} (whole, added once after the sum)")
held = sum(q.array.size for q in block.parameters())
total = sum(q.array.size for q in dense.parameters())
say(f"   parameters on this rank {held:,} of {total:,} ({held / total:.2f}; theory about 1/p = {1 / p:.2f})")

# 2. Count the communication of one forward and one backward
x_array = np.random.default_rng(0).normal(size=(BATCH, D))
x = minipar.tensor(x_array, requires_grad=True)  # as inside a deeper model: dX is needed
comm.reset_counters()
y = block(x)
forward_messages, forward_bytes = comm.messages_sent, comm.bytes_sent
(y * y).sum().backward()
backward_messages = comm.messages_sent - forward_messages
backward_bytes = comm.bytes_sent - forward_bytes
N = BATCH * D
say(f"\n2. forward:  {forward_messages} messages, {forward_bytes:,} bytes sent by rank 0   theory: one ring "
    f"all-reduce of Y = 2(p-1) = {2 * (p - 1)} messages, 2(p-1)/p*N*8 = {2 * (p - 1) * N * 8 // p:,} bytes")
say(f"   backward: {backward_messages} messages, {backward_bytes:,} bytes sent by rank 0   theory: one ring "
    f"all-reduce of dX = {2 * (p - 1)} messages, {2 * (p - 1) * N * 8 // p:,} bytes")
say(f"   => all-reduces per block: forward {forward_messages // (2 * (p - 1))}, "
    f"backward {backward_messages // (2 * (p - 1))}")

# 3. Equal to the dense block, slice for slice
x_dense = minipar.tensor(x_array, requires_grad=True)
y_dense = dense(x_dense)
(y_dense * y_dense).sum().backward()
differences = {
    "output Y": np.abs(y.array - y_dense.array).max(),
    "dX": np.abs(x.grad.array - x_dense.grad.array).max(),
    "dA (rows)": np.abs(block[0].weight.grad.array - dense[0].weight.grad.array[rows]).max(),
    "db_A (rows)": np.abs(block[0].bias.grad.array - dense[0].bias.grad.array[rows]).max(),
    "dB (columns)": np.abs(block[2].weight.grad.array - dense[2].weight.grad.array[:, rows]).max(),
    "db_B": np.abs(block[2].bias.grad.array - dense[2].bias.grad.array).max(),
}
say("\n3. largest difference from the dense block, over all ranks:")
for name, value in differences.items():
    worst = worst_over_ranks(float(value))
    say(f"   {name:<13} {worst:.1e}   equal within 1e-10: {worst < 1e-10}")

# 4. Train both
block.zero_grad()
dense.zero_grad()
optimizer, dense_optimizer = SGD(block.parameters(), lr=0.01), SGD(dense.parameters(), lr=0.01)
data = np.random.default_rng(1)
for _ in tqdm(range(20), desc="training", disable=rank != 0):
    xb = minipar.tensor(data.normal(size=(BATCH, D)))
    target = minipar.tensor(np.sin(xb.array))
    for model, opt in ((block, optimizer), (dense, dense_optimizer)):
        loss = ((model(xb) - target) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
worst = worst_over_ranks(float(max(np.abs(block[0].weight.array - dense[0].weight.array[rows]).max(),
                                   np.abs(block[2].weight.array - dense[2].weight.array[:, rows]).max())))
say(f"\n4. after 20 SGD steps the largest weight difference from dense training is {worst:.1e}")
