"""``Linear``: y = x W^T + b, with W of shape (out, in) as in PyTorch."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.autograd.grad_mode import modes
from minipar.nn.module import Module, Parameter
from minipar.random import generator
from minipar.tensor import Tensor


class LinearFunction(Function):
    """One fused op for x @ W.T + b, so backward makes no extra temporaries.

    x: (..., in), W: (out, in), b: (out,) -> (..., out)
    """

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any) -> Any:
        ctx.save_for_backward(x, weight)
        out = x @ weight.T  # (..., in) @ (in, out) -> (..., out)
        if bias is not None:
            if bias.dtype == out.dtype:
                out += bias  # in place: no second (..., out) array
            else:
                out = out + bias
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, Any]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad2 = grad.reshape(-1, grad.shape[-1])  # (N, out), N = prod of leading dims
        grad_x = grad @ weight if need_x else None  # (..., out) @ (out, in) -> (..., in)
        grad_w = grad2.T @ x.reshape(-1, x.shape[-1]) if need_w else None  # (out, N) @ (N, in)
        grad_b = grad2.sum(axis=0) if need_b else None  # (out,)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``; the last dimension of x must equal weight's second."""
    in_features = weight.shape[1]
    if x.shape[-1:] != (in_features,):
        raise ValueError(
            f"linear: expected input with last dimension {in_features} "
            f"(weight {tuple(weight.shape)}), got input of shape {tuple(x.shape)}"
        )
    cast = modes.autocast
    if cast is not None:  # inside minipar.amp.autocast: compute in its dtype (e.g. float16)
        x, weight, bias = cast(x), cast(weight), cast(bias)
    return LinearFunction.apply(x, weight, bias)


def linear_init(in_features: Any, out_features: Any, bias: bool, dtype: Any,
                who: str = "Linear") -> tuple[Any, Any]:
    """A Linear layer's (out, in) weight and (out,) bias as PyTorch draws them:
    W, b ~ U(-1/sqrt(in), 1/sqrt(in)), from minipar's generator (the bias None without one).
    The tensor-parallel layers draw the same full arrays and keep their block."""
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{who} {name} must be a positive integer, got {value!r}")
    in_features, out_features = int(in_features), int(out_features)
    bound = 1 / math.sqrt(in_features)
    rng = generator()
    weight = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
    return weight, (rng.uniform(-bound, bound, (out_features,)).astype(dtype) if bias else None)


class Linear(Module):
    """Fully connected layer y = x W^T + b. Init as PyTorch (``linear_init``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        weight, bias_array = linear_init(in_features, out_features, bias, dtype)
        self.out_features, self.in_features = weight.shape
        self.weight = Parameter(weight)
        self.bias = Parameter(bias_array) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"Linear(in_features={self.in_features}) expected input whose last dimension "
                f"is {self.in_features}, got shape {tuple(x.shape)}"
            )
        cast = modes.autocast
        if cast is not None:  # inside minipar.amp.autocast: compute in its dtype (e.g. float16)
            return LinearFunction.apply(cast(x), cast(self.weight), cast(self.bias))
        return LinearFunction.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
