"""Snapshots: ``save(state, path)`` / ``load(path)`` -- safe to load, atomic to write.

    minipar.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "rng": minipar.get_rng_state(), "step": 100}, "run/snapshot.npz")
    state = minipar.load("run/snapshot.npz")

What a state may hold: dicts (keys: str, int, float, bool, None or tuples of them,
kept with their types -- optimizer state is keyed by int), lists, tuples, arrays
(NumPy; CuPy and Tensors are saved from host copies and load as NumPy arrays),
NumPy scalars, Python ints of any size (an RNG state holds 128-bit integers),
floats (nan and inf too), strings, bools and None.

One snapshot is ONE file: an uncompressed ``.npz`` (a zip archive)::

    a0.npy, a1.npy, ...   one .npy entry per array (never object dtype)
    manifest.json         {"format": "minipar.snapshot", "version": 1, "tree": node}
    zip comment           "minipar.snapshot sha256=<hex SHA-256 of manifest.json>"

The tree is JSON: every value is a one-key object naming its type, e.g.
``{"int": "340282366920938463463374607431768211297"}``, ``{"dict": [[key, value], ...]}``
or ``{"array": {"entry": "a0.npy", "dtype": "<f8", "shape": [3, 4], "sha256": "..."}}``.

Safety: nothing is ever pickled. ``load`` opens the archive with
``np.load(path, allow_pickle=False)``, checks the manifest against the checksum in
the zip comment and every array entry against its SHA-256 *before* parsing it, and
parses with ``allow_pickle=False``. A truncated, bit-flipped or crafted file
(say, an entry holding a pickled object array) is a ``ValueError`` naming what is
wrong; it cannot run code. (Checksums catch damage, not forgery -- anyone can
recompute them; what makes a crafted file harmless is that nothing is unpickled.)
``to_bytes`` / ``from_bytes`` give the same archive in memory, e.g. to send a
state to another rank as a uint8 array.

Atomicity: ``save`` writes a temporary file in the target's directory, flushes and
fsyncs it, ``os.replace``-s it over ``path`` (atomic on POSIX), then fsyncs the
directory so the rename itself survives a power cut. A crash at any point leaves
either the old snapshot or the new one at ``path``, never a mixture. (A process
killed mid-save may leave its ``.<name>.*.tmp`` file behind; an exception cleans it up.
Like every ``mkstemp`` file, a snapshot is created with mode 0600: readable by its owner.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from minipar.backend import to_device
from minipar.tensor import Tensor

FORMAT = "minipar.snapshot"
VERSION = 1
MANIFEST = "manifest.json"
_COMMENT_PREFIX = b"minipar.snapshot sha256="
_ARRAY_KINDS = "biufcSU"  # bool, ints, floats, complex, bytes, str: never object ("O") or void


# ----- encoding: Python values -> JSON tree + array entries ------------------------------
class _Encoder:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
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
                    items = []
                    for key, item in value.items():
                        key_node = self.key(key, where)
                        items.append([key_node, self.node(item, f"{where}[{key!r}]")])
                    return {"dict": items}
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
        if array.dtype.kind not in _ARRAY_KINDS or array.dtype.hasobject:
            raise TypeError(
                f"save: {where} has dtype {array.dtype}; expected a bool, integer, float, complex "
                "or string dtype (object arrays would need pickle)"
            )
        entry = f"a{self.count}.npy"
        self.count += 1
        digest = _write_entry(self.archive, entry, array)
        return {"entry": entry, "dtype": array.dtype.str, "shape": list(array.shape), "sha256": digest}


class _HashingWriter:
    """Pass bytes on to ``target`` while hashing them (SHA-256 of the .npy entry)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.target.write(data)


def _write_entry(archive: zipfile.ZipFile, entry: str, array: np.ndarray) -> str:
    """One array as a .npy entry of the archive; returns the SHA-256 of its bytes."""
    with archive.open(entry, "w", force_zip64=array.nbytes > 2**30) as member:
        writer = _HashingWriter(member)
        np.lib.format.write_array(writer, array, allow_pickle=False)
    return writer.hash.hexdigest()


def _write_archive(state: Any, file: Any) -> None:
    """The snapshot archive of ``state`` written to an open binary ``file``."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        tree = _Encoder(archive).node(state, "state")
        manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}, allow_nan=False).encode()
        archive.writestr(MANIFEST, manifest)
        archive.comment = _COMMENT_PREFIX + hashlib.sha256(manifest).hexdigest().encode()


def save(state: Any, path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically (see the module docstring for the format)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"save: directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            _write_archive(state, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def to_bytes(state: Any) -> bytes:
    """The bytes ``save`` would write (to send a state to another rank as a uint8 array)."""
    buffer = io.BytesIO()
    _write_archive(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Any:
    """Inverse of ``to_bytes``, with every check ``load`` makes."""
    return _read(io.BytesIO(bytes(data)), "<bytes>")


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- decoding: verify first, then parse ----------------------------------------------------
class SnapshotError(ValueError):
    """A file that is not an intact minipar snapshot (a ``ValueError``)."""


def load(path: str | os.PathLike[str]) -> Any:
    """Read a snapshot written by ``save``; any damage or tampering is a ``ValueError``."""
    return _read(os.fspath(path), os.fspath(path))


def _read(source: Any, name: str) -> Any:
    try:
        npz = np.load(source, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # zipfile, numpy and struct errors: the bytes are not a snapshot
        raise SnapshotError(f"load: {name!r} is not a readable minipar snapshot ({error})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SnapshotError(f"load: {name!r} holds a bare .npy array, expected a minipar snapshot archive")
    with npz:
        try:
            return _Decoder(npz.zip, name).read()
        except SnapshotError:
            raise
        except Exception as error:  # BadZipFile (CRC), unsupported "compression", RecursionError, ...
            raise SnapshotError(
                f"load: {name!r} is damaged or not a minipar snapshot ({type(error).__name__}: {error})"
            ) from None


class _Decoder:
    def __init__(self, archive: zipfile.ZipFile, path: str) -> None:
        self.archive = archive
        self.path = path

    def fail(self, what: str) -> SnapshotError:
        return SnapshotError(f"load: {self.path!r} is damaged or not a minipar snapshot: {what}")

    def read(self) -> Any:
        names = set(self.archive.namelist())
        if MANIFEST not in names:
            raise self.fail(f"no {MANIFEST} entry (entries: {sorted(names)[:5]})")
        manifest = self.archive.read(MANIFEST)
        comment = self.archive.comment
        if not comment.startswith(_COMMENT_PREFIX):
            raise self.fail("no manifest checksum in the archive comment")
        expected = comment[len(_COMMENT_PREFIX):].decode("ascii", "replace")
        got = hashlib.sha256(manifest).hexdigest()
        if got != expected:
            raise self.fail(f"manifest SHA-256 is {got}, expected {expected}")
        try:
            document = json.loads(manifest)
        except json.JSONDecodeError as error:
            raise self.fail(f"manifest is not JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise self.fail(f"manifest format is not {FORMAT!r}")
        if document.get("version") != VERSION:
            raise self.fail(f"format version {document.get('version')!r}, expected {VERSION}")
        return self.node(document.get("tree"))

    def node(self, node: Any) -> Any:
        if not isinstance(node, dict) or len(node) != 1:
            raise self.fail(f"a tree node must be a one-key object, got {str(node)[:80]}")
        ((kind, body),) = node.items()
        if kind == "none" and body is None:
            return None
        if kind == "bool" and isinstance(body, bool):
            return body
        if kind == "str" and isinstance(body, str):
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
        if kind in ("array", "scalar") and isinstance(body, dict):
            array = self.array(body)
            if kind == "scalar":
                if array.shape != ():
                    raise self.fail(f"scalar node holds an array of shape {array.shape}")
                return array[()]
            return array
        raise self.fail(f"unknown node {kind!r}")

    def array(self, info: dict[str, Any]) -> np.ndarray:
        entry, expected = info.get("entry"), info.get("sha256")
        if not isinstance(entry, str) or entry not in self.archive.namelist() or entry == MANIFEST:
            raise self.fail(f"array entry {entry!r} is missing")
        raw = self.archive.read(entry)  # zipfile also checks the entry's CRC-32 here
        got = hashlib.sha256(raw).hexdigest()
        if got != expected:
            raise self.fail(f"{entry} SHA-256 is {got}, expected {expected}")
        try:
            array = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
        except ValueError as error:  # e.g. "Object arrays cannot be loaded when allow_pickle=False"
            raise self.fail(f"{entry}: {error}") from None
        if array.dtype.str != info.get("dtype") or list(array.shape) != info.get("shape"):
            raise self.fail(
                f"{entry} holds dtype {array.dtype.str} shape {list(array.shape)}, manifest says "
                f"dtype {info.get('dtype')} shape {info.get('shape')}"
            )
        return array
