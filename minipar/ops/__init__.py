"""Differentiable operations, each a ``Function`` with forward and backward side by side.

- ``elementwise.py``: + - * / ** and exp, log, relu, tanh, sigmoid, abs, casts
- ``reduction.py``: sum, mean, max, min, var
- ``shape.py``: reshape, transpose, indexing, concatenation, matmul
- ``selection.py``: where, clamp, maximum, expand, repeat, gather, tril/triu, % and //
- ``softmax.py``: softmax, log_softmax; ``einsum.py``: einsum
- ``methods.py`` and ``methods_{reduce,shape,elementwise}.py``: the Tensor methods and
  operators that call them, bound onto ``Tensor`` here
- ``functions.py``: the same as free functions (``minipar.max``, ``minipar.where``, ...)
"""

from minipar.ops.elementwise import (
    Abs,
    Add,
    Cast,
    Div,
    Exp,
    Log,
    Mul,
    Neg,
    Pow,
    ReLU,
    Sigmoid,
    Sub,
    Tanh,
    ToDevice,
    add,
    div,
    mul,
    power,
    sub,
    unbroadcast,
    unwrap,
)
from minipar.ops.methods import bind as _bind_tensor_methods
from minipar.ops.methods_elementwise import ElementwiseMethods
from minipar.ops.methods_reduce import ReductionMethods, ValuesIndices
from minipar.ops.methods_shape import ShapeMethods, Size
from minipar.ops.reduction import Max, Mean, Min, Sum, Var, normalize_axis
from minipar.ops.selection import Clamp, Expand, Maximum, Minimum, Repeat, TakeAlong, Triangle, Where
from minipar.ops.shape import (
    Cat,
    GetItem,
    MatMul,
    Reshape,
    Transpose,
    cat,
    getitem,
    matmul,
    reshape,
    stack,
    transpose,
)
from minipar.ops.softmax import LogSoftmax, Softmax

# x + y, x.sum(), x.size(), x.to(...): the one binding step
_bind_tensor_methods(ReductionMethods, ShapeMethods, ElementwiseMethods)

__all__ = [
    "Abs", "Add", "Cast", "Cat", "Clamp", "Div", "Exp", "Expand", "GetItem", "Log", "LogSoftmax", "MatMul",
    "Max", "Maximum", "Mean", "Min", "Minimum", "Mul", "Neg", "Pow", "ReLU", "Repeat", "Reshape", "Sigmoid",
    "Size", "Softmax", "Sub", "Sum", "TakeAlong", "Tanh", "ToDevice", "Transpose", "Triangle",
    "ValuesIndices", "Var", "Where", "add", "cat", "div", "getitem", "matmul", "mul", "normalize_axis",
    "power", "reshape", "stack", "sub", "transpose", "unbroadcast", "unwrap",
]
