"""The array module behind every tensor: NumPy on the CPU, CuPy on a GPU.

minipar never calls ``numpy.exp`` on a tensor's data directly: it asks the
array which module it belongs to (``get_array_module(array)``) and calls that
module's ``exp``. The same code therefore runs on NumPy and CuPy arrays.

    >>> import numpy as np
    >>> get_array_module(np.zeros(3)) is np
    True

CuPy is optional (``pip install -e ".[gpu]"``); without it, or without a GPU,
``cupy_available()`` is False and ``.to("cuda")`` raises a clear RuntimeError.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def _cupy() -> ModuleType | None:
    """Import CuPy once; None when it is missing or no GPU answers."""
    try:
        import cupy  # type: ignore[import-not-found]

        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # ImportError, or CUDA errors when there is no device
        return None
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _cupy() is not None


def get_array_module(array: Any) -> ModuleType:
    """The module (numpy or cupy) that owns ``array``; numpy for anything else."""
    if type(array) is np.ndarray:  # the hot path: one type check
        return np
    cupy = _cupy() if type(array).__module__.startswith("cupy") else None
    return cupy if cupy is not None else np


def normalize_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``/``"cuda:N"``; anything else is a ValueError."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda', got {type(device).__name__}")
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return str(device)
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class device(str):  # noqa: N801 (PyTorch's name)
    """PyTorch's ``torch.device``, as the string it names: ``device("cuda:1") == "cuda:1"``.

        >>> d = device("cuda", 1)
        >>> d.type, d.index, str(d)
        ('cuda', 1, 'cuda:1')

    Being a ``str``, it goes wherever minipar takes a device name; ``device(0)`` is "cuda:0",
    as in PyTorch. Making one never touches the GPU (``minipar.cuda.is_available()`` asks).
    """

    type: str
    index: int | None

    def __new__(cls, spec: Any, index: int | None = None) -> device:
        if isinstance(spec, device) and index is None:
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool) and index is None:
            spec, index = "cuda", spec
        if index is not None:
            if not isinstance(spec, str) or ":" in spec or type(index) is not int:
                raise TypeError(f"device(type, index) needs a type like 'cuda' and an int, "
                                f"got {spec!r}, {index!r}")
            spec = f"{spec}:{index}"
        name = normalize_device(spec)
        self = super().__new__(cls, name)
        kind, _, number = name.partition(":")
        self.type, self.index = kind, int(number) if number else None
        return self

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"


CPU = device("cpu")


def device_of(array: Any) -> device:
    """``device("cpu")`` for NumPy arrays, ``device("cuda:N")`` for CuPy arrays on device N."""
    if type(array) is np.ndarray or get_array_module(array) is np:
        return CPU
    return device(f"cuda:{array.device.id}")


def to_device(array: Any, device: str) -> Any:
    """Copy ``array`` to ``device`` (no copy when it is already there)."""
    device = normalize_device(device)
    if device == "cpu":
        if get_array_module(array) is np:
            return array
        return array.get()  # cupy -> numpy: one device-to-host copy
    cupy = _cupy()
    if cupy is None:
        raise RuntimeError(
            f"cannot move to {device!r}: CuPy is not installed or no GPU is visible "
            '(install with pip install -e ".[gpu]" on a machine with CUDA)'
        )
    index = int(device[5:]) if ":" in device else 0
    with cupy.cuda.Device(index):
        return cupy.asarray(array)
