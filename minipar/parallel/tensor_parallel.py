"""Tensor parallelism: the weights of one layer split over ranks (Megatron-LM's f and g).

    mpiexec -n 2 python -m mpi4py lessons/07_tensor_parallel.py

Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language
Models Using Model Parallelism" (arXiv:1909.08053), section 3. An MLP block
``Y = act(X A^T) B^T`` with A (hidden, in) and B (out, hidden) splits over p
ranks with one all-reduce each way:

- A by rows (``ColumnParallelLinear``): rank r holds A_r = A[rows_r], with
  rows_r = ``array_split(range(hidden), p)[r]``, and computes its own slice of
  the hidden layer, H_r = act(X A_r^T). No message: act is elementwise.
- B by columns (``RowParallelLinear``): rank r holds B_r = B[:, rows_r] and
  computes a partial output H_r B_r^T. The output is the sum of the partials:
  one all-reduce (g), then the bias, once.
- Backward mirrors it: dX = sum_r dH_r A_r, one all-reduce (f) at the input.

Cost per block and rank: weights and their gradients 1/p of the dense block's;
two ring all-reduces of (batch, out) and (batch, in) elements, each sending
2(p-1)/p * N elements per rank. ``tp`` ranks should be neighbours (ProcessMesh
puts tp fastest) because this happens in every layer, forward and backward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.comm import allgather, allreduce, chunk_bounds, require_communicator
from minipar.nn import Linear, Module, Parameter
from minipar.nn.linear import LinearFunction, linear_init
from minipar.tensor import Tensor


def _allreduce_sum(comm: Any, array: Any) -> Any:
    """Sum of ``array`` over the group, in a fresh array (ring all-reduce)."""
    return allreduce(comm, array.copy(), op="sum")  # copy: C-contiguous, and never the caller's array


def _gather_last_axis(comm: Any, local: Any, bounds: list[int]) -> Any:
    """Every rank's slice along the last axis, joined; rank r's slice is [bounds[r], bounds[r+1]).

    ``allgather`` moves equal flat shards, so slices are padded to the widest
    (array_split widths differ by at most one), gathered, then unpadded.
    """
    xp = get_array_module(local)
    widths = [hi - lo for lo, hi in zip(bounds, bounds[1:])]
    padded = xp.zeros(local.shape[:-1] + (max(widths),), dtype=local.dtype)
    padded[..., :local.shape[-1]] = local
    gathered = xp.empty(comm.size * padded.size, dtype=local.dtype)
    allgather(comm, padded.reshape(-1), out=gathered)
    blocks = gathered.reshape((comm.size,) + padded.shape)  # (p, ..., max width)
    return xp.concatenate([blocks[r][..., :widths[r]] for r in range(comm.size)], axis=-1)


class CopyToTensorParallelRegion(Function):
    """Megatron's **f** (Shoeybi et al. 2019): identity forward, all-reduce backward.

    Placed where a replicated input enters the ranks' parallel paths: every
    rank uses the whole X, so dL/dX is the sum of every rank's contribution.
    """

    @staticmethod
    def forward(ctx: Any, x: Any, comm: Any) -> Any:
        ctx.comm = comm
        return x

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return _allreduce_sum(ctx.comm, grad), None


class ReduceFromTensorParallelRegion(Function):
    """Megatron's **g** (Shoeybi et al. 2019): all-reduce forward, identity backward.

    The conjugate of f: sums the ranks' partial outputs; the sum's gradient
    with respect to each partial is the output gradient itself.
    """

    @staticmethod
    def forward(ctx: Any, x: Any, comm: Any) -> Any:
        return _allreduce_sum(comm, x)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return grad, None


class GatherFromTensorParallelRegion(Function):
    """All-gather slices along the last axis; backward keeps this rank's slice of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Any, comm: Any, bounds: list[int]) -> Any:
        ctx.lo, ctx.hi = bounds[comm.rank], bounds[comm.rank + 1]
        return _gather_last_axis(comm, x, bounds)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        return grad[..., ctx.lo:ctx.hi].copy(), None, None


class ScatterToTensorParallelRegion(Function):
    """Keep this rank's slice of the last axis; backward all-gathers the gradient slices."""

    @staticmethod
    def forward(ctx: Any, x: Any, comm: Any, bounds: list[int]) -> Any:
        ctx.comm, ctx.bounds = comm, bounds
        return x[..., bounds[comm.rank]:bounds[comm.rank + 1]].copy()

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        return _gather_last_axis(ctx.comm, grad, ctx.bounds), None, None


class _ParallelLinear(Module):
    """What both layers share: sizes, checks, a full weight cut into this rank's block."""

    split_axis = 0  # axis of the (out, in) weight that is split: 0 column-, 1 row-parallel

    def __init__(self, in_features: int, out_features: int, comm: Any, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        require_communicator(comm, type(self).__name__)
        # Draw the whole dense weight (as Linear would), keep our block: a layer built
        # after manual_seed(s) is the sharded twin of Linear(in, out) built after it.
        self._setup(comm, *linear_init(in_features, out_features, bias, dtype, type(self).__name__))

    @classmethod
    def from_dense(cls, linear: Linear, comm: Any, **options: Any) -> Any:
        """This rank's shard of a dense ``Linear`` (its arrays are copied, not shared)."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        for name, value in options.items():
            setattr(layer, name, value)
        bias = None if linear.bias is None else linear.bias.array
        layer._setup(comm, linear.weight.array, bias)
        return layer

    def _setup(self, comm: Any, weight: Any, bias: Any) -> None:
        self.comm = comm
        self.out_features, self.in_features = weight.shape
        split = weight.shape[self.split_axis]
        if split < comm.size:
            raise ValueError(f"{type(self).__name__}: {split} features cannot be split over "
                             f"{comm.size} ranks (each rank needs at least one)")
        self.bounds = chunk_bounds(split, comm.size)
        lo, hi = self.bounds[comm.rank], self.bounds[comm.rank + 1]
        block = weight[lo:hi] if self.split_axis == 0 else weight[:, lo:hi]
        self.weight = Parameter(block.copy())
        if bias is None:
            self.bias = None
        else:  # column: this rank's slice of b; row: all of b, added once after the sum
            self.bias = Parameter((bias[lo:hi] if self.split_axis == 0 else bias).copy())

    def _check_input(self, x: Tensor, width: int) -> None:
        if x.shape[-1:] != (width,):
            raise ValueError(f"{type(self).__name__} expected input whose last dimension is "
                             f"{width}, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank {self.comm.rank} of {self.comm.size} holds weight {tuple(self.weight.shape)}")


class ColumnParallelLinear(_ParallelLinear):
    """``Linear`` with the (out, in) weight split by rows: rank r computes outputs rows_r.

    Rank r holds ``weight = W[rows_r]`` (out_r, in) and ``bias = b[rows_r]``,
    rows_r = ``array_split(range(out), p)[r]``. Forward: f(X) (identity), then
    X W_r^T + b_r, (..., out_r); with ``gather_output`` the slices are
    all-gathered into (..., out) (backward keeps this rank's slice).
    """

    split_axis = 0

    def __init__(self, in_features: int, out_features: int, comm: Any, bias: bool = True,
                 gather_output: bool = False, dtype: Any = np.float32) -> None:
        super().__init__(in_features, out_features, comm, bias, dtype)
        self.gather_output = gather_output

    @classmethod
    def from_dense(cls, linear: Linear, comm: Any, gather_output: bool = False) -> ColumnParallelLinear:
        return super().from_dense(linear, comm, gather_output=gather_output)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, self.in_features)
        x = CopyToTensorParallelRegion.apply(x, self.comm)  # f: all-reduce of dX in backward
        out = LinearFunction.apply(x, self.weight, self.bias)  # (..., in) @ (in, out/p) -> (..., out/p)
        if self.gather_output:
            out = GatherFromTensorParallelRegion.apply(out, self.comm, self.bounds)  # (..., out)
        return out


class RowParallelLinear(_ParallelLinear):
    """``Linear`` with the (out, in) weight split by columns: rank r reads inputs cols_r.

    Rank r holds ``weight = W[:, cols_r]`` (out, in_r), cols_r =
    ``array_split(range(in), p)[r]``, and the whole bias. Forward: its input
    slice (..., in_r) -- given, or cut from a full input when
    ``input_is_parallel=False`` -- times W_r^T is a partial (..., out); g
    all-reduces the partials, then the bias is added, once.
    """

    split_axis = 1

    def __init__(self, in_features: int, out_features: int, comm: Any, bias: bool = True,
                 input_is_parallel: bool = True, dtype: Any = np.float32) -> None:
        super().__init__(in_features, out_features, comm, bias, dtype)
        self.input_is_parallel = input_is_parallel

    @classmethod
    def from_dense(cls, linear: Linear, comm: Any, input_is_parallel: bool = True) -> RowParallelLinear:
        return super().from_dense(linear, comm, input_is_parallel=input_is_parallel)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_is_parallel:
            self._check_input(x, self.weight.shape[1])
        else:
            self._check_input(x, self.in_features)
            x = ScatterToTensorParallelRegion.apply(x, self.comm, self.bounds)  # (..., in/p)
        partial = LinearFunction.apply(x, self.weight, None)  # (..., in/p) @ (in/p, out) -> (..., out)
        out = ReduceFromTensorParallelRegion.apply(partial, self.comm)  # g: sum over ranks
        return out if self.bias is None else out + self.bias
