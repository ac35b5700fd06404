"""ZeRO stage 1: each rank keeps 1/p of Adam's state, sends what DDP sends, and trains identically.

    mpiexec -n 4 python -m mpi4py lessons/05_zero.py

(On a machine with fewer cores than ranks add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.)

1. Splits the 4 ranks into groups of p = 1, 2 and 4 (``comm.split``) and, in
   each group, measures with ``tracemalloc`` the bytes the optimizer holds on a
   rank after its first step: plain Adam on one rank, ``ZeroOptimizer(Adam)``
   sharded over p ranks. Printed beside the ZeRO paper's formula. Which form
   applies here: Adam in fp32 keeps ``exp_avg`` and ``exp_avg_sq``, 2 x 4 = 8
   bytes per parameter, so the state is 8Ψ bytes, sharded to 8Ψ/p. The paper's
   12Ψ/N_d (K = 12) is for mixed precision, where the fp32 master weights (4Ψ)
   count as optimizer state too; minipar's fp32 training has no separate master
   copy, so K = 8 here. The 12Ψ/p column is shown for comparison only.
2. Counts the bytes one step sends: reduce-scatter + all-gather = 2(p-1)/p * Ψ * 4,
   the same as DDP's ring all-reduce.
3. Trains the digits on 4 ranks with ZeroOptimizer(Adam) and checks the weights
   against plain Adam on one process over the whole global batch.

Only rank 0 prints.
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn, optim
from minipar.comm import world
from minipar.nn import functional as F
from minipar.parallel import ZeroOptimizer
from minipar.utils.data import load_digits

comm = world()
rank, size = comm.rank, comm.size
rng = np.random.default_rng(rank)


def say(*args: object) -> None:
    if rank == 0:
        print(*args, flush=True)


def mlp(dtype: type = np.float32) -> nn.Sequential:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 512, dtype=dtype), nn.ReLU(), nn.Linear(512, 512, dtype=dtype),
                         nn.ReLU(), nn.Linear(512, 10, dtype=dtype))


def optimizer_bytes_after_first_step(make_optimizer: object, model: nn.Module) -> int:
    """Bytes still allocated from minipar/optim/ once the first step is over: the optimizer's state."""
    x = minipar.tensor(rng.normal(size=(32, 64)).astype(np.float32))
    opt = make_optimizer(model)  # type: ignore[operator]
    F.cross_entropy(model(x), rng.integers(0, 10, 32)).backward()
    tracemalloc.start(10)  # 10 frames: the allocation happens inside numpy, called from optim/
    opt.step()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    optim_files = os.path.join(os.path.dirname(optim.__file__), "*")  # every file of minipar/optim/
    mine = snapshot.filter_traces([tracemalloc.Filter(True, optim_files, all_frames=True)])
    return sum(stat.size for stat in mine.statistics("filename"))


# ----- 1 and 2. memory and bytes per rank, for groups of p = 1, 2, 4 ---------------------------------
psi = sum(param.array.size for param in mlp().parameters())
plain = optimizer_bytes_after_first_step(lambda model: optim.Adam(model.parameters()), mlp())
say(f"model 64-512-512-10 in fp32: Ψ = {psi:,} parameters; plain Adam holds {plain:,} bytes of state "
    f"per rank (8Ψ = {8 * psi:,})\n")
say(f"{'p':>2} {'ZeRO-1 state/rank':>18} {'8Ψ/p (fp32, applies)':>21} {'/ (plain/p)':>12} "
    f"{'12Ψ/p (paper, mixed prec.)':>27} {'bytes sent/step':>16} {'2(p-1)/p*4Ψ':>12}")
for p in (1, 2, 4):
    if p > size:
        continue
    group = comm.split(color=rank // p if rank < (size // p) * p else None)
    if group is None:
        continue
    model = mlp()
    sharded = optimizer_bytes_after_first_step(
        lambda m, g=group: ZeroOptimizer(optim.Adam, m.parameters(), g), model)
    group.reset_counters()
    zero = ZeroOptimizer(optim.Adam, model.parameters(), group)
    group.reset_counters()  # count one step, not the broadcast at construction
    F.cross_entropy(model(minipar.tensor(rng.normal(size=(32, 64)).astype(np.float32))),
                    rng.integers(0, 10, 32)).backward()
    zero.step()
    if rank == 0:
        formula, ratio = 8 * psi / p, sharded / (plain / p)
        print(f"{p:>2} {sharded:>18,} {formula:>21,.0f} {ratio:>12.4f} {12 * psi / p:>27,.0f} "
              f"{group.bytes_sent:>16,} {2 * (p - 1) / p * 4 * psi:>12,.0f}")
say("(state: Adam's arrays plus a few hundred bytes of Python objects; bytes sent equal the formula "
    "when p divides Ψ, else they differ by the array_split rounding of the chunks)")

# ----- 3. training equals plain Adam on one process ----------------------------------------------------
digits = load_digits(dtype=np.float64)
BATCH_PER_RANK, STEPS = 16, 40
model = mlp(np.float64)
opt = ZeroOptimizer(optim.Adam, model.parameters(), comm, lr=1e-3)
alone = mlp(np.float64)
alone_opt = optim.Adam(alone.parameters(), lr=1e-3)
for step in tqdm(range(STEPS), desc="ZeRO-1 training", disable=rank != 0):
    start = step * BATCH_PER_RANK * size % (len(digits.y_train) - BATCH_PER_RANK * size)
    rows = np.arange(start, start + BATCH_PER_RANK * size)  # the global batch of this step
    mine = np.array_split(rows, size)[rank]
    loss = F.cross_entropy(model(minipar.tensor(digits.x_train[mine])), digits.y_train[mine])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 0:
        whole = F.cross_entropy(alone(minipar.tensor(digits.x_train[rows])), digits.y_train[rows])
        alone_opt.zero_grad()
        whole.backward()
        alone_opt.step()
if rank == 0:
    gap = max(np.abs(a.array - b.array).max() for a, b in zip(model.parameters(), alone.parameters()))
    lo, hi = opt.shard_bounds
    print(f"\nafter {STEPS} steps on {size} ranks: max |weights - plain Adam on 1 process| = {gap:.1e}; "
          f"rank 0 owns elements [{lo:,}, {hi:,}) of {opt.total_length:,}")
