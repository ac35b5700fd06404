"""The Tensor's arithmetic operators and elementwise functions, bound onto ``Tensor`` by ``minipar.ops``.

``x + y`` calls ``Tensor.__add__``, defined here as ``add(x, y)``: each method is one
line that hands its tensor to the operation (a ``Function``) in ``elementwise.py``,
``reduction.py`` or ``shape.py``. The other groups of methods sit beside this file:
``methods_reduce.py`` (sum, max(dim), var, softmax, ...), ``methods_shape.py`` (size(),
permute, expand, split, ...) and ``methods_elementwise.py`` (eq, where, clamp, % // & |,
to(dtype or device), float(), long(), ...). They live beside the operations, not in tensor.py,
so the tensor never imports the ops built on it; ``bind()`` (run once, when
``minipar.ops`` is imported) copies them onto the class.
"""

from __future__ import annotations

from typing import Any

from minipar.ops.elementwise import Abs, Exp, Log, Neg, ReLU, Sigmoid, Tanh, add, div, mul, power, sub
from minipar.ops.shape import getitem, matmul
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

    # the same as named methods, PyTorch's spellings
    def add(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return add(self, other if alpha == 1 else mul(other, alpha))

    def sub(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return sub(self, other if alpha == 1 else mul(other, alpha))

    def mul(self, other: Any) -> Tensor:
        return mul(self, other)

    def div(self, other: Any) -> Tensor:
        return div(self, other)

    def matmul(self, other: Any) -> Tensor:
        return matmul(self, other)

    mm = matmul

    # comparisons: no gradient, boolean results (``methods_elementwise.py`` defines eq, lt, ...)
    def __lt__(self, other: Any) -> Tensor:
        return self.lt(other)

    def __le__(self, other: Any) -> Tensor:
        return self.le(other)

    def __gt__(self, other: Any) -> Tensor:
        return self.gt(other)

    def __ge__(self, other: Any) -> Tensor:
        return self.ge(other)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self.eq(other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self.ne(other)

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


def bind(*groups: type) -> None:
    """Copy every method of ``TensorMethods`` and of ``groups`` onto ``Tensor`` (once, at
    ``minipar.ops`` import): the other groups are the ``methods_*.py`` files beside this one."""
    for group in (TensorMethods, *groups):
        for name, member in vars(group).items():
            if name not in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__hash__"):
                setattr(Tensor, name, member)
