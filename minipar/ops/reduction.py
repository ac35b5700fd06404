"""Reductions: sum, mean, max, min, var over some axes (or all of them).

Backward spreads the reduced gradient back over the axes that were reduced:
sum copies it to every element, mean divides by the count, max/min send it to
the extrema (split evenly between ties, like ``torch.amax``), var sends
``2 (x - mean) / (N - correction)`` times it. (``max(dim)``, which also returns the
indices, picks one element per row: ``methods_reduce.py`` builds it from a gather.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module


class DimensionError(IndexError, ValueError):
    """A dimension out of range: an IndexError as in PyTorch, and a ValueError as for any bad input."""


def check_dim(dim: Any, ndim: int) -> int:
    """``dim`` as a non-negative int in [0, ndim) (a 0-d tensor accepts -1 and 0, like PyTorch)."""
    span = max(ndim, 1)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"a dimension must be an int, got {type(dim).__name__} {dim!r}")
    if not -span <= dim < span:
        raise DimensionError(f"dim {dim} is out of range for a tensor with {ndim} dimensions "
                             f"(expected one in [{-span}, {span - 1}])")
    return int(dim) % span


def normalize_axis(axis: Any, ndim: int) -> tuple[int, ...] | None:
    """``None`` or a sorted tuple of non-negative axes; bad axes raise DimensionError (a ValueError)."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted({check_dim(a, ndim) for a in axes}))


def _expand(grad: Any, shape: tuple[int, ...], axis: tuple[int, ...] | None, keepdims: bool) -> Any:
    """Give the reduced gradient back its reduced axes (length 1), ready to broadcast."""
    if keepdims or axis is None and grad.ndim == len(shape):
        return grad
    xp = get_array_module(grad)
    if axis is None:
        return grad.reshape((1,) * len(shape))
    return xp.expand_dims(grad, axis)


class Sum(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, axis: tuple[int, ...] | None, keepdims: bool) -> Any:
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return get_array_module(a).asarray(a.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        expanded = _expand(grad, ctx.shape, ctx.axis, ctx.keepdims)
        return xp.broadcast_to(expanded, ctx.shape), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, axis: tuple[int, ...] | None, keepdims: bool) -> Any:
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        ctx.count = a.size if axis is None else _count(a.shape, axis)
        return get_array_module(a).asarray(a.mean(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        expanded = _expand(grad, ctx.shape, ctx.axis, ctx.keepdims) / ctx.count
        return xp.broadcast_to(expanded, ctx.shape), None, None


class Max(Function):
    reduce = "max"

    @classmethod
    def forward(cls, ctx: Any, a: Any, axis: tuple[int, ...] | None, keepdims: bool) -> Any:
        if a.size == 0:
            raise ValueError(f"{cls.reduce}() of an empty tensor (shape {a.shape}) has no value")
        xp = get_array_module(a)
        out = getattr(a, cls.reduce)(axis=axis, keepdims=True)
        ctx.axis, ctx.keepdims = axis, keepdims
        ctx.save_for_backward(a, out)
        return xp.asarray(out if keepdims else out.reshape(_reduced_shape(a.shape, axis)))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        a, out = ctx.saved_tensors
        is_max = a == out
        ties = is_max.sum(axis=ctx.axis, keepdims=True)
        expanded = _expand(grad, a.shape, ctx.axis, ctx.keepdims)
        return (is_max * (expanded / ties)).astype(a.dtype, copy=False), None, None


class Min(Max):
    """Like Max (the same backward: the gradient goes to the elements equal to the result)."""

    reduce = "min"


class Var(Function):
    """var = sum((x - mean)^2) / (N - correction); d var / dx = 2 (x - mean) / (N - correction)."""

    @staticmethod
    def forward(ctx: Any, a: Any, axis: tuple[int, ...] | None, correction: float, keepdims: bool) -> Any:
        xp = get_array_module(a)
        centered = a - a.mean(axis=axis, keepdims=True)
        count = a.size if axis is None else _count(a.shape, axis)
        ctx.divisor = float(max(count - correction, 0))  # 0 gives inf/nan, as in PyTorch
        ctx.axis, ctx.keepdims = axis, keepdims
        ctx.save_for_backward(centered)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.asarray((centered * centered).sum(axis=axis, keepdims=keepdims) / ctx.divisor)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
        (centered,) = ctx.saved_tensors
        expanded = _expand(grad, centered.shape, ctx.axis, ctx.keepdims)
        scale = 2 / ctx.divisor if ctx.divisor else float("inf")
        with np.errstate(invalid="ignore"):
            return (expanded * scale * centered).astype(centered.dtype, copy=False), None, None, None


def _count(shape: tuple[int, ...], axis: tuple[int, ...]) -> int:
    count = 1
    for a in axis:
        count *= shape[a]
    return count


def _reduced_shape(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    return tuple(n for i, n in enumerate(shape) if i not in axis)
