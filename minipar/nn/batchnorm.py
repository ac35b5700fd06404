"""``BatchNorm1d`` / ``BatchNorm2d`` (Ioffe & Szegedy, 2015): normalise each channel over the batch.

For channel c, over the m = N * (spatial size) values of the batch (axes 0, 2, 3, ...):

    mean = S1 / m,   var = S2 / m - mean^2  (biased),   S1 = sum x,  S2 = sum x^2
    x_hat = (x - mean) / sqrt(var + eps),   y = weight * x_hat + bias

In training the batch statistics are used and the running ones updated (PyTorch's rule):

    running_mean <- (1 - momentum) running_mean + momentum * mean
    running_var  <- (1 - momentum) running_var  + momentum * var * m / (m - 1)   (unbiased)
    momentum=None: a cumulative average, momentum = 1 / num_batches_tracked

In eval mode (with running statistics) the running ones are used and nothing changes.

Backward (training), with g_hat = dL/dy * weight and sums over the same m values:

    dL/dx = rstd * (g_hat - sum(g_hat) / m - x_hat * sum(g_hat * x_hat) / m)
    dL/dweight = sum(dL/dy * x_hat),   dL/dbias = sum(dL/dy)

The statistics are written as sums (S1, S2, m; sum(g_hat), sum(g_hat x_hat)) so that
``SyncBatchNorm`` (minipar/parallel/sync_batchnorm.py) is this same code with one
all-reduce of those sums in forward and one in backward: the ``allreduce`` argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.module import Module, Parameter
from minipar.tensor import Tensor

SumAllReduce = Callable[[Any], Any]  # sums an array over the ranks, in place; returns it


def _channel_axes(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


def _per_channel(values: Any, ndim: int) -> Any:
    """(C,) -> (1, C, 1, ...) to broadcast against (N, C, ...)."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def batch_statistics(x: Any, allreduce: SumAllReduce | None = None) -> tuple[Any, Any, int]:
    """Per-channel (mean, biased var, count m) of x (N, C, ...), over every rank when given
    ``allreduce``: one all-reduce of [S1 (C), S2 (C), m]."""
    xp = get_array_module(x)
    axes = _channel_axes(x.ndim)
    channels = x.shape[1]
    sums = xp.concatenate([x.sum(axis=axes), (x * x).sum(axis=axes),
                           xp.asarray([x.size // channels], dtype=x.dtype)])
    if allreduce is not None:
        sums = allreduce(sums)
    count = int(sums[-1])
    mean = sums[:channels] / count
    var = xp.maximum(sums[channels:2 * channels] / count - mean * mean, 0)  # rounding may dip below 0
    return mean, var, count


class BatchNormFunction(Function):
    """y = weight * (x - mean) * rstd + bias; ``batch=True`` when mean/var are x's own statistics
    (then the gradient flows through them, summed over ranks by ``allreduce``)."""

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, mean: Any, var: Any, count: int,
                eps: float, batch: bool, allreduce: SumAllReduce | None) -> Any:
        xp = get_array_module(x)
        rstd = 1 / xp.sqrt(var + eps)  # (C,)
        x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(rstd, x.ndim)
        ctx.count, ctx.batch, ctx.allreduce = count, batch, allreduce
        ctx.save_for_backward(x_hat, rstd, weight)
        out = x_hat if weight is None else x_hat * _per_channel(weight, x.ndim)
        return out if bias is None else out + _per_channel(bias, x.ndim)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        xp = get_array_module(grad)
        x_hat, rstd, weight = ctx.saved_tensors
        axes, ndim = _channel_axes(grad.ndim), grad.ndim
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_w:
            grad_w = (grad * x_hat).sum(axis=axes)  # this rank's share (DDP sums the shares)
        if need_b:
            grad_b = grad.sum(axis=axes)
        if need_x:
            grad_hat = grad if weight is None else grad * _per_channel(weight, ndim)
            if not ctx.batch:  # fixed (running) statistics: a per-channel scale
                grad_x = grad_hat * _per_channel(rstd, ndim)
            else:
                sums = xp.concatenate([grad_hat.sum(axis=axes), (grad_hat * x_hat).sum(axis=axes)])
                if ctx.allreduce is not None:
                    sums = ctx.allreduce(sums)
                channels = rstd.shape[0]
                mean_grad = _per_channel(sums[:channels] / ctx.count, ndim)
                mean_grad_x_hat = _per_channel(sums[channels:] / ctx.count, ndim)
                grad_x = _per_channel(rstd, ndim) * (grad_hat - mean_grad - x_hat * mean_grad_x_hat)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


class _BatchNorm(Module):
    """What BatchNorm1d, BatchNorm2d and SyncBatchNorm share; subclasses say which shapes."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
                or num_features <= 0:
            raise ValueError(f"{type(self).__name__} num_features must be a positive integer, "
                             f"got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"{type(self).__name__} eps must be > 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__} momentum must lie in [0, 1] or be None, "
                             f"got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype=dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.array[...] = 1
            self.bias.array[...] = 0

    def _check_input(self, x: Tensor) -> None:
        raise NotImplementedError

    def _allreduce(self) -> SumAllReduce | None:
        """How the batch sums are combined across ranks: not at all, here."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expected {self.num_features} "
                             f"channels (dimension 1), got shape {tuple(x.shape)}")
        use_batch = self.training or self.running_mean is None
        if not use_batch:
            return BatchNormFunction.apply(x, self.weight, self.bias, self.running_mean.astype(x.dtype),
                                           self.running_var.astype(x.dtype), 0, self.eps, False, None)
        allreduce = self._allreduce() if self.training else None
        mean, var, count = batch_statistics(x.array, allreduce)
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"of shape {tuple(x.shape)}")
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        return BatchNormFunction.apply(x, self.weight, self.bias, mean, var, count, self.eps, True,
                                       allreduce)

    def _update_running_stats(self, mean: Any, var: Any, count: int) -> None:
        self.num_batches_tracked += 1
        factor = 1 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1))
        self.running_mean *= 1 - factor  # in place: the arrays state_dict() handed out stay live
        self.running_mean += factor * mean
        self.running_var *= 1 - factor
        self.running_var += factor * unbiased

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input, per channel C."""

    def _check_input(self, x: Tensor) -> None:
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d expected 2-d (N, C) or 3-d (N, C, L) input, got {tuple(x.shape)}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input, per channel C."""

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expected 4-d (N, C, H, W) input, got {tuple(x.shape)}")


def batch_norm(input: Tensor, running_mean: Any, running_var: Any, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """PyTorch's ``F.batch_norm``: batch statistics when ``training`` (updating the running
    arrays in place when given), else the running ones."""
    if input.ndim < 2:
        raise ValueError(f"batch_norm expected input of shape (N, C, ...), got {tuple(input.shape)}")
    running_mean = running_mean.array if isinstance(running_mean, Tensor) else running_mean
    running_var = running_var.array if isinstance(running_var, Tensor) else running_var
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm with training=False needs running_mean and running_var")
        return BatchNormFunction.apply(input, weight, bias, running_mean.astype(input.dtype),
                                       running_var.astype(input.dtype), 0, eps, False, None)
    mean, var, count = batch_statistics(input.array)
    if count <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {tuple(input.shape)}")
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))
    return BatchNormFunction.apply(input, weight, bias, mean, var, count, eps, True, None)
