"""``one_hot``, ``pad`` and ``normalize``, with PyTorch's arguments.

- ``one_hot(t, num_classes=-1)``: int64, shape (*t.shape, C), out[..., t] = 1.
- ``pad(x, pad, value=0)``: ``pad`` lists (before, after) pairs starting from the
  *last* dimension: ``(1, 2)`` pads the last dimension, ``(1, 1, 2, 2)`` the last two.
  A negative amount crops. Backward crops (and re-pads) the gradient the other way.
- ``normalize(x, p=2, dim=1, eps=1e-12)``: x / max(||x||_p, eps) along ``dim``.
  With n = ||x||_p > eps:  dx = g / n - sum(g * x) / n^2 * dn/dx  (sums along ``dim``),
  dn/dx = sign(x) |x|^(p-1) / n^(p-1); where n <= eps the divisor is the constant eps: dx = g / eps.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.softmax_layers import softmax_dim
from minipar.tensor import Tensor


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """Class indices -> rows of zeros with a one at the index (int64, like PyTorch)."""
    indices = tensor.array if isinstance(tensor, Tensor) else tensor
    xp = get_array_module(indices)
    indices = xp.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot expects integer class indices, got dtype {indices.dtype}")
    if indices.size and indices.min() < 0:
        raise ValueError(f"one_hot class indices must be >= 0, got {int(indices.min())}")
    largest = int(indices.max()) if indices.size else -1
    if num_classes == -1:
        if not indices.size:
            raise ValueError("one_hot of an empty tensor needs num_classes")
        num_classes = largest + 1
    if largest >= num_classes:
        raise ValueError(f"one_hot class values must be smaller than num_classes={num_classes}, "
                         f"got {largest}")
    out = xp.zeros((*indices.shape, num_classes), dtype=np.int64)
    xp.put_along_axis(out, indices[..., None].astype(np.intp), 1, axis=-1)
    return Tensor(out)


def _pad_pairs(pad: Any, ndim: int) -> list[tuple[int, int]]:
    """One (before, after) pair per dimension of the input, first dimension first."""
    amounts = tuple(pad)
    if len(amounts) % 2 or len(amounts) // 2 > ndim or not all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in amounts):
        raise ValueError(f"pad must be an even number (at most {2 * ndim}) of integers, got {pad!r}")
    pairs = [(0, 0)] * ndim
    for k in range(len(amounts) // 2):  # k = 0 is the last dimension
        pairs[ndim - 1 - k] = (int(amounts[2 * k]), int(amounts[2 * k + 1]))
    return pairs


def _crop(pairs: list[tuple[int, int]], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The slices that cut ``max(-amount, 0)`` off each side."""
    return tuple(slice(max(-lo, 0), size - max(-hi, 0)) for (lo, hi), size in zip(pairs, shape))


class PadFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, pairs: list[tuple[int, int]], value: float) -> Any:
        xp = get_array_module(x)
        cropped = x[_crop(pairs, x.shape)]
        grow = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
        out = xp.full(tuple(n + lo + hi for n, (lo, hi) in zip(cropped.shape, grow)), value, dtype=x.dtype)
        out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(cropped.shape, grow))] = cropped
        ctx.pairs, ctx.x_shape = pairs, x.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        inverse = [(-lo, -hi) for lo, hi in ctx.pairs]  # crop what was added, zeros where cropped
        inner = grad[_crop(inverse, grad.shape)]
        grad_x = xp.zeros(ctx.x_shape, dtype=grad.dtype)
        grad_x[_crop(ctx.pairs, ctx.x_shape)] = inner
        return grad_x, None, None


def pad(input: Tensor, pad: Any, mode: str = "constant", value: Any = None) -> Tensor:
    """PyTorch's ``F.pad`` in ``"constant"`` mode (``value`` defaults to 0); negative pads crop."""
    if mode != "constant":
        raise ValueError(f"minipar's pad implements mode='constant' only, got mode={mode!r}")
    pairs = _pad_pairs(pad, input.ndim)
    for (lo, hi), size in zip(pairs, input.shape):
        if size + lo + hi < 0 or max(-lo, 0) + max(-hi, 0) > size:
            raise ValueError(f"pad {tuple(pad)} crops more than the input {tuple(input.shape)} holds")
    return PadFunction.apply(input, pairs, 0.0 if value is None else value)


class NormalizeFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, p: float, dim: int, eps: float) -> Any:
        xp = get_array_module(x)
        size = xp.abs(x)
        if p == 2:
            norm = xp.sqrt((x * x).sum(axis=dim, keepdims=True))
        elif p == float("inf"):
            norm = size.max(axis=dim, keepdims=True)
        else:
            norm = (size ** p).sum(axis=dim, keepdims=True) ** (1 / p)
        divisor = xp.maximum(norm, eps)
        ctx.p, ctx.dim, ctx.eps = p, dim, eps
        ctx.save_for_backward(x, norm, divisor)
        return x / divisor

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
        xp = get_array_module(grad)
        x, norm, divisor = ctx.saved_tensors
        p, dim = ctx.p, ctx.dim
        if p == float("inf"):  # d||x||_inf / dx: sign(x) at the maxima, split between ties
            is_max = xp.abs(x) == norm
            dnorm = xp.sign(x) * is_max / is_max.sum(axis=dim, keepdims=True)
        elif p == 2:
            dnorm = x / xp.where(norm > 0, norm, 1)
        else:  # d||x||_p / dx = sign(x) |x|^(p-1) / ||x||^(p-1)
            dnorm = xp.sign(x) * xp.abs(x) ** (p - 1) / xp.where(norm > 0, norm, 1) ** (p - 1)
        through_norm = (norm > ctx.eps) * (grad * x).sum(axis=dim, keepdims=True) / (divisor * divisor)
        return grad / divisor - through_norm * dnorm, None, None, None


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    """x / max(||x||_p, eps) along ``dim`` (unit vectors), as PyTorch's ``F.normalize``."""
    if out is not None:
        raise ValueError("minipar's normalize does not write into out=; it returns a new tensor")
    if not (isinstance(p, numbers.Real) and p > 0):
        raise ValueError(f"normalize p must be a positive number, got {p!r}")
    return NormalizeFunction.apply(input, float(p), softmax_dim(input, dim, None, "normalize"), float(eps))
