"""Tensor factories in PyTorch's names: tensor, zeros, ones, randn, rand, arange, *_like."""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module, to_device
from minipar.random import generator
from minipar.tensor import Tensor


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, device: str = "cpu") -> Tensor:
    """Make a tensor, PyTorch's ``torch.tensor`` for NumPy users.

    dtype=None: a NumPy/CuPy array keeps its dtype (float64 stays float64);
    Python numbers and lists become float32 (bools stay bool). A Tensor's data
    is copied.
    """
    if isinstance(data, Tensor):
        data = data.array.copy()
    xp = get_array_module(data)
    if dtype is not None:
        array = xp.array(data, dtype=np.dtype(dtype))
    elif hasattr(data, "dtype") and hasattr(data, "shape"):
        array = xp.array(data)  # an array keeps its dtype; copied like torch.tensor
    else:
        array = np.array(data)
        if array.dtype.kind in "iuf":
            array = array.astype(np.float32)
        elif array.dtype.kind != "b":
            raise TypeError(
                f"tensor() takes numbers, nested lists of numbers or arrays, got {type(data).__name__}"
                f" (NumPy read it as dtype {array.dtype})"
            )
    if array.dtype.kind not in "biufc":
        raise TypeError(f"tensor() needs a bool, integer, float or complex dtype, got {array.dtype}")
    array = to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in size):
        raise ValueError(f"sizes must be non-negative integers, got {size}")
    return tuple(int(n) for n in size)


def _make(array: np.ndarray, dtype: Any, requires_grad: bool, device: str) -> Tensor:
    array = array.astype(np.float32 if dtype is None else dtype, copy=False)
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    return _make(np.zeros(_shape(size)), dtype, requires_grad, device)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    return _make(np.ones(_shape(size)), dtype, requires_grad, device)


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """Standard normal draws from minipar's generator (seeded by ``manual_seed``)."""
    return _make(generator().standard_normal(_shape(size)), dtype, requires_grad, device)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """Uniform [0, 1) draws from minipar's generator."""
    return _make(generator().random(_shape(size)), dtype, requires_grad, device)


def arange(*args: Any, dtype: Any = None, device: str = "cpu") -> Tensor:
    """``np.arange``; integer arguments give int64 as in PyTorch."""
    array = np.arange(*args)
    if dtype is not None:
        array = array.astype(dtype)
    return Tensor(to_device(array, device))


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(get_array_module(t.array).zeros_like(t.array), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(get_array_module(t.array).ones_like(t.array), requires_grad=requires_grad)
