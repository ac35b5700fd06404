"""Snapshots: ``save(state, path)`` / ``load(path)`` -- safe to load, atomic to write.

    minipar.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "rng": minipar.get_rng_state(), "step": 100}, "run/snapshot.npz")
    state = minipar.load("run/snapshot.npz")

What a state may hold: dicts (keys: str, int, float, bool, None or tuples of them,
kept with their types -- optimizer state is keyed by int), lists, tuples, arrays
(NumPy; CuPy and Tensors are saved from host copies and load as NumPy arrays),
NumPy scalars, Python ints of any size (an RNG state holds 128-bit integers),
floats (nan and inf too), strings, bools and None. The file is an uncompressed
zip of .npy entries and a JSON manifest: ``format.py`` describes it.

Safety: nothing is ever pickled, and no byte is read before it is bounded. ``load``
reads the zip directory once, checks it and each entry (``format.py`` lists the
checks: stored entries only, sizes inside the file and as the manifest's dtype and
shape require, SHA-256 of the manifest and of every entry) *before* reading or
parsing anything. A truncated, bit-flipped or crafted file (a zip bomb, an entry
holding a pickled object array) is a ``ValueError`` naming what is wrong; it cannot
run code, and cannot make ``load`` take much more memory than the file's own size.
(Checksums catch damage, not forgery -- anyone can recompute them; what makes a
crafted file harmless is that nothing is unpickled and every size is checked.)
``to_bytes`` / ``from_bytes`` give the same archive in memory, e.g. to send a state
to another rank as a uint8 array.

Atomicity: ``save`` writes a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` in
the target's directory, flushes and fsyncs it, ``os.replace``-s it over ``path``
(atomic on POSIX), then fsyncs the directory so the rename itself survives a power
cut. A crash at any point leaves either the old snapshot or the new one at ``path``,
never a mixture; an exception removes the temporary file. A process *killed*
mid-save cannot clean up, so each ``save`` first removes the temporaries of the same
``path`` whose writer (same host, that pid) is no longer running. A live writer's
file is never touched -- not even an old one: a concurrent save of the same path
may have started first -- and the name pattern matches one path only, so saves of
different paths never remove each other's files. (Temporaries written on another
host sharing the directory are left alone: their writer cannot be asked.) Like
every ``mkstemp`` file, a snapshot is created with mode 0600: readable by its owner.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import socket
import tempfile
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from minipar.snapshot import format as fmt
from minipar.snapshot.format import MANIFEST, SnapshotError

_ZIP64_ABOVE = 2**30  # entries bigger than this are written with zip64 headers


# ----- writing -------------------------------------------------------------------------------
class _HashingWriter:
    """Pass bytes on to ``target`` while hashing them (SHA-256 of the .npy entry)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.target.write(data)


def _write_entry(archive: zipfile.ZipFile, entry: str, array: np.ndarray) -> str:
    """One array as a stored .npy entry of the archive; returns the SHA-256 of its bytes."""
    with archive.open(entry, "w", force_zip64=array.nbytes > _ZIP64_ABOVE) as member:
        writer = _HashingWriter(member)
        np.lib.format.write_array(writer, array, allow_pickle=False)
    return writer.hash.hexdigest()


def _write_archive(state: Any, file: Any) -> None:
    """The snapshot archive of ``state`` written to an open, seekable binary ``file``."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        # _write_entry is looked up at each call, so a test may replace it
        tree = fmt.Encoder(lambda entry, array: _write_entry(archive, entry, array)).node(state, "state")
        manifest = fmt.manifest_bytes(tree)
        archive.writestr(MANIFEST, manifest)
        archive.comment = fmt.comment_for(manifest)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _is_running(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, run by another user
        return True
    return True


def _remove_dead_temporaries(directory: str, name: str) -> list[str]:
    """Remove ``.<name>.<host>.<pid>.<random>.tmp`` files of this host whose pid is not running.

    The three dot-free fields after ``name`` make the pattern match this one path's files:
    ``a.npz`` never matches a temporary of ``a.npz.x``."""
    pattern = re.compile(rf"\.{re.escape(name)}\.([A-Za-z0-9-]+)\.([0-9]+)\.[a-z0-9_]+\.tmp")
    host, removed = _host_tag(), []
    for candidate in os.listdir(directory):
        match = pattern.fullmatch(candidate)
        if match and match.group(1) == host and not _is_running(int(match.group(2))):
            try:
                os.unlink(os.path.join(directory, candidate))
                removed.append(candidate)
            except FileNotFoundError:  # another save removed it first
                pass
    return removed


def save(state: Any, path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically (see the module docstring)."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"save: directory {directory!r} does not exist")
    _remove_dead_temporaries(directory, name)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.{_host_tag()}.{os.getpid()}.", suffix=".tmp")
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


# ----- reading: bound, check, then parse -----------------------------------------------------
def load(path: str | os.PathLike[str]) -> Any:
    """Read a snapshot written by ``save``; any damage or tampering is a ``ValueError``."""
    name = os.fspath(path)
    with open(name, "rb") as file:  # FileNotFoundError, IsADirectoryError stay what they are
        return _read(file, name)


def from_bytes(data: bytes) -> Any:
    """Inverse of ``to_bytes``, with every check ``load`` makes."""
    return _read(io.BytesIO(bytes(data)), "<bytes>")


def _read(file: BinaryIO, name: str) -> Any:
    def fail(what: str) -> SnapshotError:
        return SnapshotError(f"load: {name!r} is damaged or not a minipar snapshot: {what}")

    try:
        return _Reader(file, fail).read()
    except SnapshotError:
        raise
    except Exception as error:  # BadZipFile, RecursionError (a deeply nested tree), ...
        raise fail(f"{type(error).__name__}: {error}") from None


class _Reader:
    """One pass over a snapshot file: its zip directory is read once, every entry checked."""

    def __init__(self, file: BinaryIO, fail: Any) -> None:
        self.file, self.fail = file, fail
        self.used: set[str] = set()

    def read(self) -> Any:
        size = self.file.seek(0, os.SEEK_END)
        if size >= 6 and (self.file.seek(0), self.file.read(6))[1] == b"\x93NUMPY":
            raise self.fail("it holds a bare .npy array, expected a minipar snapshot archive")
        try:
            with zipfile.ZipFile(self.file) as archive:  # parses the directory, reads no entry
                infos, comment = archive.infolist(), archive.comment
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
            raise self.fail(f"it is not a readable zip archive ({error})") from None
        self.directory = fmt.check_directory(infos, size, self.fail)
        if MANIFEST not in self.directory:
            raise self.fail(f"no {MANIFEST} entry (entries: {sorted(self.directory)[:5]})")
        raw = self.entry(MANIFEST, 0, fmt.MAX_MANIFEST_BYTES)
        tree = fmt.parse_manifest(raw, comment, self.fail)
        return fmt.Decoder(self.array, self.fail).node(tree)

    def array(self, node_body: Any) -> np.ndarray:
        entry, dtype, shape, digest = fmt.array_spec(node_body, self.fail)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        raw = self.entry(entry, nbytes, nbytes + fmt.NPY_HEADER_MAX)
        got = hashlib.sha256(raw).hexdigest()
        if got != digest:
            raise self.fail(f"{entry} SHA-256 is {got}, expected {digest[:64]}")
        return fmt.parse_npy(raw, dtype, shape, entry, self.fail)

    def entry(self, name: str, least: int, most: int) -> bytes:
        """The bytes of entry ``name``, whose size must lie in [least, most]: checked first."""
        if name not in self.directory:
            raise self.fail(f"array entry {name!r} is missing")
        if name in self.used:
            raise self.fail(f"entry {name!r} is named twice in the manifest")
        self.used.add(name)
        info, end = self.directory[name]
        if not least <= info.file_size <= most:
            raise self.fail(f"entry {name!r} declares {info.file_size:,} bytes; what the manifest "
                            f"says it holds takes {least:,} to {most:,}")
        self.file.seek(info.header_offset)
        header = self.file.read(fmt.LOCAL_HEADER.size)
        lengths = fmt.LOCAL_HEADER.unpack(header)[-2:] if len(header) == fmt.LOCAL_HEADER.size else (0, 0)
        fmt.check_local_header(header, self.file.read(sum(lengths)), info, self.fail)
        start = info.header_offset + fmt.LOCAL_HEADER.size + sum(lengths)
        if start + info.file_size > end:
            raise self.fail(f"entry {name!r} runs past the next entry or the end of the file")
        raw = self.file.read(info.file_size)
        if len(raw) != info.file_size or zlib.crc32(raw) != info.CRC:
            raise self.fail(f"entry {name!r} is truncated or its CRC-32 does not match")
        return raw
