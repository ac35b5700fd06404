"""SiLU and LeakyReLU, as functions and as layers.

    silu(x) = x * sigmoid(x)             (Elfwing et al., 2017; "swish" with beta = 1)
        d/dx = s (1 + x (1 - s)),  s = sigmoid(x)
    leaky_relu(x) = x if x > 0 else negative_slope * x
        d/dx = 1 if x > 0 else negative_slope   (at 0: negative_slope, as PyTorch)

``inplace=True`` is accepted and computed out of place: the values are PyTorch's; only
the input tensor is left unchanged (autograd here never needs the in-place saving).
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.module import Module
from minipar.tensor import Tensor


def _sigmoid(x: Any) -> Any:
    """1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: neither overflows."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class SiLUFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        s = _sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        x, s = ctx.saved_tensors
        return grad * (s * (1 + x * (1 - s)))


class LeakyReLUFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, negative_slope: float) -> Any:
        positive = x > 0
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(positive)
        return get_array_module(x).where(positive, x, x * negative_slope)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        (positive,) = ctx.saved_tensors
        return get_array_module(grad).where(positive, grad, grad * ctx.negative_slope), None


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    return SiLUFunction.apply(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, ``negative_slope * x`` elsewhere."""
    return LeakyReLUFunction.apply(input, float(negative_slope))


class SiLU(Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return SiLUFunction.apply(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return LeakyReLUFunction.apply(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"
