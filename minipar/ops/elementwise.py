"""Elementwise operations with NumPy broadcasting.

Broadcasting in forward means summing in backward: if ``a`` of shape (3, 1)
is added to ``b`` of shape (4,), the result is (3, 4), and ``a``'s gradient is
the (3, 4) gradient summed over axis 1 (kept) -- ``unbroadcast`` does that.
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module, to_device
from minipar.tensor import Tensor


def unwrap(value: Any) -> Any:
    """The array behind a tensor; anything else unchanged."""
    return value.array if isinstance(value, Tensor) else value


def unbroadcast(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:  # leading axes that broadcasting added
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:  # axes of length 1 that broadcasting stretched
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _shape(value: Any) -> tuple[int, ...]:
    return value.shape if hasattr(value, "shape") else ()


def _broadcast_error(name: str, a: Any, b: Any) -> ValueError:
    return ValueError(
        f"{name}: shapes {_shape(a)} and {_shape(b)} cannot be broadcast together "
        "(NumPy rules: trailing dimensions must be equal or 1)"
    )


class Add(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.shapes = (_shape(a), _shape(b))
        try:
            return a + b
        except ValueError:
            raise _broadcast_error("add", a, b) from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad, ctx.shapes[0]) if need_a else None,
                unbroadcast(grad, ctx.shapes[1]) if need_b else None)


class Sub(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.shapes = (_shape(a), _shape(b))
        try:
            return a - b
        except ValueError:
            raise _broadcast_error("sub", a, b) from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad, ctx.shapes[0]) if need_a else None,
                unbroadcast(-grad, ctx.shapes[1]) if need_b else None)


class Mul(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        try:
            return a * b
        except ValueError:
            raise _broadcast_error("mul", a, b) from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad * b, _shape(a)) if need_a else None,
                unbroadcast(grad * a, _shape(b)) if need_b else None)


class Div(Function):
    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        try:
            return a / b
        except ValueError:
            raise _broadcast_error("div", a, b) from None

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        grad_a = grad / b if need_a or need_b else None
        # d(a/b)/db = -a / b^2 = -(grad/b) * a / b
        return (unbroadcast(grad_a, _shape(a)) if need_a else None,
                unbroadcast(-grad_a * a / b, _shape(b)) if need_b else None)


class Pow(Function):
    """``a ** b``; ``b`` is usually a Python number, but tensors work too."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        try:
            out = a ** b
        except ValueError:
            raise _broadcast_error("pow", a, b) from None
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        a, b, out = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        grad_a = grad_b = None
        if need_a:  # b * a^(b-1)
            grad_a = unbroadcast(grad * b * a ** (b - 1), _shape(a))
        if need_b:  # a^b * log(a)
            xp = get_array_module(out)
            grad_b = unbroadcast(grad * out * xp.log(a), _shape(b))
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        return -a

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return -grad


class Exp(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        out = get_array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        ctx.save_for_backward(a)
        return get_array_module(a).log(a)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad / ctx.saved_tensors[0]


class ReLU(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        out = get_array_module(a).maximum(a, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad * (ctx.saved_tensors[0] > 0)  # gradient 0 at the kink, as PyTorch


class Tanh(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        out = get_array_module(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        out = ctx.saved_tensors[0]
        local = out * out  # one temporary, updated in place: 1 - tanh^2, times grad
        get_array_module(local).subtract(1, local, out=local)
        local *= grad
        return local


class Sigmoid(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        xp = get_array_module(a)
        # 1/(1+e^-a) for a >= 0 and e^a/(1+e^a) for a < 0: neither overflows
        e = xp.exp(-xp.abs(a))
        out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        out = ctx.saved_tensors[0]
        return grad * out * (1 - out)


class Abs(Function):
    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        ctx.save_for_backward(a)
        return get_array_module(a).abs(a)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad * get_array_module(grad).sign(ctx.saved_tensors[0])


class Cast(Function):
    """Change dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx: Any, a: Any, dtype: Any) -> Any:
        ctx.dtype = a.dtype
        return a.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return grad.astype(ctx.dtype, copy=False), None


class ToDevice(Function):
    """Move between CPU and GPU; the gradient moves back."""

    @staticmethod
    def forward(ctx: Any, a: Any, device: str) -> Any:
        ctx.device = "cpu" if get_array_module(a).__name__ == "numpy" else "cuda"
        return to_device(a, device)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return to_device(grad, ctx.device), None


def add(a: Any, b: Any) -> Tensor:
    return Add.apply(a, b)


def sub(a: Any, b: Any) -> Tensor:
    return Sub.apply(a, b)


def mul(a: Any, b: Any) -> Tensor:
    return Mul.apply(a, b)


def div(a: Any, b: Any) -> Tensor:
    return Div.apply(a, b)


def power(a: Any, b: Any) -> Tensor:
    return Pow.apply(a, b)
