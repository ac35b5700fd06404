"""Tensor factories in PyTorch's names: zeros, ones, randn, rand, arange, *_like."""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module, to_device
from minipar.random import generator
from minipar.tensor import Tensor


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
    return Tensor(get_array_module(t.data).zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(get_array_module(t.data).ones_like(t.data), requires_grad=requires_grad)
