"""Naive data parallelism: one all-reduce per parameter, after backward.

    mpiexec -n 4 python -m mpi4py lessons/04_data_parallel.py

Why averaging is exact. With the loss a mean over a global batch of p*b samples
and each rank's loss L_r the mean over its b samples, L = (1/p) sum_r L_r, so
grad L = (1/p) sum_r grad L_r: p ranks that average their gradients take exactly
the step one process takes on the whole batch (up to float rounding).

``allreduce_gradients`` / ``NaiveDataParallel``: after backward, one ring
all-reduce per parameter. Bytes sent per rank and step: 2(p-1)/p * N * itemsize
(N parameter elements), in 2(p-1) messages *per parameter*, none of it
overlapping computation. ``ddp.py`` sends the same bytes in buckets, overlapped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.comm import Communicator, allreduce, broadcast, require_communicator
from minipar.nn.module import Module, Parameter
from minipar.observe import trace
from minipar.parallel.data_parallel.wrapper import ModuleWrapper
from minipar.tensor import Tensor


def _trainable(module: Any, who: str) -> list[tuple[str, Parameter]]:
    if not isinstance(module, Module):
        raise TypeError(f"{who} wraps a minipar.nn.Module, got {type(module).__name__}")
    named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    if not named:
        raise ValueError(f"{who}: the module has no parameters that require grad, so there is "
                         f"nothing to synchronise (got {type(module).__name__})")
    return named


def broadcast_module(module: Module, comm: Communicator, root: int = 0) -> None:
    """Copy rank ``root``'s parameters and buffers into every rank's module, in place.

    A short signature goes first, so ranks holding different models fail with
    a message saying so instead of a size mismatch deep inside a receive.
    """
    params = list(module.parameters())
    buffers = [(owner, name, array) for owner in module.modules()
               for name, array in owner._buffers.items() if hasattr(array, "dtype")]
    mine = np.array([len(params), sum(p.array.nbytes for p in params),
                     len(buffers), sum(array.nbytes for _, _, array in buffers)], dtype=np.int64)
    theirs = broadcast(comm, mine.copy(), root)
    if not np.array_equal(mine, theirs):
        raise ValueError(
            f"rank {comm.rank}'s module has (parameters, parameter bytes, buffers, buffer bytes) = "
            f"{tuple(mine.tolist())} but rank {root}'s has {tuple(theirs.tolist())}: every rank must "
            "build the same model before wrapping it")
    for param in params:
        data = param.array
        if not (data.flags.c_contiguous and data.flags.writeable):
            data = get_array_module(data).array(data, order="C")
        param.array = broadcast(comm, data, root)
    for owner, name, array in buffers:
        if not (array.flags.c_contiguous and array.flags.writeable):
            array = get_array_module(array).array(array, order="C")
        owner.register_buffer(name, broadcast(comm, array, root))


def allreduce_gradients(params: list[Parameter], comm: Communicator) -> None:
    """The naive sync: average every gradient with its own ring all-reduce, after backward.

    Every rank must call it with the same parameters in the same order. A
    parameter without a gradient on this rank contributes zeros (its ``.grad``
    becomes the average). Cost per step: 2(p-1) messages per parameter;
    bytes sent per rank 2(p-1)/p * N * itemsize.
    """
    if comm.size == 1:
        return
    for param in params:
        xp = get_array_module(param.array)
        if param.grad is None:
            param.grad = Tensor(xp.zeros_like(param.array))
        elif not param.grad.array.flags.c_contiguous:
            param.grad.array = xp.ascontiguousarray(param.grad.array)
        grad = param.grad.array
        with trace.span("allreduce parameter", "comm", rank=_trace_rank(comm), bytes=grad.nbytes):
            allreduce(comm, grad, op="mean", algorithm="ring")


def _trace_rank(comm: Communicator) -> int | None:
    """Row for trace spans: the world rank under run_local (threads share one process)."""
    return getattr(comm, "world_rank", None)


def _check_same_trainable(module: Module, comm: Communicator) -> None:
    """Every rank must train the same parameters, or the buckets differ and the sums mismatch."""
    named = list(module.named_parameters())
    mine = np.array([param.requires_grad for _, param in named], dtype=np.int64)
    rank0 = broadcast(comm, mine.copy())
    if not np.array_equal(mine, rank0):
        differing = [name for (name, _), a, b in zip(named, mine, rank0) if a != b]
        raise ValueError(f"DistributedDataParallel: rank {comm.rank} has requires_grad different from "
                         f"rank 0 for {differing}: freeze (or unfreeze) parameters on every rank alike, "
                         "before wrapping the module")


def given_or_default_group(comm: Communicator | None) -> Communicator:
    """``comm``, or the process group ``minipar.distributed.init_process_group()`` made."""
    if comm is None:
        from minipar import distributed

        comm = distributed.default_group()
        if comm is None:
            raise RuntimeError("DistributedDataParallel needs a communicator: pass comm=, or call "
                               "minipar.distributed.init_process_group() first")
    return comm


class NaiveDataParallel(ModuleWrapper):
    """Broadcast at construction; call ``allreduce_gradients()`` between backward and step."""

    def __init__(self, module: Module, comm: Communicator) -> None:
        require_communicator(comm, "NaiveDataParallel")
        self.params = [param for _, param in _trainable(module, "NaiveDataParallel")]
        self.module, self.comm = module, comm
        broadcast_module(module, comm)

    def allreduce_gradients(self) -> None:
        allreduce_gradients(self.params, self.comm)

