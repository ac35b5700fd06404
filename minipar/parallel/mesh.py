"""``ProcessMesh``: the world's ranks as a dp x pp x tp grid, with one communicator per axis.

    mpiexec -n 8 python -m mpi4py train.py      # e.g. dp=2, pp=2, tp=2

    mesh = ProcessMesh(world(), dp=2, pp=2, tp=2)
    mesh.dp, mesh.pp, mesh.tp        # sub-communicators along each axis (comm.split)
    mesh.dp_rank, mesh.pp_rank, mesh.tp_rank   # this rank's coordinates

Layout: tp varies fastest, then pp, then dp::

    rank = (dp_i * pp + pp_i) * tp + tp_i

so the ranks of a tensor-parallel group are neighbours (on a real cluster, the
GPUs of one node, where the all-reduce of every layer is cheapest), a pipeline
sends to rank + tp, and data-parallel replicas are the furthest apart (they talk
once per step). For dp=2, pp=2, tp=2::

    world rank   0  1  2  3  4  5  6  7
    dp_i         0  0  0  0  1  1  1  1
    pp_i         0  0  1  1  0  0  1  1
    tp_i         0  1  0  1  0  1  0  1

    tp groups: [0 1] [2 3] [4 5] [6 7]   pp groups: [0 2] [1 3] [4 6] [5 7]
    dp groups: [0 4] [1 5] [2 6] [3 7]

Each sub-communicator numbers its members by their coordinate on that axis
(``mesh.pp.rank == mesh.pp_rank``), so a pipeline built on ``mesh.pp`` sends to
``mesh.pp_rank + 1``. ``next_stage_rank`` and ``prev_stage_rank`` are **world**
ranks (as in PyTorch and picotron, where the pipeline neighbours are global
ranks), or None at the ends of the pipeline; ``rank_of(dp_i, pp_i, tp_i)``
converts coordinates to a world rank.

Hybrid training on one mesh (dp x pp, dp x tp): build the model part this rank
owns (a ``PipelineParallel`` over ``mesh.pp``, or tensor-parallel layers over
``mesh.tp``), feed each dp replica its own 1/dp of the global batch, run
forward/backward, then call ``average_gradients(params, mesh.dp)`` before the
optimizer step. With losses that are batch means and equal shards, the
averaged gradient is the full-batch gradient, so every replica takes the same
step as one process would. ``lessons/08_hybrid.py`` runs dp=2 x pp=2.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.comm import allgather, allreduce, require_communicator
from minipar.parallel.flat_buffer import FlatBuffer
from minipar.tensor import Tensor


class ProcessMesh:
    """A dp x pp x tp grid over ``comm``'s ranks with sub-communicators ``.dp``, ``.pp``, ``.tp``.

    Collective: every rank of ``comm`` must construct it (it calls ``comm.split`` three times).
    """

    def __init__(self, comm: Any, dp: int = 1, pp: int = 1, tp: int = 1) -> None:
        require_communicator(comm, "ProcessMesh")
        for name, value in (("dp", dp), ("pp", pp), ("tp", tp)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ProcessMesh {name} must be a positive int, got {value!r}")
        dp, pp, tp = int(dp), int(pp), int(tp)
        if dp * pp * tp != comm.size:
            raise ValueError(
                f"ProcessMesh dp*pp*tp = {dp}*{pp}*{tp} = {dp * pp * tp} does not equal the "
                f"world size {comm.size}"
            )
        # Every rank must build the same mesh, or the splits below pair the wrong ranks.
        shapes = allgather(comm, np.array([dp, pp, tp], dtype=np.int64)).reshape(comm.size, 3)
        if (shapes != shapes[0]).any():
            described = ", ".join(f"rank {r}: dp={a}, pp={b}, tp={c}" for r, (a, b, c) in
                                  enumerate(shapes.tolist()))
            raise ValueError(f"ProcessMesh: the ranks asked for different meshes ({described}); "
                             "every rank must pass the same dp, pp and tp")
        self.world = comm
        self.shape = (dp, pp, tp)
        self.rank = comm.rank
        self.dp_size, self.pp_size, self.tp_size = dp, pp, tp
        # rank = (dp_i * pp + pp_i) * tp + tp_i, read backwards:
        self.tp_rank = comm.rank % tp
        self.pp_rank = (comm.rank // tp) % pp
        self.dp_rank = comm.rank // (tp * pp)
        # Ranks that share every coordinate but one form that axis' group; the key
        # orders each group by the free coordinate, so sub-rank == coordinate.
        self.tp = comm.split(color=self.dp_rank * pp + self.pp_rank, key=self.tp_rank)
        self.pp = comm.split(color=self.dp_rank * tp + self.tp_rank, key=self.pp_rank)
        self.dp = comm.split(color=self.pp_rank * tp + self.tp_rank, key=self.dp_rank)

    def rank_of(self, dp_i: int, pp_i: int, tp_i: int) -> int:
        """The world rank at coordinates (dp_i, pp_i, tp_i)."""
        dp, pp, tp = self.shape
        if not (0 <= dp_i < dp and 0 <= pp_i < pp and 0 <= tp_i < tp):
            raise ValueError(f"coordinates ({dp_i}, {pp_i}, {tp_i}) outside the mesh {self.shape}")
        return (dp_i * pp + pp_i) * tp + tp_i

    @property
    def coords(self) -> tuple[int, int, int]:
        """(dp_rank, pp_rank, tp_rank) of this rank."""
        return self.dp_rank, self.pp_rank, self.tp_rank

    # ----- the world ranks of this rank's groups (what the sub-communicators hold) -----
    @property
    def dp_group(self) -> list[int]:
        return [self.rank_of(d, self.pp_rank, self.tp_rank) for d in range(self.dp_size)]

    @property
    def pp_group(self) -> list[int]:
        return [self.rank_of(self.dp_rank, s, self.tp_rank) for s in range(self.pp_size)]

    @property
    def tp_group(self) -> list[int]:
        return [self.rank_of(self.dp_rank, self.pp_rank, t) for t in range(self.tp_size)]

    # ----- pipeline facts -------------------------------------------------------------
    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def next_stage_rank(self) -> int | None:
        """World rank of the next pipeline stage (same dp, tp), or None on the last stage."""
        if self.is_last_stage:
            return None
        return self.rank_of(self.dp_rank, self.pp_rank + 1, self.tp_rank)

    @property
    def prev_stage_rank(self) -> int | None:
        """World rank of the previous pipeline stage (same dp, tp), or None on the first."""
        if self.is_first_stage:
            return None
        return self.rank_of(self.dp_rank, self.pp_rank - 1, self.tp_rank)

    def __repr__(self) -> str:
        return (f"ProcessMesh(dp={self.dp_size}, pp={self.pp_size}, tp={self.tp_size}; rank "
                f"{self.rank} at dp={self.dp_rank}, pp={self.pp_rank}, tp={self.tp_rank})")


def average_gradients(parameters: Iterable[Any], comm: Any) -> None:
    """Replace every ``.grad`` by its mean over ``comm`` (the dp group of a hybrid mesh).

    The simplest correct data-parallel step, one flat buffer: copy the
    gradients into one array, one ``allreduce(op="mean")`` (ring: each rank
    sends 2(p-1)/p * N elements), copy back. Parameters without a gradient
    count as zeros, the same on every rank, so the call is collective even
    then. No overlap with backward (that is DDP's job, ``data_parallel/ddp.py``).
    """
    params = list(parameters)
    if comm.size == 1 or not params:
        return
    xp = get_array_module(params[0].array)
    dtype = xp.result_type(*[p.array.dtype for p in params])
    buffer = FlatBuffer([p.shape for p in params], dtype, xp)
    allreduce(comm, buffer.pack([None if p.grad is None else p.grad.array for p in params]), op="mean")
    for param, view in zip(params, buffer.views):
        param.grad = Tensor(view.astype(param.array.dtype))  # a copy: each .grad its own array
