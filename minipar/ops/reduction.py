"""Reductions: sum, mean, max over some axes (or all of them).

Backward spreads the reduced gradient back over the axes that were reduced:
sum copies it to every element, mean divides by the count, max sends it to
the maxima (split evenly between ties, like ``torch.amax``).
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module


def normalize_axis(axis: Any, ndim: int) -> tuple[int, ...] | None:
    """``None`` or a sorted tuple of non-negative axes; bad axes are a ValueError."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    result = []
    for a in axes:
        if not isinstance(a, int) or not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"axis {a!r} is out of range for a tensor with {ndim} dimensions")
        result.append(a % max(ndim, 1))
    return tuple(sorted(set(result)))


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
    @staticmethod
    def forward(ctx: Any, a: Any, axis: tuple[int, ...] | None, keepdims: bool) -> Any:
        if a.size == 0:
            raise ValueError(f"max() of an empty tensor (shape {a.shape}) has no value")
        xp = get_array_module(a)
        out = a.max(axis=axis, keepdims=True)
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


def _count(shape: tuple[int, ...], axis: tuple[int, ...]) -> int:
    count = 1
    for a in axis:
        count *= shape[a]
    return count


def _reduced_shape(shape: tuple[int, ...], axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    return tuple(n for i, n in enumerate(shape) if i not in axis)
