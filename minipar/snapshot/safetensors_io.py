"""The safetensors format, read and written by minipar itself: the bridge to PyTorch.

    minipar.save(model.state_dict(), "model.safetensors")     # PyTorch reads it with
    model.load_state_dict(minipar.load("model.safetensors"))  #   safetensors.torch.load_file

A safetensors file is three parts, nothing executable among them:

    8 bytes      N, the header's length (unsigned little-endian 64-bit)
    N bytes      a JSON header: {"name": {"dtype": "F32", "shape": [out, in],
                 "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "text"}}
    the rest     every tensor's raw bytes, little-endian, C order, at its offsets

The reader checks, before reading any data, what the snapshot loader checks: the
header length against the file and a cap, the JSON's shape (dtypes known, shapes
non-negative integers, offsets inside the data, sizes equal to dtype x shape, no two
tensors overlapping); a file that breaks any rule is a ValueError naming it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from minipar.backend import to_device

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_}
NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}


def _host(value: Any) -> np.ndarray:
    array = value.array if hasattr(value, "array") and not isinstance(value, np.ndarray) else value
    if hasattr(array, "detach"):  # a torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(to_device(array, "cpu"))


def save_file(tensors: dict[str, Any], filename: str | os.PathLike[str],
              metadata: dict[str, str] | None = None) -> None:
    """Write ``{name: array or Tensor}`` as one safetensors file (atomically: temp file, rename)."""
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise TypeError("save_file needs a dict of str -> array/Tensor (a state dict)")
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata is a dict of str -> str")
        header["__metadata__"] = dict(metadata)
    arrays, offset = [], 0
    for name in sorted(tensors):  # safetensors orders by name too
        array = _host(tensors[name])
        if array.dtype not in NAMES:
            raise TypeError(f"safetensors has no dtype for {name!r} ({array.dtype})")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + little.nbytes]}
        arrays.append(little)
        offset += little.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # pad to 8 bytes, as the reference writer does
    temporary = f"{os.fspath(filename)}.tmp-{os.getpid()}"
    with open(temporary, "wb") as file:
        file.write(len(blob).to_bytes(8, "little"))
        file.write(blob)
        for array in arrays:
            file.write(array.tobytes())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, filename)


def _checked_header(raw: bytes, data_bytes: int, filename: str) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{filename}: the safetensors header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{filename}: the safetensors header is not a JSON object")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ValueError(f"{filename}: __metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{filename}: entry {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise ValueError(f"{filename}: entry {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ValueError(f"{filename}: entry {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise ValueError(f"{filename}: entry {name!r} has data_offsets {offsets!r} outside the "
                             f"{data_bytes} data bytes")
        expected = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != expected:
            raise ValueError(f"{filename}: entry {name!r} spans {offsets[1] - offsets[0]} bytes, its dtype "
                             f"and shape need {expected}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"{filename}: entries {first!r} and {second!r} overlap")
    return header


def load_file(filename: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """``{name: array}`` from a safetensors file (NumPy arrays, moved to ``device``)."""
    path = os.fspath(filename)
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        if size < 8:
            raise ValueError(f"{path}: {size} bytes is too short for a safetensors file")
        length = int.from_bytes(file.read(8), "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path}: the header claims {length} bytes; the file has {size - 8} after "
                             f"the length (and the cap is {MAX_HEADER_BYTES})")
        header = _checked_header(file.read(length), size - 8 - length, path)
        data = np.fromfile(file, dtype=np.uint8)  # what is left: the tensors' bytes
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        array = data[begin:end].view(dtype).reshape(entry["shape"]).astype(dtype.newbyteorder("="))
        tensors[name] = to_device(array, device)
    return tensors


def is_safetensors_path(path: Any) -> bool:
    return os.fspath(path).endswith(".safetensors") if isinstance(path, (str, os.PathLike)) else False
