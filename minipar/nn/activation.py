"""Activation layers: thin modules over ``functional``."""

from __future__ import annotations

from minipar.nn import functional as F
from minipar.nn.module import Module
from minipar.tensor import Tensor


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)
