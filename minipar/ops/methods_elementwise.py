"""Tensor comparisons, selections, integer operators and dtype/device conversions, with
PyTorch's names, bound onto ``Tensor`` by ``minipar.ops`` like ``methods.py``:

    x.eq(y), x.gt(0), x.where(mask, y), x.clamp(-1, 1), x.masked_fill(mask, 0.0), x.pow(2)
    i % 3, i // 3, i & 1, i | j, i ^ j, ~i, i << 2, i >> 1      (integer tensors)
    x.float(), x.long(), x.to(minipar.float64), x.to("cuda:1"), x.to(y), x.type(minipar.int32)

Casts to a floating dtype are differentiable (the gradient is cast back); casts to an
integer or bool dtype give a tensor without history, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.backend import get_array_module, normalize_device
from minipar.ops.elementwise import Cast, ToDevice, power, unwrap
from minipar.ops.selection import Clamp, FloorDivide, Remainder, Triangle, Where
from minipar.tensor import Tensor

# PyTorch's legacy type strings (x.type()), so scripts that compare them run unchanged.
_TYPE_NAMES = {"float32": "torch.FloatTensor", "float64": "torch.DoubleTensor", "float16": "torch.HalfTensor",
               "int64": "torch.LongTensor", "int32": "torch.IntTensor", "int16": "torch.ShortTensor",
               "int8": "torch.CharTensor", "uint8": "torch.ByteTensor", "bool": "torch.BoolTensor"}
_TYPE_DTYPES = {name: np.dtype(dtype) for dtype, name in _TYPE_NAMES.items()}


def _compared(x: Tensor, result: Any) -> Tensor:
    """A boolean result as a Tensor without history (0-d results come back from NumPy as scalars)."""
    return Tensor._wrap(result if type(result) is np.ndarray else get_array_module(x.array).asarray(result))


def _integer(x: Any, symbol: str) -> Any:
    """The array behind ``x`` when it holds integers or bools; a TypeError naming the operator else."""
    array = unwrap(x)
    kind = array.dtype.kind if hasattr(array, "dtype") else ("b" if isinstance(x, bool) else "i")
    if kind not in "biu" or isinstance(x, float):
        raise TypeError(f"{symbol} needs integer or bool tensors, got "
                        f"{array.dtype if hasattr(array, 'dtype') else type(x).__name__}")
    return array


def _bitwise(name: str, symbol: str, reflected: bool = False) -> Any:
    def method(self: Tensor, other: Any) -> Tensor:
        a, b = _integer(self, symbol), _integer(other, symbol)
        return _compared(self, getattr(np, name)(b, a) if reflected else getattr(np, name)(a, b))
    method.__name__ = method.__qualname__ = f"__{'r' if reflected else ''}{name.split('_')[-1]}__"
    method.__doc__ = f"``{symbol}`` on integer or bool tensors (no gradient)."
    return method


def is_dtype(value: Any) -> bool:
    """True for a NumPy dtype or scalar type (``minipar.float32``, ``np.int64``), Python's float/int/bool."""
    if isinstance(value, np.dtype):
        return True
    return isinstance(value, type) and issubclass(value, (np.generic, float, int))


class ElementwiseMethods:
    """Comparisons, selections, integer operators and conversions (see the module docstring)."""

    # ----- comparisons, as methods (no gradient, boolean results) -------------------------
    def eq(self, other: Any) -> Tensor:
        return _compared(self, self.array == unwrap(other))

    def ne(self, other: Any) -> Tensor:
        return _compared(self, self.array != unwrap(other))

    def lt(self, other: Any) -> Tensor:
        return _compared(self, self.array < unwrap(other))

    def le(self, other: Any) -> Tensor:
        return _compared(self, self.array <= unwrap(other))

    def gt(self, other: Any) -> Tensor:
        return _compared(self, self.array > unwrap(other))

    def ge(self, other: Any) -> Tensor:
        return _compared(self, self.array >= unwrap(other))

    def equal(self, other: Any) -> bool:
        """True when both have the same shape and every element is equal (``torch.equal``)."""
        return self.shape == tuple(other.shape) and bool((self.array == unwrap(other)).all())

    def isnan(self) -> Tensor:
        return _compared(self, get_array_module(self.array).isnan(self.array))

    # ----- selections -----------------------------------------------------------------------
    def where(self, condition: Any, other: Any) -> Tensor:
        """``condition ? self : other`` elementwise (PyTorch's ``x.where(condition, y)``)."""
        return Where.apply(_mask(condition, "where"), self, other)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        """``value`` where ``mask`` is True, self elsewhere; the gradient flows where mask is False."""
        return Where.apply(_mask(mask, "masked_fill"), unwrap(value), self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 (PyTorch's names)
        if min is None and max is None:
            raise ValueError("clamp needs at least one of min and max")
        return Clamp.apply(self, unwrap(min), unwrap(max))

    clip = clamp

    def pow(self, exponent: Any) -> Tensor:
        return power(self, exponent)

    def tril(self, diagonal: int = 0) -> Tensor:
        return Triangle.apply(self, diagonal, False)

    def triu(self, diagonal: int = 0) -> Tensor:
        return Triangle.apply(self, diagonal, True)

    # ----- % and // (any numbers), bit operators (integers and bools) -----------------------
    def __mod__(self, other: Any) -> Tensor:
        return Remainder.apply(self, other)

    def __rmod__(self, other: Any) -> Tensor:
        return Remainder.apply(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return FloorDivide.apply(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return FloorDivide.apply(other, self)

    remainder = __mod__
    floor_divide = __floordiv__
    __and__, __rand__ = _bitwise("bitwise_and", "&"), _bitwise("bitwise_and", "&", True)
    __or__, __ror__ = _bitwise("bitwise_or", "|"), _bitwise("bitwise_or", "|", True)
    __xor__, __rxor__ = _bitwise("bitwise_xor", "^"), _bitwise("bitwise_xor", "^", True)
    __lshift__, __rlshift__ = _bitwise("left_shift", "<<"), _bitwise("left_shift", "<<", True)
    __rshift__, __rrshift__ = _bitwise("right_shift", ">>"), _bitwise("right_shift", ">>", True)
    bitwise_and, bitwise_or, bitwise_xor = __and__, __or__, __xor__

    def __invert__(self) -> Tensor:
        """``~x``: logical not of a bool tensor, bitwise not of an integer one."""
        return _compared(self, np.invert(_integer(self, "~")))

    def logical_not(self) -> Tensor:
        return _compared(self, get_array_module(self.array).logical_not(self.array))

    # ----- dtypes and devices -------------------------------------------------------------------
    def to(self, *args: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False,
           copy: bool = False) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other_tensor)``, as PyTorch.

        A device is "cpu", "cuda", "cuda:N", a ``minipar.device`` or an int N (cuda:N). Returns
        self when nothing changes (``copy=True`` forces a copy); ``non_blocking`` is accepted.
        """
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif is_dtype(arg):
                dtype = arg
            elif isinstance(arg, (str, int)) and not isinstance(arg, bool):
                device = arg
            else:
                raise TypeError(f"to() takes a dtype, a device ('cpu', 'cuda:0', an int) or a tensor, "
                                f"got {type(arg).__name__} {arg!r}")
        result = self if dtype is None else self._cast(dtype)
        if device is not None:
            result = result._move(device)
        if copy and result is self:
            result = self.clone()
        return result

    def _cast(self, dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype == self.array.dtype:
            return self
        if dtype.kind not in "biufc":
            raise TypeError(f"a tensor needs a bool, integer, float or complex dtype, got {dtype}")
        if dtype.kind in "fc":
            return Cast.apply(self, dtype)  # differentiable: the gradient is cast back
        return Tensor._wrap(self.array.astype(dtype))  # integers carry no gradient

    def _move(self, device: Any) -> Tensor:
        asked = device
        if isinstance(device, int) and not isinstance(device, bool):
            if device < 0:
                raise ValueError(f"a device index must be >= 0, got {device}")
            device = f"cuda:{device}"  # PyTorch: .to(0) means the first GPU
        device = normalize_device(device)
        if device == "cpu" and get_array_module(self.array) is np:
            return self
        if device != "cpu" and str(self.device) == (device if ":" in device else "cuda:0"):
            return self
        try:
            return ToDevice.apply(self, device)
        except RuntimeError as error:
            if asked is device:
                raise
            raise RuntimeError(f".to({asked!r}) means {device!r}, as in PyTorch: {error}") from None

    def cpu(self) -> Tensor:
        return self._move("cpu")

    def cuda(self, device: Any = None) -> Tensor:
        return self._move("cuda" if device is None else device)

    def astype(self, dtype: Any) -> Tensor:
        """NumPy's name for ``to(dtype)``."""
        return self._cast(dtype)

    def type(self, dtype: Any = None) -> Any:
        """No argument: PyTorch's type string ("torch.FloatTensor"); a dtype (or such a string): a cast."""
        if dtype is None:
            return _TYPE_NAMES.get(self.array.dtype.name, f"torch.{self.array.dtype.name}")
        if isinstance(dtype, str):
            if dtype not in _TYPE_DTYPES:
                raise ValueError(f"unknown tensor type {dtype!r}; expected one of {sorted(_TYPE_DTYPES)}")
            dtype = _TYPE_DTYPES[dtype]
        return self._cast(dtype)

    def float(self) -> Tensor:
        return self._cast(np.float32)

    def double(self) -> Tensor:
        return self._cast(np.float64)

    def half(self) -> Tensor:
        return self._cast(np.float16)

    def long(self) -> Tensor:
        return self._cast(np.int64)

    def int(self) -> Tensor:
        return self._cast(np.int32)

    def bool(self) -> Tensor:
        return self._cast(np.bool_)

    def __int__(self) -> int:
        return int(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __index__(self) -> int:
        """``range(t)``, ``lst[t]``: a one-element integer tensor used as an index."""
        if self.array.dtype.kind not in "iu" or self.array.size != 1:
            raise TypeError(f"only integer tensors of one element can be used as an index, "
                            f"got dtype {self.dtype} and shape {self.shape}")
        return int(self.item())

    def is_floating_point(self) -> bool:
        return self.array.dtype.kind == "f"


def _mask(condition: Any, who: str) -> Any:
    array = unwrap(condition)
    if not hasattr(array, "dtype") or array.dtype.kind != "b":
        kind = array.dtype if hasattr(array, "dtype") else type(condition).__name__
        raise TypeError(f"{who} needs a bool mask (e.g. x > 0), got {kind}")
    return array

