"""``torch.distributed``'s shape over minipar's own collectives.

    import minipar.distributed as dist          # import torch.distributed as dist
    dist.init_process_group("gloo")             # any backend name: the collectives are minipar's
    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
    rank, world = dist.get_rank(), dist.get_world_size()

Under ``mpiexec`` the process group is MPI's world (``minipar.comm.world()``); inside
``minipar.multiprocessing.spawn(fn, args, nprocs)`` each spawned rank is a thread and
its group is that thread's in-process communicator (``run_local``). The backend name
(``"gloo"``, ``"nccl"``, ``"mpi"``, None) is accepted and recorded, never used: every
collective here is minipar's, built from point-to-point messages (``minipar.comm``), so
the message log and the byte counters see it.

Collectives work in place on Tensors (their ``.array``), as torch's do, and on arrays.
Under mpiexec the launcher's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are set in the
environment when this module is imported, for scripts that read them. Thread ranks share
one environment: there ``get_rank()`` is the way to ask (``os.environ`` cannot tell).
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from typing import Any

from minipar import comm as _comm
from minipar.backend import get_array_module
from minipar.comm.safety import launched_rank_and_size
from minipar.tensor import Tensor


class ReduceOp:
    """The reduction of ``all_reduce`` and ``reduce_scatter_tensor`` (torch's names)."""

    SUM, AVG, MAX, MIN = "sum", "mean", "max", "min"
    PRODUCT = "product"


_OPS = {ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN}


class _Groups(threading.local):
    """The default group of this thread (a spawned rank) or, if none, of the process."""

    default: Any = None
    backend: str | None = None
    spawned: Any = None  # the communicator ``multiprocessing.spawn`` prepared for this thread


_here = _Groups()
_process: dict[str, Any] = {"default": None, "backend": None}


def _export_launcher_environment() -> None:
    launched = launched_rank_and_size()
    if launched is None:
        return
    rank, size = launched
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(size))
    os.environ.setdefault("LOCAL_RANK", os.environ.get("MPI_LOCALRANKID", os.environ.get(
        "OMPI_COMM_WORLD_LOCAL_RANK", str(rank))))


_export_launcher_environment()


def is_available() -> bool:
    return True


def init_process_group(backend: str | None = None, init_method: str | None = None,
                       timeout: timedelta | None = None, world_size: int = -1, rank: int = -1,
                       store: Any = None, group_name: str = "", **kwargs: Any) -> None:
    """Make the default group: this spawned thread's ranks, else MPI's world."""
    if is_initialized():
        raise RuntimeError("trying to initialize the default process group twice "
                           "(call destroy_process_group() first)")
    group = _here.spawned if _here.spawned is not None else _comm.world()
    if world_size not in (-1, None) and world_size != group.size:
        raise ValueError(f"init_process_group(world_size={world_size}) but this job has {group.size} "
                         "ranks (mpiexec -n, or spawn's nprocs, sets it)")
    if rank not in (-1, None) and rank != group.rank:
        raise ValueError(f"init_process_group(rank={rank}) but this process is rank {group.rank}")
    if _here.spawned is not None:
        _here.default, _here.backend = group, backend
    else:
        _process["default"], _process["backend"] = group, backend


def is_initialized() -> bool:
    return _here.default is not None or (_here.spawned is None and _process["default"] is not None)


def _default() -> Any:
    group = _here.default if _here.spawned is not None else _process["default"]
    if group is None:
        raise RuntimeError("Default process group has not been initialized, please make sure to call "
                           "init_process_group.")
    return group


def default_group() -> Any | None:
    """The initialised default group's communicator, or None (DDP and DistributedSampler ask)."""
    return _default() if is_initialized() else None


def _group(group: Any) -> Any:
    return _default() if group is None else group


def get_rank(group: Any = None) -> int:
    return _group(group).rank


def get_world_size(group: Any = None) -> int:
    return _group(group).size


def get_backend(group: Any = None) -> str:
    _group(group)
    backend = _here.backend if _here.spawned is not None else _process["backend"]
    return backend or "minipar"


def destroy_process_group(group: Any = None) -> None:
    if group is None:
        if _here.spawned is not None:
            _here.default = None
        else:
            _process["default"] = None


def new_group(ranks: list[int] | None = None, **kwargs: Any) -> Any:
    """A group of ``ranks`` (all ranks call it); ranks outside it get None."""
    world = _default()
    members = list(range(world.size)) if ranks is None else sorted(int(r) for r in ranks)
    if any(not 0 <= r < world.size for r in members):
        raise ValueError(f"new_group ranks {members} outside the world of {world.size} ranks")
    inside = world.rank in members
    return world.split(color=0 if inside else None, key=members.index(world.rank) if inside else 0)


def barrier(group: Any = None, **kwargs: Any) -> None:
    _group(group).barrier()


class Work:
    """What ``async_op=True`` and ``isend``/``irecv`` return: ``wait()`` and ``is_completed()``."""

    def __init__(self, request: Any = None) -> None:
        self.request = request

    def wait(self, timeout: Any = None) -> bool:
        if self.request is not None:
            self.request.wait()
        return True

    def is_completed(self) -> bool:
        return self.request is None or self.request.test()


def _array(tensor: Any, who: str) -> Any:
    array = tensor.array if isinstance(tensor, Tensor) else tensor
    if not hasattr(array, "flags") or not array.flags.c_contiguous:
        raise ValueError(f"{who} works in place on a contiguous tensor or array, got "
                         f"{type(tensor).__name__}")
    return array


def all_reduce(tensor: Any, op: str = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> Any:
    if op not in _OPS:
        raise ValueError(f"all_reduce: minipar's collectives reduce with SUM, AVG, MAX or MIN, got {op!r}")
    _comm.allreduce(_group(group), _array(tensor, "all_reduce"), op=op)
    return Work() if async_op else None


def broadcast(tensor: Any, src: int = 0, group: Any = None, async_op: bool = False) -> Any:
    _comm.broadcast(_group(group), _array(tensor, "broadcast"), root=src)
    return Work() if async_op else None


def all_gather_into_tensor(output_tensor: Any, input_tensor: Any, group: Any = None,
                           async_op: bool = False) -> Any:
    """``output`` (world_size * n elements) = every rank's ``input`` (n elements), in rank order."""
    comm = _group(group)
    out = _array(output_tensor, "all_gather_into_tensor")
    mine = _array(input_tensor, "all_gather_into_tensor")
    if out.size != mine.size * comm.size:
        raise ValueError(f"all_gather_into_tensor: output has {out.size} elements, expected world_size "
                         f"* input = {comm.size} * {mine.size}")
    _comm.allgather(comm, mine.reshape(-1), out=out.reshape(-1))
    return Work() if async_op else None


def all_gather(tensor_list: list[Any], tensor: Any, group: Any = None, async_op: bool = False) -> Any:
    comm = _group(group)
    if len(tensor_list) != comm.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} entries, the group has "
                         f"{comm.size} ranks")
    mine = _array(tensor, "all_gather")
    gathered = get_array_module(mine).empty(mine.size * comm.size, dtype=mine.dtype)
    _comm.allgather(comm, mine.reshape(-1), out=gathered)
    for rank, target in enumerate(tensor_list):
        block = gathered[rank * mine.size:(rank + 1) * mine.size]
        _array(target, "all_gather")[...] = block.reshape(mine.shape)
    return Work() if async_op else None


def reduce_scatter_tensor(output: Any, input: Any, op: str = ReduceOp.SUM, group: Any = None,  # noqa: A002
                          async_op: bool = False) -> Any:
    """``output`` = this rank's 1/world_size block of the reduction of every rank's ``input``."""
    comm = _group(group)
    out, full = _array(output, "reduce_scatter_tensor"), _array(input, "reduce_scatter_tensor")
    if full.size != out.size * comm.size:
        raise ValueError(f"reduce_scatter_tensor: input has {full.size} elements, expected world_size "
                         f"* output = {comm.size} * {out.size}")
    if op not in _OPS:
        raise ValueError(f"reduce_scatter_tensor: SUM, AVG, MAX or MIN, got {op!r}")
    scratch = full.reshape(-1).copy()  # torch leaves the input as it was
    out.reshape(-1)[...] = _comm.reduce_scatter(comm, scratch, op=op)
    return Work() if async_op else None


def send(tensor: Any, dst: int, group: Any = None, tag: int = 0) -> None:
    _group(group).send(_array(tensor, "send"), dst, tag)


def recv(tensor: Any, src: int | None = None, group: Any = None, tag: int = 0) -> int:
    if src is None:
        raise ValueError("recv(src=None) (from any rank) is not supported here: name the source rank")
    _group(group).recv(_array(tensor, "recv"), src, tag)
    return src


def isend(tensor: Any, dst: int, group: Any = None, tag: int = 0) -> Work:
    return Work(_group(group).isend(_array(tensor, "isend"), dst, tag))


def irecv(tensor: Any, src: int | None = None, group: Any = None, tag: int = 0) -> Work:
    if src is None:
        raise ValueError("irecv(src=None) (from any rank) is not supported here: name the source rank")
    return Work(_group(group).irecv(_array(tensor, "irecv"), src, tag))
