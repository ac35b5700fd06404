"""Differentiable operations, each a ``Function`` with forward and backward side by side.

- ``elementwise.py``: + - * / ** and exp, log, relu, tanh, sigmoid, abs, casts
- ``reduction.py``: sum, mean, max
- ``shape.py``: reshape, transpose, indexing, concatenation, matmul
- ``methods.py``: the Tensor methods and operators that call them, bound onto ``Tensor`` here
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
from minipar.ops.reduction import Max, Mean, Sum, normalize_axis
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

_bind_tensor_methods()  # x + y, x.sum(), x.reshape(...): the one binding step

__all__ = [
    "Abs", "Add", "Cast", "Cat", "Div", "Exp", "GetItem", "Log", "MatMul", "Max", "Mean",
    "Mul", "Neg", "Pow", "ReLU", "Reshape", "Sigmoid", "Sub", "Sum", "Tanh", "ToDevice",
    "Transpose", "add", "cat", "div", "getitem", "matmul", "mul", "normalize_axis", "power",
    "reshape", "stack", "sub", "transpose", "unbroadcast", "unwrap",
]
