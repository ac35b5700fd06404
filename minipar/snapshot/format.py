"""The snapshot file format, and the checks a file passes before any of it is believed.

One snapshot is ONE uncompressed ``.npz`` (a zip archive)::

    a0.npy, a1.npy, ...   one .npy entry per array (never object dtype), stored, not deflated
    manifest.json         {"format": "minipar.snapshot", "version": 1, "tree": node}
    zip comment           "minipar.snapshot sha256=<hex SHA-256 of manifest.json>"

The tree is JSON: every value is a one-key object naming its type, e.g.
``{"int": "340282366920938463463374607431768211297"}``, ``{"dict": [[key, value], ...]}``
or ``{"array": {"entry": "a0.npy", "dtype": "<f8", "shape": [3, 4], "sha256": "..."}}``.

Reading treats the file as hostile until each part is checked, and reads no byte it has
not first bounded (``local.load`` does the reading, in this order):

1. the zip directory (``check_directory``): only the names minipar writes, each once; every
   entry stored (a deflated entry could inflate 1000-fold: a zip bomb), not encrypted, its
   bytes inside the file and overlapping no other entry's;
2. each entry's local header (``check_local_header``) says what the directory says;
3. the manifest: at most ``MAX_MANIFEST_BYTES``, its SHA-256 equal to the zip comment's;
4. each array: the manifest's dtype and shape (``array_spec``) bound the entry's size
   before it is read (dtype x shape + at most ``NPY_HEADER_MAX`` bytes of .npy header);
   its bytes match the manifest's SHA-256; the .npy header says the manifest's dtype and
   shape (``parse_npy``); nothing is parsed with pickle.

So a hostile file's reach is bounded by its own size: a load holds the result (no bigger
than the file's entries), one entry's raw bytes at a time and the parsed manifest. Any
failure is a ``SnapshotError`` (a ``ValueError``) naming what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.backend import to_device
from minipar.tensor import Tensor

FORMAT = "minipar.snapshot"
VERSION = 1
MANIFEST = "manifest.json"
COMMENT_PREFIX = b"minipar.snapshot sha256="
ARRAY_KINDS = "biufcSU"  # bool, ints, floats, complex, bytes, str: never object ("O") or void
MAX_MANIFEST_BYTES = 256 * 2**20  # a tree of ~10 million values; save refuses a bigger one
NPY_HEADER_MAX = 4096  # magic + length + header dict of <= 64 dims, padded to 64 bytes
MAX_NDIM = 64  # NumPy's own limit
ENTRY_NAME = re.compile(r"a(0|[1-9][0-9]*)\.npy")
ALLOWED_FLAGS = 0x800  # "names are UTF-8"; no encryption (0x1), no data descriptor (0x8), ...
# signature, version, flags, method, time, date, crc, stored size, size, name and extra lengths
LOCAL_HEADER, LOCAL_SIGNATURE = struct.Struct("<4sHHHHHIIIHH"), b"PK\x03\x04"


class SnapshotError(ValueError):
    """A file that is not an intact minipar snapshot (a ``ValueError``)."""


# ----- encoding: Python values -> JSON tree (arrays handed to ``write``) --------------------
class Encoder:
    """``node(value)`` is the JSON tree of ``value``; each array goes to ``write(entry, array)``,
    which stores it and returns the SHA-256 of its .npy bytes."""

    def __init__(self, write: Callable[[str, np.ndarray], str]) -> None:
        self.write = write
        self.count = 0
        self.on_path: set[int] = set()  # ids of containers being encoded (cycle check)

    def node(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {"none": None}
        if isinstance(value, np.generic):  # before float: np.float64 subclasses float
            return {"scalar": self.array(np.asarray(value), where)}
        if isinstance(value, bool):  # before int: bool subclasses int
            return {"bool": value}
        if isinstance(value, int):  # a string, as JSON readers differ on big ints; hex when huge
            return {"int": str(value) if value.bit_length() < 1000 else hex(value)}
        if isinstance(value, float):
            return {"float": repr(value)}  # repr round-trips exactly, nan/inf too
        if isinstance(value, str):
            return {"str": value}
        if isinstance(value, Tensor):
            value = value.array
        if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy or cupy array
            return {"array": self.array(to_device(value, "cpu"), where)}
        if isinstance(value, (dict, list, tuple)):
            if id(value) in self.on_path:
                raise ValueError(f"save: {where} contains itself (a reference cycle)")
            self.on_path.add(id(value))
            try:
                if isinstance(value, dict):
                    return {"dict": [[self.key(key, where), self.node(item, f"{where}[{key!r}]")]
                                     for key, item in value.items()]}
                kind = "list" if isinstance(value, list) else "tuple"
                return {kind: [self.node(item, f"{where}[{i}]") for i, item in enumerate(value)]}
            finally:
                self.on_path.discard(id(value))
        raise TypeError(
            f"save: {where} is a {type(value).__name__}; expected a dict, list, tuple, array, "
            "number, string, bool or None"
        )

    def key(self, key: Any, where: str) -> dict[str, Any]:
        if isinstance(key, np.integer):
            key = int(key)
        if key is None or isinstance(key, (bool, int, float, str)):
            return self.node(key, where)
        if isinstance(key, tuple):
            return {"tuple": [self.key(k, where) for k in key]}
        raise TypeError(
            f"save: {where} has a key of type {type(key).__name__}; expected str, int, float, "
            "bool, None or a tuple of them"
        )

    def array(self, array: np.ndarray, where: str) -> dict[str, Any]:
        if array.dtype.kind not in ARRAY_KINDS or array.dtype.hasobject:
            raise TypeError(
                f"save: {where} has dtype {array.dtype}; expected a bool, integer, float, complex "
                "or string dtype (object arrays would need pickle)"
            )
        entry = f"a{self.count}.npy"
        self.count += 1
        digest = self.write(entry, array)
        return {"entry": entry, "dtype": array.dtype.str, "shape": list(array.shape), "sha256": digest}


def manifest_bytes(tree: dict[str, Any]) -> bytes:
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}, allow_nan=False).encode()
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise ValueError(f"save: the manifest would be {len(manifest):,} bytes, over the "
                         f"{MAX_MANIFEST_BYTES:,} a snapshot may hold (put the values in arrays)")
    return manifest


def comment_for(manifest: bytes) -> bytes:
    return COMMENT_PREFIX + hashlib.sha256(manifest).hexdigest().encode()


# ----- decoding: JSON tree -> Python values (arrays fetched by ``read_array``) ----------------
class Decoder:
    """``node(tree)`` is the value of a checked tree; ``read_array(info)`` turns an array node's
    body into the checked array (each entry may be named once)."""

    def __init__(self, read_array: Callable[[Any], np.ndarray], fail: Callable[[str], SnapshotError]) -> None:
        self.read_array = read_array
        self.fail = fail

    def node(self, node: Any) -> Any:
        if not isinstance(node, dict) or len(node) != 1:
            raise self.fail(f"a tree node must be a one-key object, got {str(node)[:80]}")
        ((kind, body),) = node.items()
        if kind == "none" and body is None:
            return None
        if kind in ("bool", "str") and isinstance(body, bool if kind == "bool" else str):
            return body
        if kind in ("int", "float") and isinstance(body, str):
            try:
                return int(body, 0) if kind == "int" else float(body)
            except ValueError:
                raise self.fail(f"{kind} node holds {body[:40]!r}") from None
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [self.node(item) for item in body]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and isinstance(body, list):
            result = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.fail("a dict item must be a [key, value] pair")
                key, value = self.node(pair[0]), self.node(pair[1])
                try:
                    result[key] = value
                except TypeError:
                    raise self.fail(f"unhashable dict key {str(key)[:40]}") from None
            return result
        if kind in ("array", "scalar"):
            array = self.read_array(body)
            if kind == "scalar":
                if array.shape != ():
                    raise self.fail(f"scalar node holds an array of shape {array.shape}")
                return array[()]
            return array
        raise self.fail(f"unknown node {str(kind)[:40]!r}")


# ----- checks, in the order a load makes them ------------------------------------------------
def check_directory(infos: list[zipfile.ZipInfo], file_size: int,
                    fail: Callable[[str], SnapshotError]) -> dict[str, tuple[zipfile.ZipInfo, int]]:
    """``{name: (info, end)}``: the entries minipar writes, where ``end`` bounds the entry's bytes
    (the next entry's header, or the end of the file), so that no two entries share a byte."""
    by_offset = sorted(infos, key=lambda info: info.header_offset)
    directory = {}
    for i, info in enumerate(by_offset):
        name = info.filename
        if name != MANIFEST and not ENTRY_NAME.fullmatch(name):
            raise fail(f"entry {name[:60]!r} is not one minipar writes (a{{n}}.npy or {MANIFEST})")
        if name in directory:
            raise fail(f"entry {name!r} appears twice")
        if info.compress_type != zipfile.ZIP_STORED:
            raise fail(f"entry {name!r} is compressed (method {info.compress_type}); minipar "
                       "stores entries uncompressed and reads no other kind")
        if info.flag_bits & ~ALLOWED_FLAGS:
            raise fail(f"entry {name!r} has zip flags {info.flag_bits:#x} (encrypted or streamed)")
        end = by_offset[i + 1].header_offset if i + 1 < len(by_offset) else file_size
        if info.compress_size != info.file_size or info.file_size > end - info.header_offset:
            raise fail(f"entry {name!r} declares {info.file_size:,} bytes ({info.compress_size:,} "
                       f"stored) at offset {info.header_offset:,}, but only {end - info.header_offset:,}"
                       " bytes lie before the next entry or the end of the file")
        directory[name] = (info, end)
    return directory


def check_local_header(header: bytes, name_and_extra: bytes, info: zipfile.ZipInfo,
                       fail: Callable[[str], SnapshotError]) -> None:
    """The local header before an entry's bytes (``header``: its 30 fixed bytes, then the name and
    extra field) must say what the directory's ``info`` says: another zip reader may believe it."""
    if len(header) < LOCAL_HEADER.size or header[:4] != LOCAL_SIGNATURE:
        raise fail(f"entry {info.filename!r} has no local header at offset {info.header_offset:,}")
    _, _, flags, method, _, _, crc, stored, size, name_length, _ = LOCAL_HEADER.unpack(header)
    name, extra = name_and_extra[:name_length], name_and_extra[name_length:]
    if (flags, method, crc, name) != (info.flag_bits, info.compress_type, info.CRC, info.filename.encode()):
        raise fail(f"entry {info.filename!r}: its local header says name {name[:60]!r} flags {flags:#x} "
                   f"method {method} CRC {crc:#010x}, unlike the directory")
    if (stored, size) == (0xFFFFFFFF, 0xFFFFFFFF):  # zip64: the sizes are in extra field 1
        position = 0
        while position + 4 <= len(extra):
            kind, length = struct.unpack_from("<HH", extra, position)
            if kind == 1 and length >= 16:
                size, stored = struct.unpack_from("<QQ", extra, position + 4)
                break
            position += 4 + length
    if (stored, size) != (info.compress_size, info.file_size):
        raise fail(f"entry {info.filename!r}: its local header says {size:,} bytes ({stored:,} "
                   f"stored), the directory {info.file_size:,} ({info.compress_size:,})")


def parse_manifest(raw: bytes, comment: bytes, fail: Callable[[str], SnapshotError]) -> Any:
    """The tree of a checksummed manifest."""
    if not comment.startswith(COMMENT_PREFIX):
        raise fail("no manifest checksum in the archive comment")
    expected = comment[len(COMMENT_PREFIX):].decode("ascii", "replace")
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise fail(f"manifest SHA-256 is {got}, expected {expected}")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise fail(f"manifest is not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise fail(f"manifest format is not {FORMAT!r}")
    if document.get("version") != VERSION:
        raise fail(f"format version {str(document.get('version'))[:40]}, expected {VERSION}")
    return document.get("tree")


def array_spec(info: Any, fail: Callable[[str], SnapshotError]) -> tuple[str, np.dtype, tuple[int, ...], str]:
    """``(entry, dtype, shape, sha256)`` of an array node, each checked for what minipar writes."""
    if not isinstance(info, dict):
        raise fail(f"an array node must be an object, got {str(info)[:60]}")
    entry, dtype_str, shape, digest = (info.get(k) for k in ("entry", "dtype", "shape", "sha256"))
    if not isinstance(entry, str) or not ENTRY_NAME.fullmatch(entry):
        raise fail(f"array entry {str(entry)[:60]!r} is missing")
    if not isinstance(dtype_str, str) or len(dtype_str) > 32:
        raise fail(f"{entry}: dtype {str(dtype_str)[:40]!r} is not a dtype string")
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError, SyntaxError):
        raise fail(f"{entry}: dtype {dtype_str!r} is not a NumPy dtype") from None
    if dtype.hasobject or dtype.kind == "O":
        raise fail(f"{entry}: dtype {dtype_str!r} is an object dtype, which only pickle could load")
    if dtype.kind not in ARRAY_KINDS or dtype.str != dtype_str:
        raise fail(f"{entry}: dtype {dtype_str!r} is not one minipar writes (bool, number or string)")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise fail(f"{entry}: shape {str(shape)[:60]} is not a list of at most {MAX_NDIM} sizes >= 0")
    if not isinstance(digest, str):
        raise fail(f"{entry}: sha256 {str(digest)[:60]!r} is not a hex digest")
    return entry, dtype, tuple(shape), digest


def parse_npy(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], entry: str,
              fail: Callable[[str], SnapshotError]) -> np.ndarray:
    """The array in the .npy bytes ``raw``, whose header must say ``dtype`` and ``shape`` and be
    followed by exactly their bytes. Never unpickles."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} (minipar writes 1.0 or 2.0)")
        got_shape, fortran_order, got_dtype = read_header(stream, max_header_size=NPY_HEADER_MAX)
    except ValueError as error:
        raise fail(f"{entry}: {error}") from None
    if got_dtype.hasobject:
        raise fail(f"{entry}: Object arrays cannot be loaded (the .npy header says dtype {got_dtype})")
    if got_dtype.str != dtype.str or tuple(got_shape) != shape:
        raise fail(f"{entry} holds dtype {got_dtype.str} shape {list(got_shape)}, manifest says "
                   f"dtype {dtype.str} shape {list(shape)}")
    count = math.prod(shape)
    start = stream.tell()
    if len(raw) - start != count * dtype.itemsize:
        raise fail(f"{entry} has {len(raw) - start:,} data bytes, dtype x shape needs "
                   f"{count * dtype.itemsize:,}")
    order = "F" if fortran_order else "C"
    if count == 0 or dtype.itemsize == 0:
        return np.empty(shape, dtype=dtype, order=order)
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    array = flat.reshape(shape[::-1]).transpose() if fortran_order else flat.reshape(shape)
    return array.copy(order="K")  # writable, owning its memory, in the layout it was saved in
