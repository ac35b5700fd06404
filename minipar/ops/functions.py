"""The Tensor methods as free functions, PyTorch's ``torch.max(x, 1)``, ``torch.where(c, x, y)``:
each is the method of the same name called on its first argument (made a tensor if it is
an array or a number), so the two spellings can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minipar.backend import get_array_module
from minipar.ops.einsum import einsum
from minipar.ops.selection import Triangle, Where
from minipar.ops.shape import matmul
from minipar.tensor import Tensor


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return Tensor._wrap(get_array_module(value).asarray(value))


def _method(name: str) -> Callable[..., Any]:
    def function(input: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A002 (PyTorch's name)
        return getattr(_as_tensor(input), name)(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"``input.{name}(...)`` (see ``Tensor.{name}``)."
    return function


max = _method("max")  # noqa: A001 (PyTorch's names shadow the builtins here, as in torch)
min = _method("min")  # noqa: A001
sum = _method("sum")  # noqa: A001
abs = _method("abs")  # noqa: A001
argmax, argmin, mean, std, var = (_method(n) for n in ("argmax", "argmin", "mean", "std", "var"))
amax, amin, maximum, minimum = (_method(n) for n in ("amax", "amin", "maximum", "minimum"))
exp, log, sqrt, tanh, sigmoid, relu = (_method(n) for n in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu"))
pow, clamp, clip = (_method(n) for n in ("pow", "clamp", "clip"))  # noqa: A001
eq, ne, lt, le, gt, ge = (_method(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))
reshape, flatten, squeeze, unsqueeze = (_method(n) for n in ("reshape", "flatten", "squeeze", "unsqueeze"))
permute, transpose, numel = (_method(n) for n in ("permute", "transpose", "numel"))
chunk, split = _method("chunk"), _method("split")
softmax, log_softmax, masked_fill = (_method(n) for n in ("softmax", "log_softmax", "masked_fill"))
any, all = _method("any"), _method("all")  # noqa: A001


def where(condition: Any, input: Any = None, other: Any = None) -> Any:  # noqa: A002
    """``condition ? input : other`` elementwise; ``where(condition)`` alone gives the indices
    of the True elements, one index tensor per dimension (``torch.where``'s two forms)."""
    mask = _as_tensor(condition)
    if input is None and other is None:
        return tuple(Tensor._wrap(i) for i in get_array_module(mask.array).nonzero(mask.array))
    if input is None or other is None:
        raise TypeError("where(condition, input, other) needs both input and other (or neither)")
    if isinstance(input, Tensor):
        return input.where(mask, other)
    return Where.apply(mask.array, input, other)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002
    """The lower triangle (below and on diagonal ``diagonal``) of the last two dimensions."""
    return Triangle.apply(input, diagonal, False)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002
    """The upper triangle (above and on diagonal ``diagonal``) of the last two dimensions."""
    return Triangle.apply(input, diagonal, True)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:  # noqa: A002
    """Batched matmul of (b, n, m) and (b, m, p) tensors -> (b, n, p)."""
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise ValueError(f"bmm needs two 3-D tensors with the same batch size, got shapes "
                         f"{tuple(input.shape)} and {tuple(mat2.shape)}")
    return matmul(input, mat2)


def allclose(input: Any, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:  # noqa: A002
    a, b = _as_tensor(input).array, _as_tensor(other).array
    return bool(get_array_module(a).allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def is_tensor(value: Any) -> bool:
    return isinstance(value, Tensor)


__all__ = [
    "abs", "all", "allclose", "amax", "amin", "any", "argmax", "argmin", "bmm", "chunk", "clamp", "clip",
    "einsum", "eq", "exp", "flatten", "ge", "gt", "is_tensor", "le", "log", "log_softmax", "lt",
    "masked_fill", "matmul", "max", "maximum", "mean", "min", "minimum", "ne", "numel", "permute", "pow",
    "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze", "std", "sum", "tanh", "transpose",
    "tril", "triu", "unsqueeze", "var", "where",
]
