"""Activations: ReLU, GELU, Tanh, Sigmoid and Flatten, as functions and as layers.

GELU (Hendrycks & Gimpel, 2016) weighs x by the standard normal CDF:

    gelu(x) = x * Phi(x) = x * 0.5 * (1 + erf(x / sqrt(2)))          (PyTorch's default)
    gelu(x) ~ 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))  (approximate="tanh")

NumPy has no ``erf``, and minipar may not depend on SciPy, so ``erf`` is
written here (see its docstring): a Taylor series around the nearest point of
a grid, with coefficients tabulated once from ``math.erf``. It is accurate to a
few units in the last place of float64, so float64 results match PyTorch's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.module import Module
from minipar.ops import ReLU as ReLUFunction
from minipar.ops import Sigmoid as SigmoidFunction
from minipar.ops import Tanh as TanhFunction
from minipar.tensor import Tensor

# ----- erf ---------------------------------------------------------------------------------
_ERF_STEP = 1 / 64  # grid spacing: |x - c| <= 1/128 for the nearest grid point c
_ERF_TOP = 6.5  # erf(6.5) == 1.0 in float64 (erfc(6.5) ~ 4e-20 is below half an ulp)
_ERF_DEGREE = 7  # the h^8 term is < 1e-18 when |h| <= 1/128


def _erf_taylor_table(step: float, top: float, degree: int) -> np.ndarray:
    """Row k, column g holds a_k with erf(c + h) = sum_k a_k h^k around c = g * step.

    a_0 = erf(c) (from ``math.erf``); for k >= 1 the k-th derivative of erf is
    (2/sqrt(pi)) (-1)^(k-1) H_{k-1}(c) exp(-c^2), with H the (physicists')
    Hermite polynomials: H_0 = 1, H_1 = 2c, H_{m+1} = 2c H_m - 2m H_{m-1}.
    """
    grid = np.arange(0.0, top + step / 2, step)
    table = np.empty((degree + 1, len(grid)))
    table[0] = [math.erf(c) for c in grid]
    scale = 2 / math.sqrt(math.pi) * np.exp(-grid * grid)
    hermite_prev, hermite = np.zeros_like(grid), np.ones_like(grid)  # H_{-1} = 0, H_0 = 1
    factorial = 1.0
    for k in range(1, degree + 1):
        factorial *= k
        table[k] = scale * (-1) ** (k - 1) * hermite / factorial  # a_k = erf^(k)(c) / k!
        hermite_prev, hermite = hermite, 2 * grid * hermite - 2 * (k - 1) * hermite_prev
    return table


_ERF_TABLE = _erf_taylor_table(_ERF_STEP, _ERF_TOP, _ERF_DEGREE)  # (8, 417)


def erf(x: Any) -> Any:
    """The error function 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise, on any array module.

    erf is odd, so work on |x|: find the nearest grid point c (spacing 1/64),
    look up its Taylor coefficients, and sum a_0 + a_1 h + ... + a_7 h^7 by
    Horner's rule with h = |x| - c. Beyond 6.5, erf is 1.0 in float64.
    Error: at most 2 ulp in float64 against the C library's erf.
    """
    xp = get_array_module(x)
    dtype = x.dtype if x.dtype.kind == "f" and x.dtype.itemsize >= 4 else np.dtype(np.float32)
    x = x.astype(dtype, copy=False)
    table = xp.asarray(_ERF_TABLE, dtype=dtype)
    magnitude = xp.fmin(xp.abs(x), _ERF_TOP)  # fmin maps NaN to 6.5; NaN is restored below
    nearest = xp.rint(magnitude * (1 / _ERF_STEP))  # grid index of c, as a float
    h = magnitude - nearest * _ERF_STEP  # |h| <= 1/128
    column = nearest.astype(np.intp)
    out = xp.take(table[_ERF_DEGREE], column)
    for k in range(_ERF_DEGREE - 1, -1, -1):
        out *= h
        out += xp.take(table[k], column)
    out = xp.copysign(out, x)
    return xp.where(xp.isnan(x), x, out)


# ----- GELU ----------------------------------------------------------------------------------
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_BETA = math.sqrt(2 / math.pi)
_TANH_KAPPA = 0.044715


class GELUFunction(Function):
    """Forward gelu(x) = x * Phi(x); backward d/dx = Phi(x) + x * phi(x), phi the normal pdf.

    With approximate="tanh": u = beta (x + kappa x^3), gelu = 0.5 x (1 + tanh u),
    d/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) beta (1 + 3 kappa x^2).
    """

    @staticmethod
    def forward(ctx: Any, x: Any, approximate: str) -> Any:
        xp = get_array_module(x)
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _TANH_BETA * (x + _TANH_KAPPA * x * x * x)
            tanh_inner = xp.tanh(inner)
            ctx.save_for_backward(x, tanh_inner)
            return 0.5 * x * (1 + tanh_inner)
        cdf = 0.5 * (1 + erf(x * _SQRT_HALF))  # Phi(x)
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        x, saved = ctx.saved_tensors
        if ctx.approximate == "tanh":
            tanh_inner = saved
            inner_derivative = _TANH_BETA * (1 + 3 * _TANH_KAPPA * x * x)
            local = 0.5 * (1 + tanh_inner) + 0.5 * x * (1 - tanh_inner * tanh_inner) * inner_derivative
            return grad * local, None
        pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI  # phi(x)
        return grad * (saved + x * pdf), None


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit, exact (``"none"``) or with the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELUFunction.apply(x, approximate)


def relu(x: Tensor) -> Tensor:
    return ReLUFunction.apply(x)


def tanh(x: Tensor) -> Tensor:
    return TanhFunction.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    return SigmoidFunction.apply(x)


# ----- layers --------------------------------------------------------------------------------
class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ReLUFunction.apply(x)


class GELU(Module):
    """``GELU(approximate="none")``: x * Phi(x); ``approximate="tanh"`` as in PyTorch."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return GELUFunction.apply(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return TanhFunction.apply(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return SigmoidFunction.apply(x)


class Flatten(Module):
    """Merge dimensions start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        ndim = max(x.ndim, 1)
        start, end = self.start_dim, self.end_dim
        if not (-ndim <= start < ndim and -ndim <= end < ndim) or start % ndim > end % ndim:
            raise ValueError(
                f"Flatten(start_dim={start}, end_dim={end}) expected input with dimensions "
                f"{start}..{end} in order, got shape {tuple(x.shape)}"
            )
        start, end = start % ndim, end % ndim
        shape = tuple(x.shape)
        return x.reshape(*shape[:start], -1, *shape[end + 1:])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
