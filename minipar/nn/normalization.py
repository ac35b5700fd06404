"""``LayerNorm`` (Ba, Kiros & Hinton, 2016): normalise each sample over its last dimensions.

Over the D trailing elements of one sample (the ``normalized_shape``):

    mu = mean(x),  var = mean((x - mu)^2)  (biased, as PyTorch),  rstd = 1 / sqrt(var + eps)
    x_hat = (x - mu) * rstd,   y = x_hat * weight + bias

Backward, with g_hat = dL/dy * weight and means over the same D elements:

    dL/dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dL/dweight = sum over samples of dL/dy * x_hat,   dL/dbias = sum over samples of dL/dy

One fused Function: x_hat and rstd are kept from forward, nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.module import Module, Parameter
from minipar.tensor import Tensor


class LayerNormFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, normalized_ndim: int, eps: float) -> Any:
        xp = get_array_module(x)
        axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
        centered = x - x.mean(axis=axes, keepdims=True)
        var = (centered * centered).mean(axis=axes, keepdims=True)
        rstd = 1 / xp.sqrt(var + eps)
        x_hat = centered * rstd
        ctx.axes = axes
        ctx.save_for_backward(x_hat, rstd, weight)
        out = x_hat if weight is None else x_hat * weight
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, Any, None, None]:
        x_hat, rstd, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        axes = ctx.axes
        leading = tuple(range(grad.ndim - len(axes)))  # the sample axes, summed for weight/bias
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_hat = grad if weight is None else grad * weight
            grad_x = rstd * (grad_hat - grad_hat.mean(axis=axes, keepdims=True)
                             - x_hat * (grad_hat * x_hat).mean(axis=axes, keepdims=True))
        if need_w:
            grad_w = (grad * x_hat).sum(axis=leading)
        if need_b:
            grad_b = grad.sum(axis=leading)
        return grad_x, grad_w, grad_b, None, None


def _check_input(x: Tensor, normalized_shape: tuple[int, ...], who: str) -> None:
    if x.ndim < len(normalized_shape) or tuple(x.shape[x.ndim - len(normalized_shape):]) != normalized_shape:
        raise ValueError(
            f"{who} expected input whose trailing shape is {normalized_shape}, got {tuple(x.shape)}"
        )


def _as_shape(normalized_shape: Any) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (normalized_shape,)
    shape = tuple(normalized_shape)
    if len(shape) == 0 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
        raise ValueError(f"normalized_shape must be positive integers, got {normalized_shape!r}")
    return tuple(int(n) for n in shape)


def layer_norm(x: Tensor, normalized_shape: Any, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """PyTorch's ``F.layer_norm``: normalise over the trailing ``normalized_shape``."""
    shape = _as_shape(normalized_shape)
    _check_input(x, shape, "layer_norm")
    return LayerNormFunction.apply(x, weight, bias, len(shape), eps)


class LayerNorm(Module):
    """``LayerNorm(normalized_shape, eps=1e-5)``; ``weight`` starts at 1, ``bias`` at 0."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        if not eps > 0:
            raise ValueError(f"LayerNorm eps must be > 0, got {eps!r}")
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if elementwise_affine else None
        self.bias = (Parameter(np.zeros(self.normalized_shape, dtype=dtype))
                     if elementwise_affine and bias else None)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.normalized_shape, f"LayerNorm(normalized_shape={self.normalized_shape})")
        return LayerNormFunction.apply(x, self.weight, self.bias, len(self.normalized_shape), self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"
