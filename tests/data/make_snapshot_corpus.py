"""Write the seed corpus of crafted snapshot files: ``python tests/data/make_snapshot_corpus.py``.

Each file in ``tests/data/snapshot_corpus/`` is a hostile or broken minipar snapshot that
``minipar.load`` must reject with a ``ValueError`` while reading few bytes
(``tests/test_snapshot_fuzz.py`` checks them). The zip archives are assembled by hand
(``zip_archive``) so that every header field can lie; checksums are recomputed wherever
a forger could recompute them, so each file fails for the reason its name says.

    bomb_deflated_entry.npz       a0.npy deflated: 64 KB that inflate to 64 MiB
    bomb_deflated_manifest.npz    manifest.json deflated the same way
    oversize_declared_entry.npz   a stored entry declaring ~4 GiB in a file of a few hundred bytes
    path_traversal_name.npz       an entry named ../../etc/passwd, named by the manifest too
    duplicate_entry_names.npz     two entries called a0.npy, the manifest's SHA-256 fits the second
    pickled_object_array.npz      a0.npy holds a pickled object array, the manifest says float64
    overlapping_entries.npz       two directory records pointing at the same bytes
    local_header_disagrees.npz    the directory says 8 bytes, the entry's local header 4 GiB
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CORPUS = Path(__file__).with_name("snapshot_corpus")
COMMENT_PREFIX = b"minipar.snapshot sha256="
DEFLATED = 8


@dataclass
class Entry:
    """One zip entry as it will be written: ``data`` is stored as given (already deflated when
    ``method`` is 8); ``size``, ``crc`` and the local header's fields default to the truth."""

    name: str
    data: bytes
    method: int = 0
    size: int | None = None  # declared uncompressed size (both headers)
    crc: int | None = None
    local_sizes: tuple[int, int] | None = None  # (stored, size) in the local header only
    offset: int | None = None  # directory's header offset (default: where it was written)
    write_local: bool = True  # False: a directory record only (pointing at another's bytes)


def zip_archive(entries: list[Entry], comment: bytes = b"") -> bytes:
    """A zip archive written field by field (no data descriptors, no zip64)."""
    body, directory = bytearray(), bytearray()
    for entry in entries:
        name = entry.name.encode()
        size = len(entry.data) if entry.size is None else entry.size
        crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
        stored, local_size = entry.local_sizes or (len(entry.data), size)
        offset = len(body) if entry.offset is None else entry.offset
        if entry.write_local:
            body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, entry.method, 0, 0x21,
                                crc, stored, local_size, len(name), 0) + name + entry.data
        directory += struct.pack("<4sBBBBHHHHIIIHHHHHII", b"PK\x01\x02", 20, 3, 20, 0, 0,
                                 entry.method, 0, 0x21, crc, len(entry.data), size, len(name),
                                 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(directory), len(body), len(comment))
    return bytes(body + directory + end + comment)


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def manifest_of(tree: Any) -> bytes:
    return json.dumps({"format": "minipar.snapshot", "version": 1, "tree": tree}).encode()


def array_node(entry: str, dtype: str, shape: list[int], data: bytes) -> dict[str, Any]:
    return {"array": {"entry": entry, "dtype": dtype, "shape": shape,
                      "sha256": hashlib.sha256(data).hexdigest()}}


def snapshot(entries: list[Entry], manifest: bytes) -> bytes:
    """``entries`` plus a stored manifest entry, its SHA-256 in the comment (what a forger does)."""
    return zip_archive(entries + [Entry("manifest.json", manifest)],
                       COMMENT_PREFIX + hashlib.sha256(manifest).hexdigest().encode())


def deflated_zeros(size: int) -> tuple[bytes, int]:
    """``(raw deflate stream, CRC-32)`` of ``size`` zero bytes (a multiple of 1 MiB), ~1/1000 its
    size: one fully flushed block of 1 MiB of zeros compresses to the same bytes every time."""
    block = 2**20
    assert size % block == 0, size
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // block):
        crc = zlib.crc32(bytes(block), crc)
    return chunk * (size // block) + compressor.flush(), crc


def bomb(size: int, where: str = "entry") -> bytes:
    """A snapshot whose array entry (or manifest) is deflated zeros that inflate to ``size``."""
    stream, crc = deflated_zeros(size)
    bomb_entry = Entry("a0.npy" if where == "entry" else "manifest.json", stream, DEFLATED, size, crc)
    tree = array_node("a0.npy", "<f8", [size // 8], b"")
    if where == "entry":
        return snapshot([bomb_entry], manifest_of(tree))
    comment = COMMENT_PREFIX + b"0" * 64  # the bomb goes off before any checksum can be compared
    return zip_archive([bomb_entry], comment)


def corpus() -> dict[str, bytes]:
    small = npy_bytes(np.arange(3.0))
    tree = {"dict": [[{"str": "w"}, array_node("a0.npy", "<f8", [3], small)]]}
    manifest = manifest_of(tree)
    pickled = npy_bytes(np.array([1, "two", (3,)], dtype=object), allow_pickle=True)
    evil = "../../etc/passwd"
    return {
        "bomb_deflated_entry.npz": bomb(64 * 2**20, "entry"),
        "bomb_deflated_manifest.npz": bomb(64 * 2**20, "manifest"),
        "oversize_declared_entry.npz": snapshot(
            [Entry("a0.npy", small, size=0xFFFFFFF0, local_sizes=(len(small), 0xFFFFFFF0))], manifest),
        "path_traversal_name.npz": snapshot(
            [Entry(evil, small)], manifest_of(array_node(evil, "<f8", [3], small))),
        "duplicate_entry_names.npz": snapshot(
            [Entry("a0.npy", npy_bytes(np.zeros(3))), Entry("a0.npy", small)], manifest),
        "pickled_object_array.npz": snapshot(
            [Entry("a0.npy", pickled)], manifest_of(array_node("a0.npy", "<f8", [3], pickled))),
        "overlapping_entries.npz": snapshot(
            [Entry("a0.npy", small), Entry("a1.npy", small, offset=0, write_local=False)],
            manifest_of({"list": [array_node("a0.npy", "<f8", [3], small),
                                  array_node("a1.npy", "<f8", [3], small)]})),
        "local_header_disagrees.npz": snapshot(
            [Entry("a0.npy", small, local_sizes=(0xFFFFFFF0, 0xFFFFFFF0))], manifest),
    }


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, data in corpus().items():
        (CORPUS / name).write_bytes(data)
        print(f"{name:32s} {len(data):8,d} bytes")


if __name__ == "__main__":
    sys.exit(main())
