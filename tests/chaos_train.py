"""A job for the chaos matrix: DDP, ZeRO or pipeline training that a SIGKILL interrupts and a restart resumes.

    minipar run tests/chaos_train.py -n 3 --max-restarts 1 -- ddp DIR OUT --steps 12 --every 3 --kill 1:7

Launch k (``MINIPAR_RESTART_COUNT``, set by ``--max-restarts``) gets the k-th
``--kill rank:step`` as ``MINIPAR_FAULT=rank:step:kill``: that rank SIGKILLs
itself at the top of that step (no exception, no cleanup). Every launch
starts with ``minipar.elastic.resume`` and snapshots every ``--every`` steps
and at the last one. At the end every rank writes its parameters to
``OUT-rank<r>.npz``.

Two kinds of data (``tests/resumable.py`` has the model and the data):

- default: a shuffling ``DistributedSampler`` and dropout -- a restart at the
  same world size must be bit-identical, so the sampler position and each
  rank's RNG are in the snapshot;
- ``--portable`` (DDP, ZeRO): the step alone picks the 12 rows of the global
  batch and there is no dropout, so a restart at another world size computes
  the same sums in another order (ZeRO's optimizer shards are re-split).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # resumable.py beside this file

import resumable  # noqa: E402

import minipar  # noqa: E402
from minipar import elastic, optim  # noqa: E402
from minipar.comm import Communicator, world  # noqa: E402
from minipar.nn import functional as F  # noqa: E402
from minipar.parallel import DistributedDataParallel, PipelineParallel, ZeroOptimizer  # noqa: E402
from minipar.parallel.zero import reshard_state_dicts  # noqa: E402
from minipar.snapshot import fault  # noqa: E402
from minipar.utils.data import DataLoader, DistributedSampler  # noqa: E402


def make_ddp(model: Any, comm: Communicator) -> DistributedDataParallel:
    """The one place DDP is built (its signature may move ``comm`` to a keyword)."""
    return DistributedDataParallel(model, comm=comm)


def arm_fault(kills: list[str]) -> int:
    """This launch's SIGKILL, if ``--kill`` gave one for it; returns the launch number."""
    launch = elastic.restart_count()
    os.environ.pop(fault.FAULT_ENV, None)
    if launch < len(kills):
        os.environ[fault.FAULT_ENV] = f"{kills[launch]}:kill"
    return launch


def build(kind: str, comm: Communicator, portable: bool) -> tuple[Any, Any, dict[str, Any], bool, list[Any]]:
    """(step function, sampler or None, elastic parts, gather, parameters to report)."""
    model = resumable.make_model(dropout=0.0 if portable else 0.2, depth=2 if kind == "pipeline" else 1)
    minipar.manual_seed(1000 + comm.rank)  # every rank its own dropout masks
    if kind == "pipeline":
        if portable:
            raise ValueError("--portable is for ddp and zero (a pipeline's stages depend on the world size)")
        pipe = PipelineParallel(model, comm, microbatches=2)
        opt: Any = optim.Adam(pipe.stage_module.parameters(), lr=0.01)
        sampler = DistributedSampler(len(resumable.Y), resumable.ONE_REPLICA, shuffle=True, seed=5)

        def step_pipeline(x: Any, y: Any) -> None:
            pipe.train_step(x, y, F.cross_entropy)
            opt.step()
            opt.zero_grad()

        parts = {"local": {"stage": pipe.stage_module, "optimizer": opt, "sampler": sampler}}
        return step_pipeline, sampler, parts, False, list(pipe.stage_module.parameters())
    if kind == "zero":
        opt = ZeroOptimizer(optim.Adam, model.parameters(), comm, lr=0.01)
        forward: Any = model
        parts = {"shared": {"model": model}, "local": {"optimizer": opt}}
    elif kind == "ddp":
        forward = make_ddp(model, comm)
        opt = optim.Adam(forward.parameters(), lr=0.01)
        parts = {"shared": {"model": forward, "optimizer": opt}, "local": {}}
    else:
        raise ValueError(f"kind must be 'ddp', 'zero' or 'pipeline', got {kind!r}")

    def step_replicated(x: Any, y: Any) -> None:
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        opt.step()

    sampler = None
    if not portable:
        sampler = DistributedSampler(len(resumable.Y), comm, shuffle=True, seed=5)
        parts["local"]["sampler"] = sampler
    return step_replicated, sampler, parts, kind == "ddp", list(model.parameters())


def batches(comm: Communicator, sampler: Any, step: int, total: int, batch_size: int) -> Any:
    if sampler is not None:
        loader = DataLoader(resumable.X, resumable.Y, batch_size=batch_size, sampler=sampler)
        yield from resumable._epochs(loader, sampler, step, total)
        return
    for at in range(step, total):
        rows = resumable.global_rows(at, comm.size, comm.rank)  # this rank's part of 12 rows
        yield minipar.tensor(resumable.X[rows]), resumable.Y[rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ddp", "zero", "pipeline"])
    parser.add_argument("directory")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--kill", action="append", default=[], help="rank:step, one per launch")
    parser.add_argument("--portable", action="store_true")
    options = parser.parse_args()
    launch = arm_fault(options.kill)
    comm = world()
    train_step, sampler, parts, gather, params = build(options.kind, comm, options.portable)
    reshard = {"optimizer": reshard_state_dicts} if options.kind == "zero" else None
    start = step = elastic.resume(options.directory, comm, **parts, reshard=reshard,
                                  rng=not options.portable)
    batch_size = 8 if options.kind == "pipeline" else 4
    for x, y in batches(comm, sampler, step, options.steps, batch_size):
        fault.maybe_fail(step, comm)
        train_step(x, y)
        step += 1
        if step % options.every == 0 or step == options.steps:
            elastic.snapshot(options.directory, comm, step, **parts, gather=gather)
    minipar.save({"params": [param.array.copy() for param in params]}, f"{options.out}-rank{comm.rank}.npz")
    comm.barrier()
    if comm.rank == 0:
        print(f"launch {launch}: {options.kind} on {comm.size} ranks, steps {start}..{step}", flush=True)


if __name__ == "__main__":
    main()
