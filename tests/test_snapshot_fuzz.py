"""Hostile snapshot files: zip bombs, lying headers, crafted manifests -- always a ValueError,
after reading few bytes, never another exception and never different data.

The crafted files come from ``tests/data/make_snapshot_corpus.py`` (the seed corpus in
``tests/data/snapshot_corpus/`` is what it writes); hypothesis then mutates a real snapshot
field by field.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minipar
from minipar.snapshot import local as snapshot_local

_spec = importlib.util.spec_from_file_location(
    "make_snapshot_corpus", Path(__file__).parent / "data" / "make_snapshot_corpus.py")
craft = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(craft)

MEMORY_LIMIT = 50 * 2**20


class CountingFile(io.BufferedReader):
    """A file that counts the bytes ``load`` reads from it."""

    total = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        CountingFile.total += len(data)
        return data


def load_counting(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BaseException | None, int, int]:
    """``(the exception load raised, bytes it read, its tracemalloc peak)``."""
    CountingFile.total = 0
    monkeypatch.setattr(snapshot_local, "open", lambda name, mode: CountingFile(io.FileIO(name, mode)),
                        raising=False)
    tracemalloc.start()
    try:
        minipar.load(path)
        raised = None
    except Exception as error:
        raised = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, CountingFile.total, peak


@functools.cache
def bomb(where: str) -> bytes:
    return craft.bomb(2 * 2**30, where)  # ~2 MB that inflate to 2 GiB (the reproduction)


# ----- decompression bombs and oversize entries (D1) ---------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["entry", "manifest"])
def test_a_deflate_bomb_is_a_value_error_before_anything_inflates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / "bomb.npz"
    path.write_bytes(bomb(where))
    raised, read, peak = load_counting(path, monkeypatch)
    assert peak < MEMORY_LIMIT and read <= path.stat().st_size, (peak, read)
    assert isinstance(raised, ValueError) and "is compressed (method 8)" in str(raised), raised


def test_an_entry_bigger_than_its_manifest_says_is_rejected_before_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 MB stored honestly, checksummed honestly -- but the manifest says 3 floats."""
    data = craft.npy_bytes(np.zeros(2**20))
    path = tmp_path / "big.npz"
    path.write_bytes(craft.snapshot([craft.Entry("a0.npy", data)],
                                    craft.manifest_of(craft.array_node("a0.npy", "<f8", [3], data))))
    raised, read, peak = load_counting(path, monkeypatch)
    assert read < 100_000 and peak < MEMORY_LIMIT, (read, peak)
    assert isinstance(raised, ValueError) and "declares 8,388,736 bytes" in str(raised), raised


# ----- the seed corpus ---------------------------------------------------------------------------
CORPUS_REASONS = {
    "bomb_deflated_entry.npz": "'a0.npy' is compressed",
    "bomb_deflated_manifest.npz": "'manifest.json' is compressed",
    "oversize_declared_entry.npz": "declares 4,294,967,280 bytes",
    "path_traversal_name.npz": "'../../etc/passwd' is not one minipar writes",
    "duplicate_entry_names.npz": "'a0.npy' appears twice",
    "pickled_object_array.npz": "Object arrays cannot be loaded",
    "overlapping_entries.npz": "only 0 bytes lie before the next entry",
    "local_header_disagrees.npz": "its local header says 4,294,967,280 bytes",
}


def test_the_seed_corpus_is_what_its_script_writes() -> None:
    written = craft.corpus()
    assert sorted(written) == sorted(CORPUS_REASONS) == sorted(p.name for p in craft.CORPUS.iterdir())
    for name, data in written.items():
        assert (craft.CORPUS / name).read_bytes() == data, f"rerun {craft.__name__}.py: {name} differs"


@pytest.mark.parametrize("name", sorted(CORPUS_REASONS))
def test_every_crafted_file_is_a_value_error_after_reading_few_bytes(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = craft.CORPUS / name
    raised, read, peak = load_counting(path, monkeypatch)
    # zipfile reads the end of a small archive twice while it looks for the directory
    assert peak < MEMORY_LIMIT and read <= 2 * path.stat().st_size, (peak, read)
    assert isinstance(raised, ValueError) and CORPUS_REASONS[name] in str(raised), raised


# ----- hypothesis: structured corruptions of a real snapshot -------------------------------------
STATE = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(2, np.float32), "step": 7, "tag": "run"}
BASE = minipar.snapshot.to_bytes(STATE)
with zipfile.ZipFile(io.BytesIO(BASE)) as _archive:
    INFOS = _archive.infolist()
    ENTRIES = {info.filename: _archive.read(info) for info in INFOS}
_end = len(BASE) - 22 - len(_archive.comment)  # the end-of-directory record
_directory_start = struct.unpack_from("<I", BASE, _end + 16)[0]
CENTRAL = [_directory_start]  # offsets of the directory records, in order
for _info in INFOS[:-1]:
    CENTRAL.append(CENTRAL[-1] + 46 + len(_info.filename) + len(_info.extra) + len(_info.comment))

# (offset in a local header, offset in a directory record, width) of each field
FIELDS = {"flags": (6, 8, 2), "method": (8, 10, 2), "crc": (14, 16, 4), "stored size": (18, 20, 4),
          "size": (22, 24, 4), "name length": (26, 28, 2), "extra length": (28, 30, 2),
          "header offset": (None, 42, 4)}


def same_as_state(got: Any) -> bool:
    return (type(got) is dict and list(got) == list(STATE)
            and all(type(got[k]) is type(v) for k, v in STATE.items())
            and all(got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes()
                    for k, v in STATE.items() if isinstance(v, np.ndarray))
            and got["step"] == 7 and got["tag"] == "run")


def assert_rejected_or_unchanged(data: bytes) -> None:
    try:
        got = minipar.snapshot.from_bytes(data)
    except ValueError:
        return
    assert same_as_state(got), got  # any other exception fails the test by itself


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                           | st.text(max_size=12) | st.sampled_from(["a0.npy", "a1.npy", "<f8", "|O",
                                                                     "manifest.json", "<U3", "V8"]),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@st.composite
def header_field_edits(draw: Any) -> bytes:
    index = draw(st.integers(0, len(INFOS) - 1))
    field = draw(st.sampled_from(sorted(FIELDS)))
    local, central, width = FIELDS[field]
    where = draw(st.sampled_from(["local", "central", "both"] if local is not None else ["central"]))
    limit = 2 ** (8 * width) - 1
    value = draw(st.integers(0, limit) | st.sampled_from([0, 1, 8, 12, 14, 99, limit, limit - 1]))
    data = bytearray(BASE)
    for which in ("local", "central"):
        if where in (which, "both"):
            base = INFOS[index].header_offset + local if which == "local" else CENTRAL[index] + central
            struct.pack_into("<H" if width == 2 else "<I", data, base, value)
    return bytes(data)


@st.composite
def name_edits(draw: Any) -> bytes:
    index = draw(st.integers(0, len(INFOS) - 1))
    length = len(INFOS[index].filename)
    name = draw(st.binary(min_size=length, max_size=length)
                | st.sampled_from([n.encode() for n in ENTRIES if len(n) == length] + [b"../a.npy"[:length]]))
    data = bytearray(BASE)
    for base in draw(st.sampled_from([[30], [46], [30, 46]])):
        offset = (INFOS[index].header_offset if base == 30 else CENTRAL[index]) + base
        data[offset:offset + len(name)] = name
    return bytes(data)


@st.composite
def manifest_edits(draw: Any) -> bytes:
    """A manifest edited where no edit can be a different valid state, re-checksummed."""
    document = json.loads(ENTRIES["manifest.json"])
    arrays = [value for _, value in document["tree"]["dict"] if "array" in value]
    target = draw(st.sampled_from(["format", "version", "array field", "array kind", "extra key"]))
    if target in ("format", "version"):
        document[target] = draw(json_values)
    elif target == "array field":
        body = draw(st.sampled_from(arrays))["array"]
        key = draw(st.sampled_from(["entry", "dtype", "shape", "sha256"]))
        if draw(st.booleans()):
            body[key] = draw(json_values | st.lists(st.integers(-3, 2**62), max_size=3))
        else:
            del body[key]
    elif target == "array kind":
        node = draw(st.sampled_from(arrays))
        node[draw(st.sampled_from(["scalar", "list", "dict", "int", "str", "eval"]))] = node.pop("array")
    else:
        draw(st.sampled_from(arrays))[draw(st.text(max_size=5))] = draw(json_values)
    entries = [craft.Entry(name, raw) for name, raw in ENTRIES.items() if name != "manifest.json"]
    return craft.snapshot(entries, json.dumps(document).encode())


corruptions = st.one_of(
    header_field_edits(),
    name_edits(),
    manifest_edits(),
    st.integers(0, len(BASE) - 1).map(lambda n: BASE[:n]),  # truncation
    st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)).map(  # any one byte overwritten
        lambda edit: BASE[:edit[0]] + bytes([edit[1]]) + BASE[edit[0] + 1:]),
)


def test_the_unmutated_snapshot_and_its_hand_built_copy_load() -> None:
    """The fuzzer's baselines are sound: untouched, both archives give the state back."""
    assert same_as_state(minipar.snapshot.from_bytes(BASE))
    rebuilt = craft.snapshot([craft.Entry(n, raw) for n, raw in ENTRIES.items() if n != "manifest.json"],
                             ENTRIES["manifest.json"])
    assert same_as_state(minipar.snapshot.from_bytes(rebuilt))


@pytest.mark.timeout(120)
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted=corruptions)
def test_any_structured_corruption_is_a_value_error_or_changes_nothing(corrupted: bytes) -> None:
    assert_rejected_or_unchanged(corrupted)
