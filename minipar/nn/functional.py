"""Stateless functions behind the layers: activations, softmax and losses.

The layers' own functions live beside their modules (``conv2d`` in conv.py,
``gelu`` in activation.py, ...) and are gathered here under PyTorch's names.

``log_softmax`` and ``cross_entropy`` subtract the row maximum before
exponentiating (log-sum-exp trick), so logits of any size never overflow:
log softmax(z)_i = (z_i - m) - log sum_j exp(z_j - m), with m = max_j z_j.
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.activation import gelu, relu, sigmoid, tanh
from minipar.nn.conv import conv2d
from minipar.nn.dropout import dropout
from minipar.nn.embedding import embedding
from minipar.nn.linear import linear
from minipar.nn.normalization import layer_norm
from minipar.nn.pooling import max_pool2d
from minipar.ops.softmax import LogSoftmax, Softmax
from minipar.ops.softmax import log_softmax_array as _log_softmax
from minipar.tensor import Tensor

__all__ = [
    "conv2d", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax",
    "max_pool2d", "mse_loss", "relu", "sigmoid", "softmax", "tanh",
]


def log_softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``log(softmax(x))`` along ``dim`` (default -1) computed stably (``ops/softmax.py``)."""
    return LogSoftmax.apply(x, _dim(dim, axis))


def softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    return Softmax.apply(x, _dim(dim, axis))


def _dim(dim: int | None, axis: int | None) -> int:
    if dim is not None and axis is not None:
        raise TypeError(f"pass dim or its NumPy alias axis, not both (got dim={dim}, axis={axis})")
    chosen = axis if dim is None else dim
    return -1 if chosen is None else chosen


class CrossEntropy(Function):
    """Mean (or sum) over the batch of -log softmax(logits)[target].

    logits: (N, C) floats; targets: (N,) integers in [0, C).
    Gradient: (softmax(logits) - onehot(targets)) / N.
    """

    @staticmethod
    def forward(ctx: Any, logits: Any, targets: Any, reduction: str) -> Any:
        xp = get_array_module(logits)
        log_probs = _log_softmax(logits, axis=1)
        rows = xp.arange(logits.shape[0])
        losses = -log_probs[rows, targets]  # (N,)
        ctx.reduction = reduction
        ctx.save_for_backward(log_probs, targets)
        if reduction == "none":
            return losses
        total = losses.sum() if reduction == "sum" else losses.mean()
        return xp.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        log_probs, targets = ctx.saved_tensors
        xp = get_array_module(log_probs)
        n = log_probs.shape[0]
        grad_logits = xp.exp(log_probs)  # softmax, a fresh array we may write into
        grad_logits[xp.arange(n), targets] -= 1
        if ctx.reduction == "none":
            grad_logits *= grad[:, None]
        else:
            scale = grad / n if ctx.reduction == "mean" else grad
            grad_logits *= scale
        return grad_logits, None, None


def cross_entropy(logits: Tensor, targets: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy against integer class targets (``torch.nn.functional``'s)."""
    target_array = targets.array if isinstance(targets, Tensor) else targets
    xp = get_array_module(logits.array)
    target_array = xp.asarray(target_array)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {tuple(logits.shape)}")
    if target_array.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy expects integer class targets, got dtype {target_array.dtype}"
        )
    if target_array.shape != (logits.shape[0],):
        raise ValueError(
            f"cross_entropy expects targets of shape ({logits.shape[0]},) for logits "
            f"{tuple(logits.shape)}, got {tuple(target_array.shape)}"
        )
    if target_array.size and (target_array.min() < 0 or target_array.max() >= logits.shape[1]):
        raise ValueError(
            f"cross_entropy targets must lie in [0, {logits.shape[1]}), got values from "
            f"{int(target_array.min())} to {int(target_array.max())}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return CrossEntropy.apply(logits, target_array, reduction)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error; shapes must match exactly (no silent broadcasting)."""
    target_shape = tuple(getattr(target, "shape", ()))
    if tuple(input.shape) != target_shape:
        raise ValueError(
            f"mse_loss expects input and target of the same shape, got {tuple(input.shape)} "
            f"and {target_shape}"
        )
    diff = input - target
    squared = diff * diff
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum()
    if reduction == "none":
        return squared
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
