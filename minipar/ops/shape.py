"""Operations that move elements around: reshape, transpose, indexing, cat, matmul."""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.autograd.grad_mode import modes
from minipar.backend import get_array_module
from minipar.tensor import Tensor


class Reshape(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) into {shape}"
            ) from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return grad.reshape(ctx.shape), None


class Transpose(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, axes: tuple[int, ...] | None) -> Any:
        ndim = max(a.ndim, 1)
        if axes is not None and sorted(axis % ndim for axis in axes) != list(range(a.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation of {a.ndim} axes")
        ctx.axes = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        if ctx.axes is None:
            return grad.transpose(), None
        xp = get_array_module(grad)
        inverse = tuple(int(i) for i in xp.argsort(xp.asarray([a % grad.ndim for a in ctx.axes])))
        return grad.transpose(inverse), None


def _is_basic(index: Any) -> bool:
    """True for ints, slices, None and Ellipsis: selections that never repeat an element."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    """``a[index]``; an integer array may pick an element twice, so backward uses add.at."""

    @staticmethod
    def forward(ctx: Any, a: Any, index: Any) -> Any:
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        try:
            return get_array_module(a).asarray(a[index])
        except IndexError as error:
            raise IndexError(f"index {index!r} is invalid for shape {a.shape}: {error}") from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        full = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_basic(ctx.index):
            full[ctx.index] = grad
        else:
            xp.add.at(full, ctx.index, grad)  # repeated indices add up
        return full, None


class Cat(Function):
    """Join tensors along an existing axis; backward hands each its slice."""

    @staticmethod
    def forward(ctx: Any, axis: int, *arrays: Any) -> Any:
        xp = get_array_module(arrays[0])
        ctx.axis = axis
        ctx.bounds = [0]
        for array in arrays:
            ctx.bounds.append(ctx.bounds[-1] + array.shape[axis])
        try:
            return xp.concatenate(arrays, axis=axis)
        except ValueError:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"cat along axis {axis}: shapes {shapes} differ off that axis") from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        pieces: list[Any] = [None]
        for start, stop in zip(ctx.bounds[:-1], ctx.bounds[1:]):
            index = [slice(None)] * grad.ndim
            index[ctx.axis] = slice(start, stop)
            pieces.append(grad[tuple(index)])
        return tuple(pieces)


class MatMul(Function):
    """``a @ b`` with NumPy's rules (1-D vectors, broadcast batch dimensions).

    For 2-D: out = a @ b, so d(a) = grad @ b.T and d(b) = a.T @ grad.
    """

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        if not (hasattr(a, "ndim") and hasattr(b, "ndim")):
            raise TypeError(f"matmul needs tensors or arrays, got {type(a).__name__} and {type(b).__name__}")
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} do not match: "
                f"{a.shape[-1]} (last of the first) != {b.shape[-2 if b.ndim > 1 else 0]} "
                "(second-to-last of the second)"
            )
        ctx.save_for_backward(a, b)
        try:
            return a @ b
        except ValueError:
            raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} do not broadcast") from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # the common case
            return (grad @ b.T if need_a else None,   # (n, m) @ (m, k) -> (n, k)
                    a.T @ grad if need_b else None)   # (k, n) @ (n, m) -> (k, m)
        from minipar.ops.elementwise import unbroadcast

        a2 = a[None, :] if a.ndim == 1 else a          # vectors become 1 x k or k x 1
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = grad  # give grad back the axes the vectors lost: (..., m, p)
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        grad_a = grad_b = None
        if need_a:
            grad_a = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if need_b:
            grad_b = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape)
        return grad_a, grad_b


def _unwrap_index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(i.array if isinstance(i, Tensor) else i for i in index)
    return index


def getitem(a: Tensor, index: Any) -> Tensor:
    return GetItem.apply(a, _unwrap_index(index))


def reshape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    return Reshape.apply(a, tuple(shape))


def transpose(a: Tensor, axes: tuple[int, ...] | None) -> Tensor:
    return Transpose.apply(a, axes)


def matmul(a: Any, b: Any) -> Tensor:
    cast = modes.autocast
    if cast is not None:  # inside minipar.amp.autocast: compute in its dtype (e.g. float16)
        a, b = cast(a), cast(b)
    return MatMul.apply(a, b)


def _check_items(tensors: Any, who: str) -> None:
    if len(tensors) == 0:
        raise ValueError(f"{who} needs at least one tensor")
    for position, t in enumerate(tensors):
        if not (hasattr(t, "shape") and hasattr(t, "dtype")):
            raise TypeError(f"{who}: item {position} must be a Tensor or array, got {type(t).__name__}")


def _dim_or_axis(dim: int | None, axis: int | None, who: str) -> int:
    if dim is not None and axis is not None:
        raise TypeError(f"{who}: pass dim or its NumPy alias axis, not both (got dim={dim}, axis={axis})")
    return 0 if dim is None and axis is None else int(axis if dim is None else dim)


def cat(tensors: list[Any] | tuple[Any, ...], dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """Concatenate along ``dim`` (``torch.cat``; NumPy's ``axis`` accepted)."""
    axis = _dim_or_axis(dim, axis, "cat")
    _check_items(tensors, "cat")
    return Cat.apply(axis, *tensors)


def stack(tensors: list[Any] | tuple[Any, ...], dim: int | None = None, *, axis: int | None = None
          ) -> Tensor:
    """Stack along a new dimension ``dim`` (``torch.stack``; NumPy's ``axis`` accepted)."""
    axis = _dim_or_axis(dim, axis, "stack")
    _check_items(tensors, "stack")
    expanded = []
    for t in tensors:
        shape = list(t.shape)
        position = axis if axis >= 0 else len(shape) + 1 + axis
        shape.insert(position, 1)
        expanded.append(reshape(t, tuple(shape)) if isinstance(t, Tensor) else t.reshape(shape))
    return cat(expanded, axis=axis)
