"""Operations that choose, copy or mask elements: where, clamp, maximum, expand, repeat,
gather along a dimension, tril/triu, and the integer-friendly ``%`` and ``//``.

Each backward routes the gradient to the elements the forward chose:

    where(c, a, b):    d a = g * c,             d b = g * (not c)
    clamp(x, lo, hi):  d x = g * (lo <= x <= hi)              (PyTorch's inclusive mask)
    maximum(a, b):     d a = g * ([a > b] + [a == b] / 2)     (ties split, as PyTorch)
    expand / repeat:   d x = g summed over the copies
    take_along(x, i):  d x = zeros with g added at the indices i
    tril / triu:       d x = g * the same triangular mask
    a % b = a - b floor(a / b):  d a = g, d b = -g floor(a / b)
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.ops.elementwise import unbroadcast


def _shape(value: Any) -> tuple[int, ...]:
    return value.shape if hasattr(value, "shape") else ()


class Where(Function):
    @staticmethod
    def forward(ctx: Any, condition: Any, a: Any, b: Any) -> Any:
        xp = get_array_module(condition)
        ctx.condition, ctx.shapes = condition, (_shape(a), _shape(b))
        return xp.asarray(xp.where(condition, a, b))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[None, Any, Any]:
        xp = get_array_module(grad)
        _, need_a, need_b = ctx.needs_input_grad
        zero = xp.zeros((), dtype=grad.dtype)
        return (None,
                unbroadcast(xp.where(ctx.condition, grad, zero), ctx.shapes[0]) if need_a else None,
                unbroadcast(xp.where(ctx.condition, zero, grad), ctx.shapes[1]) if need_b else None)


class Clamp(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, low: Any, high: Any) -> Any:
        xp = get_array_module(a)
        inside = xp.ones(a.shape, dtype=bool)
        if low is not None:
            inside &= a >= low
        if high is not None:
            inside &= a <= high
        ctx.inside = inside
        return xp.asarray(xp.clip(a, low, high)).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        return grad * ctx.inside, None, None


class Maximum(Function):
    """Elementwise max of two tensors (``torch.maximum``, ``torch.max(a, b)``); ``Minimum`` flips it."""

    pick = "maximum"

    @classmethod
    def forward(cls, ctx: Any, a: Any, b: Any) -> Any:
        xp = get_array_module(a)
        out = getattr(xp, cls.pick)(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b, out = ctx.saved_tensors
        tie = (a == b) * 0.5
        share_a = (a == out) - tie  # 1 where a won, 1/2 at a tie, 0 where b won
        share_b = (b == out) - tie
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad * share_a, _shape(a)) if need_a else None,
                unbroadcast(grad * share_b, _shape(b)) if need_b else None)


class Minimum(Maximum):
    pick = "minimum"


class Expand(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.shape = a.shape
        try:
            return get_array_module(a).broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: a tensor of shape {a.shape} cannot be expanded to {shape} "
                             "(only dimensions of length 1 stretch)") from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return unbroadcast(grad, ctx.shape), None


class Repeat(Function):
    """``x.repeat(r0, r1, ...)``: tile the tensor r_i times along dimension i."""

    @staticmethod
    def forward(ctx: Any, a: Any, repeats: tuple[int, ...]) -> Any:
        if len(repeats) < a.ndim:
            raise ValueError(f"repeat needs at least {a.ndim} counts for a {a.ndim}-D tensor, got {repeats}")
        ctx.input_shape = a.shape
        ctx.shape = (1,) * (len(repeats) - a.ndim) + a.shape  # NumPy's tile pads the shape with 1s
        return get_array_module(a).tile(a, repeats)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        # grad is (r0 * n0, r1 * n1, ...): view it as (r0, n0, r1, n1, ...) and sum the r axes
        split = [n for full, length in zip(grad.shape, ctx.shape) for n in (full // max(length, 1), length)]
        summed = grad.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return summed.reshape(ctx.input_shape), None


class TakeAlong(Function):
    """``take_along_dim(x, indices, dim)``: out[..., i, ...] = x[..., indices[..., i, ...], ...]."""

    @staticmethod
    def forward(ctx: Any, a: Any, indices: Any, axis: int) -> Any:
        ctx.shape, ctx.indices, ctx.axis = a.shape, indices, axis
        return get_array_module(a).take_along_axis(a, indices, axis=axis)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        full = xp.zeros(ctx.shape, dtype=grad.dtype)
        xp.put_along_axis(full, ctx.indices, grad, axis=ctx.axis)  # one index per slice: no repeats
        return full, None, None


class Triangle(Function):
    """``tril`` (upper=False) or ``triu`` of the last two dimensions, offset by ``diagonal``."""

    @staticmethod
    def forward(ctx: Any, a: Any, diagonal: int, upper: bool) -> Any:
        if a.ndim < 2:
            raise ValueError(f"{'triu' if upper else 'tril'} needs a tensor of at least 2 dimensions, "
                             f"got shape {a.shape}")
        xp = get_array_module(a)
        rows, cols = a.shape[-2:]
        keep = xp.tri(rows, cols, diagonal - 1 if upper else diagonal, dtype=bool)
        ctx.keep = ~keep if upper else keep
        return xp.where(ctx.keep, a, xp.zeros((), dtype=a.dtype))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        return grad * ctx.keep, None, None


class Remainder(Function):
    """``a % b`` with the sign of ``b`` (Python's, NumPy's and PyTorch's rule)."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a % b

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad, _shape(a)) if need_a else None,
                unbroadcast(-grad * get_array_module(grad).floor(a / b), _shape(b)) if need_b else None)


class FloorDivide(Function):
    """``a // b``: piecewise constant, so its gradient is zero (PyTorch raises in backward instead)."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.shapes = (_shape(a), _shape(b))
        return a // b

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        xp = get_array_module(grad)
        return tuple(xp.zeros(shape, dtype=grad.dtype) if need else None
                     for shape, need in zip(ctx.shapes, ctx.needs_input_grad))


class Contiguous(Function):
    """A C-ordered copy of a strided view (``x.contiguous()``); the gradient passes unchanged."""

    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        return get_array_module(a).ascontiguousarray(a)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad
