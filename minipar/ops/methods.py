"""The Tensor's operator and method surface, bound onto ``Tensor`` by ``minipar.ops``.

``x + y`` calls ``Tensor.__add__``, defined here as ``add(x, y)``: each method is one
line that hands its tensor to the operation (a ``Function``) in ``elementwise.py``,
``reduction.py`` or ``shape.py``. They live beside the operations, not in tensor.py,
so the tensor never imports the ops built on it; ``bind()`` (run once, when
``minipar.ops`` is imported) copies them onto the class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import to_device
from minipar.ops.elementwise import (
    Abs,
    Cast,
    Exp,
    Log,
    Neg,
    ReLU,
    Sigmoid,
    Tanh,
    ToDevice,
    add,
    div,
    mul,
    power,
    sub,
    unwrap,
)
from minipar.ops.reduction import Max, Mean, Sum, normalize_axis
from minipar.ops.shape import getitem, matmul, reshape, transpose
from minipar.tensor import Tensor


class TensorMethods:
    """Methods of ``Tensor`` that build graph nodes (see the module docstring)."""

    # ----- arithmetic -----------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return div(other, self)

    def __pow__(self, exponent: Any) -> Tensor:
        return power(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return power(base, self)

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    # comparisons: no gradient, boolean results
    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.array < unwrap(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.array <= unwrap(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.array > unwrap(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.array >= unwrap(other))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.array == unwrap(other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.array != unwrap(other))

    def __getitem__(self, index: Any) -> Tensor:
        return getitem(self, index)

    # ----- elementwise functions and reductions ----------------------------------------
    def exp(self) -> Tensor:
        return Exp.apply(self)

    def log(self) -> Tensor:
        return Log.apply(self)

    def relu(self) -> Tensor:
        return ReLU.apply(self)

    def tanh(self) -> Tensor:
        return Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return Sigmoid.apply(self)

    def sqrt(self) -> Tensor:
        return power(self, 0.5)

    def abs(self) -> Tensor:
        return Abs.apply(self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return Sum.apply(self, normalize_axis(axis, self.ndim), keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return Mean.apply(self, normalize_axis(axis, self.ndim), keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return Max.apply(self, normalize_axis(axis, self.ndim), keepdims)

    # ----- shape --------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0) -> Tensor:
        start = start_dim % max(self.ndim, 1)
        return self.reshape(*self.shape[:start], -1)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    @property
    def T(self) -> Tensor:  # noqa: N802 (NumPy's and PyTorch's name)
        return transpose(self, None)

    # ----- devices and dtypes (differentiable: the gradient moves or casts back) ---------
    def to(self, device: str) -> Tensor:
        """This tensor on ``device`` ("cpu" or "cuda"); self when already there."""
        if to_device(self.array, device) is self.array:
            return self
        return ToDevice.apply(self, device)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def astype(self, dtype: Any) -> Tensor:
        """A differentiable cast (the gradient is cast back)."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "biufc":
            raise TypeError(f"astype needs a bool, integer, float or complex dtype, got {dtype}")
        return Cast.apply(self, dtype)

    def float(self) -> Tensor:
        return self.astype(np.float32)

    def double(self) -> Tensor:
        return self.astype(np.float64)

    def half(self) -> Tensor:
        return self.astype(np.float16)


def bind() -> None:
    """Copy every method above onto ``Tensor`` (once, at ``minipar.ops`` import)."""
    for name, member in vars(TensorMethods).items():
        if name not in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__hash__"):
            setattr(Tensor, name, member)
