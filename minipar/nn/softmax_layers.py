"""Softmax and log-softmax along one dimension, as functions and as layers (the
Functions themselves are ``minipar/ops/softmax.py``, shared with ``Tensor.softmax``).

Both subtract the maximum along the dimension before exponentiating (the
log-sum-exp trick), so inputs of any size never overflow:

    log_softmax(z)_i = (z_i - m) - log sum_j exp(z_j - m),   m = max_j z_j
    softmax(z) = exp(log_softmax(z))

Backward, with y the output and g the upstream gradient (sums along the dimension):

    log_softmax:  dz = g - softmax(z) * sum(g)
    softmax:      dz = y * (g - sum(g * y))
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from minipar.nn.module import Module
from minipar.ops.softmax import LogSoftmax as LogSoftmaxFunction
from minipar.ops.softmax import Softmax as SoftmaxFunction
from minipar.ops.softmax import log_softmax_array  # noqa: F401 (the losses import it from here)
from minipar.tensor import Tensor


def softmax_dim(x: Tensor, dim: Any, axis: Any, who: str) -> int:
    """The one dimension to normalise over: ``dim`` (PyTorch) or ``axis`` (NumPy's alias).

    Neither given: PyTorch's deprecated implicit choice (0 for 0-, 1- and 3-d input, else 1),
    with PyTorch's warning.
    """
    if dim is None:
        dim = axis
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {who} has been deprecated. "
                      "Change the call to include dim=X as an argument.", UserWarning, stacklevel=3)
        dim = 0 if x.ndim in (0, 1, 3) else 1
    ndim = max(x.ndim, 1)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -ndim <= dim < ndim:
        raise ValueError(f"{who} dim must be an integer in [{-ndim}, {ndim}), got {dim!r}")
    return int(dim) % ndim if x.ndim else 0


def _cast(x: Tensor, dtype: Any) -> Tensor:
    return x if dtype is None else x.astype(dtype)


def log_softmax(input: Tensor, dim: Any = None, _stacklevel: int = 3, dtype: Any = None, *,
                axis: Any = None) -> Tensor:
    """``log(softmax(x))`` computed stably; ``axis`` is accepted as NumPy's name for ``dim``."""
    return LogSoftmaxFunction.apply(_cast(input, dtype), softmax_dim(input, dim, axis, "log_softmax"))


def softmax(input: Tensor, dim: Any = None, _stacklevel: int = 3, dtype: Any = None, *,
            axis: Any = None) -> Tensor:
    """exp(x_i) / sum_j exp(x_j) along ``dim``, computed stably."""
    return SoftmaxFunction.apply(_cast(input, dtype), softmax_dim(input, dim, axis, "softmax"))


class Softmax(Module):
    """``Softmax(dim=None)``: softmax along ``dim`` (PyTorch's implicit choice when None)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``LogSoftmax(dim=None)``: log-softmax along ``dim``."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return log_softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
