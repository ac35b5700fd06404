"""``minipar.save`` / ``minipar.load``: the file's name decides its format.

    minipar.save(state, "run/step100.npz")            # minipar's snapshot (never pickled)
    minipar.save(state, "model.pt")                   # the same format, PyTorch's suffix
    minipar.save(model.state_dict(), "model.safetensors")   # for PyTorch (safetensors)
    state = minipar.load("model.pt", map_location="cpu")

Any name but ``*.safetensors`` holds minipar's checksummed snapshot (``local.py``): nested
dicts of arrays, numbers and strings. ``*.safetensors`` holds a flat state dict of arrays
(``safetensors_io.py``), the format both libraries read and write without pickle. Neither
loader ever unpickles: a PyTorch ``torch.save`` file (a pickle) is refused by name.
"""

from __future__ import annotations

import os
from typing import Any

from minipar.backend import to_device
from minipar.snapshot import local
from minipar.snapshot.safetensors_io import is_safetensors_path, load_file, save_file


def save(obj: Any, f: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``obj`` to ``f``: a safetensors file for ``*.safetensors``, else a minipar snapshot.
    PyTorch's extra keywords (``pickle_module``, ``_use_new_zipfile_serialization``) are ignored."""
    if is_safetensors_path(f):
        if not isinstance(obj, dict):
            raise TypeError(f"a .safetensors file holds a flat dict of tensors (a state dict), got "
                            f"{type(obj).__name__}")
        save_file(obj, f)
        return
    local.save(obj, f)


def _moved(value: Any, device: str) -> Any:
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, device) for v in value)
    return to_device(value, device) if hasattr(value, "dtype") and hasattr(value, "shape") else value


def load(f: str | os.PathLike[str], map_location: Any = None, weights_only: Any = None,
         **kwargs: Any) -> Any:
    """Read ``f`` back (arrays as NumPy, or on ``map_location``: "cpu", "cuda", "cuda:N")."""
    if map_location is not None and not isinstance(map_location, str):
        map_location = str(map_location)  # a minipar.device or torch.device prints as its name
    state = load_file(f) if is_safetensors_path(f) else local.load(f)
    return state if map_location in (None, "cpu") else _moved(state, map_location)
