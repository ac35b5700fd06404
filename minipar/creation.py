"""Tensor factories with PyTorch's names, arguments and default dtypes.

    minipar.tensor([1, 2])            int64     (Python ints, as PyTorch)
    minipar.tensor([1.0, 2])          float32   (Python floats: PyTorch's default dtype)
    minipar.tensor(np.ones(2))        float64   (an array keeps its dtype)
    minipar.zeros(2, 3), minipar.zeros((2, 3), dtype=minipar.float64, requires_grad=True)
    minipar.arange(5) int64, minipar.arange(0.0, 1.0, 0.25) float32
    minipar.randint(0, 10, (3,)), minipar.randperm(5), minipar.full((2, 2), 7.0), minipar.eye(3)
    minipar.from_numpy(a)             shares a's memory (no copy), as torch.from_numpy

Every factory takes ``dtype=``, ``device=`` and (for floating results) ``requires_grad=``;
random ones draw from minipar's generator (seeded by ``minipar.manual_seed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module, to_device
from minipar.random import generator
from minipar.tensor import Tensor


def _default_dtype(kind: str) -> Any:
    """PyTorch's dtype for Python data of a NumPy kind: ints int64, floats float32, complex complex64."""
    return {"i": np.int64, "u": np.int64, "f": np.float32, "c": np.complex64, "b": np.bool_}.get(kind)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, device: Any = "cpu") -> Tensor:
    """A new tensor holding a copy of ``data`` (numbers, nested lists, an array or a Tensor).

    dtype=None: an array (or Tensor) keeps its dtype; Python ints become int64, floats
    float32, bools bool; a list mixing ints and floats is float32.
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
        wanted = _default_dtype(array.dtype.kind)
        if wanted is None:
            raise TypeError(
                f"tensor() takes numbers, nested lists of numbers or arrays, got {type(data).__name__}"
                f" (NumPy read it as dtype {array.dtype})"
            )
        array = array.astype(wanted, copy=False)
    if array.dtype.kind not in "biufc":
        raise TypeError(f"tensor() needs a bool, integer, float or complex dtype, got {array.dtype}")
    return Tensor(to_device(array, str(device)), requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like ``tensor`` but without a copy where none is needed (a Tensor or array of that dtype)."""
    if isinstance(data, Tensor):
        result = data if dtype is None else data.to(dtype)
        return result if device is None else result.to(device)
    if hasattr(data, "dtype") and hasattr(data, "shape") and (dtype is None or np.dtype(dtype) == data.dtype):
        return Tensor(data if device is None else to_device(data, str(device)))
    return tensor(data, dtype=dtype, device="cpu" if device is None else device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory: writes to one show in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy needs a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in size):
        raise ValueError(f"sizes must be non-negative integers, got {size}")
    return tuple(int(n) for n in size)


def _make(array: np.ndarray, dtype: Any, requires_grad: bool, device: Any,
          default: Any = np.float32) -> Tensor:
    array = array.astype(default if dtype is None else np.dtype(dtype), copy=False)
    return Tensor(to_device(array, str(device)), requires_grad=requires_grad)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = "cpu") -> Tensor:
    return _make(np.zeros(_shape(size)), dtype, requires_grad, device)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = "cpu") -> Tensor:
    return _make(np.ones(_shape(size)), dtype, requires_grad, device)


def empty(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = "cpu") -> Tensor:
    """Uninitialised memory, as in PyTorch: write every element before reading one."""
    return _make(np.empty(_shape(size), dtype=np.float32 if dtype is None else dtype), dtype,
                 requires_grad, device)


def full(size: Any, fill_value: Any, *, dtype: Any = None, requires_grad: bool = False,
         device: Any = "cpu") -> Tensor:
    """Every element ``fill_value``; its dtype follows the value (bool, int64, float32) unless given."""
    shape = _shape((size,) if isinstance(size, (int, np.integer)) else tuple(size))
    default = _default_dtype(np.asarray(fill_value).dtype.kind)
    return _make(np.full(shape, fill_value), dtype, requires_grad, device, default)


def eye(n: int, m: int | None = None, *, dtype: Any = None, requires_grad: bool = False,
        device: Any = "cpu") -> Tensor:
    return _make(np.eye(n, m), dtype, requires_grad, device)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None, requires_grad: bool = False,
             device: Any = "cpu") -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end``, both included."""
    return _make(np.linspace(start, end, steps), dtype, requires_grad, device)


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = "cpu",
          generator: Any = None) -> Tensor:
    """Standard normal draws from minipar's generator (seeded by ``manual_seed``)."""
    return _make(_rng(generator).standard_normal(_shape(size)), dtype, requires_grad, device)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = "cpu",
         generator: Any = None) -> Tensor:
    """Uniform [0, 1) draws from minipar's generator."""
    return _make(_rng(generator).random(_shape(size)), dtype, requires_grad, device)


def randint(*args: Any, size: Any = None, dtype: Any = None, device: Any = "cpu",
            generator: Any = None) -> Tensor:
    """Integers uniform in [low, high): ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None and args and isinstance(args[-1], (tuple, list)):
        args, size = args[:-1], args[-1]
    if size is None or len(args) not in (1, 2):
        raise TypeError(f"randint needs (high, size) or (low, high, size), got {args} and size={size}")
    low, high = (0, args[0]) if len(args) == 1 else args
    drawn = _rng(generator).integers(low, high, size=_shape(tuple(size)))
    return _make(drawn, dtype, False, device, np.int64)


def randperm(n: int, *, dtype: Any = None, device: Any = "cpu", generator: Any = None) -> Tensor:
    """A random permutation of 0..n-1 (int64)."""
    return _make(_rng(generator).permutation(n), dtype, False, device, np.int64)


def arange(*args: Any, dtype: Any = None, device: Any = "cpu", requires_grad: bool = False) -> Tensor:
    """``arange(end)``, ``arange(start, end, step)``: int64 for integer arguments, float32 otherwise."""
    array = np.arange(*args)
    default = np.int64 if array.dtype.kind in "iu" else np.float32
    return _make(array, dtype, requires_grad, device, default)


def _like(t: Tensor, array: Any, dtype: Any, requires_grad: bool) -> Tensor:
    return Tensor(array if dtype is None else array.astype(dtype), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(t, get_array_module(t.array).zeros_like(t.array), dtype, requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(t, get_array_module(t.array).ones_like(t.array), dtype, requires_grad)


def full_like(t: Tensor, fill_value: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(t, get_array_module(t.array).full_like(t.array, fill_value), dtype, requires_grad)


def randn_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return randn(*t.shape, dtype=t.dtype if dtype is None else dtype, requires_grad=requires_grad,
                 device=t.device)


def rand_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return rand(*t.shape, dtype=t.dtype if dtype is None else dtype, requires_grad=requires_grad,
                device=t.device)


def _rng(given: Any) -> Any:
    """A generator passed by the caller (a ``numpy.random.Generator``), else minipar's own."""
    return generator() if given is None else given
