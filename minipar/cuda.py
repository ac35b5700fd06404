"""``minipar.cuda``: PyTorch's ``torch.cuda`` questions, answered through CuPy.

    if minipar.cuda.is_available():          # CuPy imports and sees a GPU
        model.to("cuda")

minipar runs on a GPU through CuPy (``pip install -e ".[gpu]"``); nothing here imports
CuPy until a function is called, so ``import minipar`` stays cheap.
"""

from __future__ import annotations

from minipar.backend import _cupy, cupy_available


def is_available() -> bool:
    """True when CuPy imports and at least one GPU is visible."""
    return cupy_available()


def device_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or without a GPU)."""
    cupy = _cupy()
    return 0 if cupy is None else int(cupy.cuda.runtime.getDeviceCount())


def current_device() -> int:
    """The index of the GPU CuPy computes on now."""
    cupy = _require("current_device")
    return int(cupy.cuda.runtime.getDevice())


def synchronize() -> None:
    """Wait until the current GPU has finished its queued work (timing needs it)."""
    _require("synchronize").cuda.runtime.deviceSynchronize()


def _require(what: str):  # noqa: ANN202 (the cupy module)
    cupy = _cupy()
    if cupy is None:
        raise RuntimeError(f"minipar.cuda.{what}(): no GPU: CuPy is not installed or sees no device "
                           "(minipar.cuda.is_available() is False)")
    return cupy
