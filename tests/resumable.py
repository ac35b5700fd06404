"""Training loops that snapshot every N steps and resume -- used by test_fault_tolerance.py,
in threads (run_local) and under mpiexec (``python -m mpi4py tests/resumable.py ...``).

Every loop calls ``fault.maybe_fail(step, comm)`` at the top of each step, so
``MINIPAR_FAULT=rank:step`` crashes it there, and returns its final parameters.
Same-layout resumes must reproduce an uninterrupted run bit for bit, so
everything random is in the snapshot: each rank's generator (dropout) and its
sampler's epoch and position (shuffling).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

import minipar
from minipar import nn, optim
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel, PipelineParallel, ZeroOptimizer
from minipar.parallel.zero import reshard_state_dicts
from minipar.snapshot import fault
from minipar.snapshot.sharded import load_distributed, load_distributed_all, save_distributed
from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset

_rng = np.random.default_rng(7)
X = _rng.standard_normal((48, 8))  # float64 features
Y = (np.arange(48) * 7) % 4  # int64 classes 0..3
ONE_REPLICA = types.SimpleNamespace(rank=0, size=1)  # a sampler every pipeline stage shares


def make_model(dropout: float = 0.2, depth: int = 1) -> nn.Sequential:
    """The same float64 weights on every rank (seeded), whatever the rank's own seed later."""
    minipar.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout)]
    for _ in range(depth - 1):
        layers += [nn.Linear(16, 16), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(16, 4)).double()


def _epochs(loader: DataLoader, sampler: Any, step: int, total: int) -> Any:
    """Batches from the sampler's current epoch and position on, then the next epochs."""
    while step < total:
        for batch in loader:
            yield batch
            step += 1
            if step == total:
                return
        sampler.set_epoch(sampler.epoch + 1)


def train_ddp(comm: Any, total: int, directory: str | None = None, every: int = 0,
              resume: bool = False) -> list[np.ndarray]:
    """DDP + Adam + dropout + shuffling; rank 0 alone writes each snapshot (gather=True)."""
    model = make_model()
    minipar.manual_seed(1000 + comm.rank)  # every rank its own dropout masks
    ddp = DistributedDataParallel(model, comm=comm)
    opt = optim.Adam(ddp.parameters(), lr=0.01)
    sampler = DistributedSampler(len(Y), comm=comm, shuffle=True, seed=5)
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, sampler=sampler)
    step = 0
    if resume:
        shared, local = load_distributed(directory, comm)
        ddp.load_state_dict(shared["model"])
        opt.load_state_dict(shared["optimizer"])
        step = shared["step"]
        sampler.load_state_dict(local["sampler"])
        minipar.set_rng_state(local["rng"])
    for x, y in _epochs(loader, sampler, step, total):
        fault.maybe_fail(step, comm)
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        step += 1
        if every and step % every == 0:
            save_distributed(directory, comm, gather=True,
                             shared={"model": ddp.state_dict(), "optimizer": opt.state_dict(), "step": step},
                             local={"rng": minipar.get_rng_state(), "sampler": sampler.state_dict()})
    return [p.array.copy() for p in model.parameters()]


def train_zero(comm: Any, total: int, directory: str | None = None, every: int = 0,
               resume: bool = False) -> list[np.ndarray]:
    """ZeRO-1 Adam + dropout + shuffling; every rank writes its optimizer shard (gather=False)."""
    model = make_model()
    minipar.manual_seed(1000 + comm.rank)
    zero = ZeroOptimizer(optim.Adam, model.parameters(), comm, lr=0.01)
    sampler = DistributedSampler(len(Y), comm=comm, shuffle=True, seed=5)
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, sampler=sampler)
    step = 0
    if resume:
        shared, local = load_distributed(directory, comm)
        model.load_state_dict(shared["model"])
        zero.load_state_dict(local["optimizer"])
        step = shared["step"]
        sampler.load_state_dict(local["sampler"])
        minipar.set_rng_state(local["rng"])
    for x, y in _epochs(loader, sampler, step, total):
        fault.maybe_fail(step, comm)
        zero.zero_grad()
        F.cross_entropy(model(x), y).backward()
        zero.step()
        step += 1
        if every and step % every == 0:
            save_distributed(directory, comm, shared={"model": model.state_dict(), "step": step},
                             local={"optimizer": zero.state_dict(), "rng": minipar.get_rng_state(),
                                    "sampler": sampler.state_dict()})
    return [p.array.copy() for p in model.parameters()]


def train_pipeline(comm: Any, total: int, directory: str | None = None, every: int = 0,
                   resume: bool = False) -> list[np.ndarray]:
    """1F1B pipeline with dropout in a stage; every stage writes its layers and optimizer."""
    model = make_model(depth=2)
    minipar.manual_seed(1000 + comm.rank)
    pipe = PipelineParallel(model, comm, microbatches=2)
    opt = optim.Adam(pipe.stage_module.parameters(), lr=0.01)
    sampler = DistributedSampler(len(Y), comm=ONE_REPLICA, shuffle=True, seed=5)  # same batch everywhere
    loader = DataLoader(TensorDataset(X, Y), batch_size=8, sampler=sampler)
    step = 0
    if resume:
        shared, local = load_distributed(directory, comm)
        pipe.stage_module.load_state_dict(local["stage"])
        opt.load_state_dict(local["optimizer"])
        step = shared["step"]
        sampler.load_state_dict(local["sampler"])
        minipar.set_rng_state(local["rng"])
    for x, y in _epochs(loader, sampler, step, total):
        fault.maybe_fail(step, comm)
        pipe.train_step(x, y, F.cross_entropy)
        opt.step()
        opt.zero_grad()
        step += 1
        if every and step % every == 0:
            save_distributed(directory, comm, shared={"step": step},
                             local={"stage": pipe.stage_module.state_dict(), "optimizer": opt.state_dict(),
                                    "rng": minipar.get_rng_state(), "sampler": sampler.state_dict()})
    return [p.array.copy() for p in pipe.stage_module.parameters()]


# ----- world-size independent training: for resuming at another world size ------------------------
def global_rows(step: int, world_size: int, rank: int) -> np.ndarray:
    """Step ``step``'s 12 rows of the data, this rank's 12/p of them (p divides 12)."""
    rows = np.random.default_rng(step).permutation(len(Y))[:12]
    return np.array_split(rows, world_size)[rank]


def train_resharded(comm: Any, kind: str, start: int, stop: int, load_from: str | None = None,
                    save_to: str | None = None) -> list[np.ndarray]:
    """Steps [start, stop) of "single" (one process, Adam), "ddp" or "zero" training, no dropout.

    ``load_from``: a snapshot of any world size; ZeRO's optimizer shards are re-split
    for this one. The gradient is the full 12-row batch's at every world size.
    """
    model = make_model(dropout=0.0)
    if kind == "zero":
        opt: Any = ZeroOptimizer(optim.Adam, model.parameters(), comm, lr=0.01)
        forward = model
    else:
        forward = DistributedDataParallel(model, comm=comm) if kind == "ddp" else model
        opt = optim.Adam(model.parameters(), lr=0.01)
    if load_from is not None:
        shared, locals_ = load_distributed_all(load_from)
        model.load_state_dict(shared["model"])
        if kind == "zero":
            optimizer_shards = [local["optimizer"] for local in locals_]
            opt.load_state_dict(reshard_state_dicts(optimizer_shards, comm.size)[comm.rank])
        else:
            opt.load_state_dict(shared["optimizer"])
    for step in range(start, stop):
        rows = global_rows(step, comm.size, comm.rank)
        opt.zero_grad()
        F.cross_entropy(forward(minipar.tensor(X[rows])), Y[rows]).backward()
        opt.step()
    if save_to is not None:
        if kind == "zero":
            save_distributed(save_to, comm, shared={"model": model.state_dict()},
                             local={"optimizer": opt.state_dict()})
        else:
            save_distributed(save_to, comm, shared={"model": model.state_dict(),
                                                    "optimizer": opt.state_dict()}, gather=True)
    return [p.array.copy() for p in model.parameters()]


if __name__ == "__main__":  # mpiexec -n 3 python -m mpi4py tests/resumable.py full|resume DIR OUT.npz
    from minipar.comm import world

    mode, directory, out = sys.argv[1:4]
    world_comm = world()
    params = train_ddp(world_comm, 17, directory, every=5, resume=mode == "resume")
    if world_comm.rank == 0:
        minipar.save({"params": params}, out)
        print(f"finished 17 steps ({mode})")
