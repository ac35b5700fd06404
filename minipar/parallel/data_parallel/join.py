"""Uneven inputs: ``with ddp.join():`` lets ranks run out of batches at different steps.

    with ddp.join():
        for x, y in my_batches:              # 3 batches on one rank, 5 on another
            opt.zero_grad(); F.cross_entropy(ddp(x), y).backward(); opt.step()

Without it, the rank with fewer batches leaves the loop while the others wait in their
next gradient all-reduce: a hang. With it (PyTorch's ``Join`` for DDP):

1. every training forward first all-reduces "I still have data" (a 1): the sum is the
   number of ranks that take part in this step;
2. a rank whose loop has ended waits in ``__exit__`` and *shadows* the others: for each
   of their steps it contributes a 0 to that all-reduce and zeros to every bucket's
   all-reduce, in bucket order, so every collective still has all p ranks;
3. each bucket is averaged over the ranks that still have data (sum / active ranks,
   PyTorch's ``divide_by_initial_world_size=False``), so a step equals one process
   stepping on the union of that step's batches (equal batch sizes per rank);
4. when every rank has joined (the flag all-reduce sums to 0) the loop ends everywhere,
   and the model is broadcast from the rank that trained longest (the lowest such
   rank), so all replicas end equal, as PyTorch's final model sync does. Optimizer
   state on ranks that joined early stays as it was when they joined.

The same context manager serves ``ZeroOptimizer.join()``: there the collective point is
``step()``, and a joined rank keeps stepping *its shard* with zero gradients (every shard
must be updated every step) and joins the all-gather, so its model stays current too.
What a wrapper must provide (a "joinable"): ``comm``, a ``_join`` attribute, ``_shadow(divisor)``
(one step's collectives with zeros) and ``_join_finished(longest_rank)``.

Not covered: ``find_unused_parameters=True`` and ``no_sync()`` inside ``join()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.comm import allreduce
from minipar.parallel.data_parallel.naive import broadcast_module


class Join:
    """The context manager ``DistributedDataParallel.join()`` and ``ZeroOptimizer.join()`` return."""

    def __init__(self, ddp: Any, divide_by_initial_world_size: bool = False, enable: bool = True) -> None:
        if getattr(ddp, "find_unused_parameters", False):
            raise ValueError("join() with find_unused_parameters=True is not supported: the shadowing "
                             "ranks could not tell which parameters the others left unused")
        self.ddp, self.enable = ddp, bool(enable)
        self.by_initial = bool(divide_by_initial_world_size)
        self.steps = 0

    def active_ranks(self) -> int:
        """This rank has data: count, with the others, the ranks that take part in this step."""
        self.steps += 1
        active = int(allreduce(self.ddp.comm, np.array([1], dtype=np.int64), op="sum")[0])
        return self.ddp.comm.size if self.by_initial else active

    def __enter__(self) -> Join:
        if self.enable:
            self.ddp._join = self
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        ddp = self.ddp
        if not self.enable:
            return
        if kind is not None:  # an exception in the loop: end it here, never shadow forever
            ddp._join = None
            return
        comm = ddp.comm
        try:
            while True:  # shadow the steps the other ranks still take
                active = int(allreduce(comm, np.array([0], dtype=np.int64), op="sum")[0])
                if active == 0:
                    break
                ddp._shadow(comm.size if self.by_initial else active)
        finally:
            ddp._join = None
        steps = allreduce(comm, np.array([self.steps * comm.size + (comm.size - 1 - comm.rank)]),
                          op="max")[0]
        ddp._join_finished(comm.size - 1 - int(steps % comm.size))  # the lowest rank with most steps


def shadow_buckets(ddp: Any, divisor: int) -> None:
    """DDP's shadowed step: zeros through every bucket's reduction, in launch order."""
    ddp._divisor = divisor
    try:
        for bucket in ddp.buckets:
            ddp.reduce_bucket(np.zeros(bucket.nbytes // bucket.params[0].array.itemsize,
                                       dtype=bucket.params[0].dtype))
    finally:
        ddp._divisor = None


def sync_final_model(ddp: Any, longest: int) -> None:
    """DDP's end of join: every replica takes the model of the rank that trained longest."""
    broadcast_module(ddp.module, ddp.comm, root=longest)
