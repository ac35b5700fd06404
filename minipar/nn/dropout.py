"""``Dropout(p)``: during training zero each element with probability p (inverted dropout).

    mask_i ~ Bernoulli(1 - p),   y = x * mask / (1 - p)

Dividing by 1 - p keeps E[y] = x, so in eval mode the layer is the identity
and nothing needs rescaling at test time. Backward multiplies by the same
scaled mask. The mask comes from ``minipar.random.generator()``, so
``manual_seed`` makes it reproducible and ``get_rng_state``/``set_rng_state``
replay it (as activation checkpointing needs). Draws are made on the host and
copied to the GPU, so a seed gives the same mask on either device.
"""

from __future__ import annotations

import numbers
from typing import Any

from minipar.autograd import Function
from minipar.backend import device_of, to_device
from minipar.nn.module import Module
from minipar.random import generator
from minipar.tensor import Tensor


class DropoutFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, p: float) -> Any:
        keep = generator().random(x.shape) >= p  # True with probability 1 - p
        scale = 0.0 if p == 1 else 1 / (1 - p)
        mask = to_device(keep.astype(x.dtype) * x.dtype.type(scale), device_of(x))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return grad * ctx.saved_tensors[0], None


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability p must be a number in [0, 1], got {p!r}")
    return float(p)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """PyTorch's ``F.dropout``; the identity when not training or p == 0."""
    p = _check_p(p)
    if not training or p == 0:
        return x
    return DropoutFunction.apply(x, p)


class Dropout(Module):
    """Zero elements with probability p while ``training``; identity after ``eval()``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_p(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return DropoutFunction.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
