"""softmax and log_softmax along one dimension, computed stably.

    log_softmax(z)_i = (z_i - max z) - log sum_j exp(z_j - max z)
    softmax(z)       = exp(log_softmax(z))

Backward (g the upstream gradient, s = softmax(z), sums along the same dimension):

    d log_softmax: g - s * sum(g)
    d softmax:     s * (g - sum(g * s))
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module


def log_softmax_array(z: Any, axis: int) -> Any:
    """log softmax of an array (no graph): shift by the maximum, then subtract log-sum-exp."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx: Any, z: Any, axis: int) -> Any:
        out = log_softmax_array(z, axis)
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        (out,) = ctx.saved_tensors
        xp = get_array_module(out)
        return grad - xp.exp(out) * grad.sum(axis=ctx.axis, keepdims=True), None


class Softmax(Function):
    @staticmethod
    def forward(ctx: Any, z: Any, axis: int) -> Any:
        out = get_array_module(z).exp(log_softmax_array(z, axis))
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        (out,) = ctx.saved_tensors
        return out * (grad - (grad * out).sum(axis=ctx.axis, keepdims=True)), None
