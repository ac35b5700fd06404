"""Tensor reductions with PyTorch's names: ``dim``/``keepdim`` (NumPy's ``axis``/``keepdims``
accepted as aliases), ``max/min(dim)`` returning ``(values, indices)``, ``std``/``var`` with
Bessel's correction by default, and ``softmax``/``log_softmax``. Bound onto ``Tensor`` by
``minipar.ops`` like ``methods.py``.

    values, indices = x.max(1)        # a named tuple, as torch.return_types.max
    x.max(1)[1]                       # the indices (argmax along dim 1)
    x.max()                           # the largest element, a 0-d tensor
    x.var(0)                          # sum((x - mean)^2) / (N - 1), PyTorch's default
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minipar.backend import get_array_module
from minipar.ops.reduction import Max, Mean, Min, Sum, Var, check_dim, normalize_axis
from minipar.ops.selection import Maximum, Minimum, TakeAlong
from minipar.ops.shape import reshape
from minipar.ops.softmax import LogSoftmax, Softmax
from minipar.tensor import Tensor


class ValuesIndices(NamedTuple):
    """What ``max(dim)``/``min(dim)`` return (PyTorch's ``torch.return_types.max``)."""

    values: Tensor
    indices: Tensor


def pick_dim(dim: Any, axis: Any) -> Any:
    """PyTorch's ``dim`` or NumPy's alias ``axis`` (not both)."""
    if axis is None:
        return dim
    if dim is not None:
        raise TypeError(f"pass dim or its NumPy alias axis, not both (got dim={dim!r}, axis={axis!r})")
    return axis


def pick_keepdim(keepdim: bool, keepdims: bool | None) -> bool:
    return bool(keepdim if keepdims is None else keepdims)


def _one_dim(dim: Any, ndim: int, who: str) -> int:
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{who}(dim) takes one dimension, got {dim!r}; "
                        f"use a{who[-3:]}(dim=...) to reduce several (values only)")
    return check_dim(dim, ndim)


def _extreme(x: Tensor, dim: Any, keepdim: bool, which: str) -> ValuesIndices:
    """(values, indices) of the max or min along ``dim``; the gradient goes to the index picked."""
    axis = _one_dim(dim, x.ndim, which)
    if x.array.size == 0:
        raise ValueError(f"{which}(dim) of an empty tensor (shape {x.shape}) has no value")
    array = x.array if x.ndim else x.array.reshape(1)
    xp = get_array_module(array)
    found = (xp.argmax if which == "max" else xp.argmin)(array, axis=axis, keepdims=True)
    values = TakeAlong.apply(x if x.ndim else reshape(x, (1,)), found, axis)
    if not keepdim or x.ndim == 0:
        shape = tuple(n for i, n in enumerate(array.shape) if i != axis) if x.ndim else ()
        values, found = reshape(values, shape), found.reshape(shape)
    return ValuesIndices(values, Tensor._wrap(found.astype("int64", copy=False)))


def _arg(x: Tensor, dim: Any, keepdim: bool, which: str) -> Tensor:
    xp = get_array_module(x.array)
    if x.array.size == 0:
        raise ValueError(f"{which}() of an empty tensor (shape {x.shape}) has no value")
    find = xp.argmax if which == "argmax" else xp.argmin
    if dim is None:  # the index into the flattened tensor
        found = xp.asarray(find(x.array))
        return Tensor._wrap(found.reshape((1,) * x.ndim) if keepdim else found)
    axis = _one_dim(dim, x.ndim, which)
    found = find(x.array if x.ndim else x.array.reshape(1), axis=axis, keepdims=keepdim)
    return Tensor._wrap(xp.asarray(found).astype("int64", copy=False).reshape(found.shape if x.ndim else ()))


class ReductionMethods:
    """Reductions of ``Tensor`` (see the module docstring)."""

    def sum(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,
            axis: Any = None, keepdims: bool | None = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return Sum.apply(x, normalize_axis(pick_dim(dim, axis), self.ndim), pick_keepdim(keepdim, keepdims))

    def mean(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,
             axis: Any = None, keepdims: bool | None = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return Mean.apply(x, normalize_axis(pick_dim(dim, axis), self.ndim), pick_keepdim(keepdim, keepdims))

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """The maximum over one or several dimensions (ties share the gradient evenly)."""
        return Max.apply(self, normalize_axis(dim, self.ndim), keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return Min.apply(self, normalize_axis(dim, self.ndim), keepdim)

    def max(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Any:
        """No dim: the largest element. ``max(dim)``: ``(values, indices)``. ``max(other)``: elementwise."""
        dim = pick_dim(dim, axis)
        if isinstance(dim, Tensor):
            return Maximum.apply(self, dim)
        if dim is None:
            return Max.apply(self, None, False)
        return _extreme(self, dim, pick_keepdim(keepdim, keepdims), "max")

    def min(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Any:
        """No dim: the smallest element. ``min(dim)``: ``(values, indices)``. ``min(other)``: elementwise."""
        dim = pick_dim(dim, axis)
        if isinstance(dim, Tensor):
            return Minimum.apply(self, dim)
        if dim is None:
            return Min.apply(self, None, False)
        return _extreme(self, dim, pick_keepdim(keepdim, keepdims), "min")

    def maximum(self, other: Any) -> Tensor:
        return Maximum.apply(self, other)

    def minimum(self, other: Any) -> Tensor:
        return Minimum.apply(self, other)

    def argmax(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
               keepdims: bool | None = None) -> Tensor:
        return _arg(self, pick_dim(dim, axis), pick_keepdim(keepdim, keepdims), "argmax")

    def argmin(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
               keepdims: bool | None = None) -> Tensor:
        return _arg(self, pick_dim(dim, axis), pick_keepdim(keepdim, keepdims), "argmin")

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None, axis: Any = None, keepdims: bool | None = None) -> Tensor:
        """sum((x - mean)^2) / (N - correction); correction 1 (``unbiased=True``) by default."""
        if isinstance(dim, bool):  # PyTorch's old form x.var(False)
            dim, unbiased = None, dim
        if unbiased is not None and correction is not None:
            raise TypeError("pass unbiased or correction, not both")
        if correction is None:
            correction = 0 if unbiased is False else 1
        axes = normalize_axis(pick_dim(dim, axis), self.ndim)
        return Var.apply(self, axes, correction, pick_keepdim(keepdim, keepdims))

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None, axis: Any = None, keepdims: bool | None = None) -> Tensor:
        """The square root of ``var`` (same arguments)."""
        return self.var(dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims) ** 0.5

    def any(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Tensor:
        axes = normalize_axis(pick_dim(dim, axis), self.ndim)
        xp = get_array_module(self.array)
        return Tensor._wrap(xp.asarray(self.array.any(axis=axes, keepdims=pick_keepdim(keepdim, keepdims))))

    def all(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Tensor:
        axes = normalize_axis(pick_dim(dim, axis), self.ndim)
        xp = get_array_module(self.array)
        return Tensor._wrap(xp.asarray(self.array.all(axis=axes, keepdims=pick_keepdim(keepdim, keepdims))))

    def softmax(self, dim: int = -1, *, axis: int | None = None) -> Tensor:
        return Softmax.apply(self, check_dim(pick_dim(dim, axis), self.ndim))

    def log_softmax(self, dim: int = -1, *, axis: int | None = None) -> Tensor:
        return LogSoftmax.apply(self, check_dim(pick_dim(dim, axis), self.ndim))
