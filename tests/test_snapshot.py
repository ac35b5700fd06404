"""minipar.save / minipar.load: exact round trips, damage is a ValueError, writes are atomic.

The oracle for a round trip is the value itself: same Python types (int keys stay
ints, tuples stay tuples, numpy scalars stay numpy scalars) and arrays equal
byte for byte with the same dtype and shape.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minipar
from minipar import nn, optim
from minipar.snapshot import local as snapshot_module


def assert_identical(got: Any, expected: Any, where: str = "state") -> None:
    """Same type at every level; arrays identical in dtype, shape and bytes (nan included)."""
    if isinstance(expected, minipar.Tensor):
        expected = expected.array
    if isinstance(expected, OrderedDict):
        expected = dict(expected)
    assert type(got) is type(expected), f"{where}: {type(got).__name__} != {type(expected).__name__}"
    if isinstance(expected, np.ndarray) or isinstance(expected, np.generic):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        assert np.asarray(got).tobytes() == np.ascontiguousarray(expected).tobytes(), where
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            assert [type(k) for k in got if k == key] == [type(key)], f"{where}: key type of {key!r}"
            assert_identical(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_identical(g, e, f"{where}[{i}]")
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(got), where
    elif isinstance(expected, float):
        assert got == expected and np.copysign(1, got) == np.copysign(1, expected), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def round_trip(state: Any, tmp_path: Path) -> Any:
    path = tmp_path / "snapshot.npz"
    minipar.save(state, path)
    return minipar.load(path)


# ----- round trips ------------------------------------------------------------------------
ALL_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128", ">f8", "<U5", "S3"]


def test_every_supported_array_dtype_and_layout_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    state = {}
    for dtype in ALL_DTYPES:
        raw = rng.integers(0, 100, size=(3, 4))
        state[dtype] = raw.astype(str).astype(dtype) if dtype[1] in "US" else raw.astype(dtype)
    state["0-d"] = np.array(3.5)
    state["empty"] = np.zeros((0, 7), dtype=np.float32)
    state["transposed"] = np.arange(12.0).reshape(3, 4).T  # not C-contiguous
    state["strided"] = np.arange(20)[::3]
    state["fortran"] = np.asfortranarray(rng.standard_normal((4, 5)))
    state["specials"] = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324])
    assert_identical(round_trip(state, tmp_path), state)


def test_python_values_keep_their_types_including_huge_ints(tmp_path: Path) -> None:
    state = {
        "step": 1000, "negative": -7, "int128": 2**127 + 12345, "huge": -(3**5000),
        "lr": 0.1, "nan": float("nan"), "inf": float("-inf"), "minus_zero": -0.0,
        "name": "réseau ∑ \n\"quoted\"", "empty": "", "flag": True, "off": False, "nothing": None,
        "betas": (0.9, 0.999), "nested_list": [[1, 2.5], [], ["a", None]], "empty_dict": {},
        "numpy_scalars": [np.float32(1.25), np.float64(2.5), np.int64(-3), np.uint8(7), np.bool_(True)],
        "tensor": minipar.tensor([1.0, 2.0]),
    }
    assert_identical(round_trip(state, tmp_path), state)


def test_dict_keys_keep_their_types_and_order(tmp_path: Path) -> None:
    state = {3: "int", "3": "str", 1.5: "float", True: "bool", None: "none", (1, "a"): "tuple",
             0: {"inner": 1}, -2**70: "big int key"}
    got = round_trip(state, tmp_path)
    assert_identical(got, state)
    assert list(got) == list(state)


def test_rng_state_round_trip_repeats_the_same_draws(tmp_path: Path) -> None:
    minipar.manual_seed(1234)
    minipar.randn(17)  # move away from the seed's start
    saved = minipar.get_rng_state()
    expected = minipar.randn(5).array
    minipar.manual_seed(99)
    minipar.set_rng_state(round_trip(saved, tmp_path))
    np.testing.assert_array_equal(minipar.randn(5).array, expected)


def test_model_and_optimizer_state_dicts_round_trip_and_reload(tmp_path: Path) -> None:
    minipar.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = minipar.randn(6, 4), np.arange(6) % 3
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3}
    got = round_trip(state, tmp_path)
    assert_identical(got, state)
    assert all(type(k) is int for k in got["optimizer"]["state"])  # parameter indices

    # a fresh model and optimizer loaded from the snapshot take the same next step
    minipar.manual_seed(7)
    clone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    clone_opt = optim.SGD(clone.parameters(), lr=0.5)
    clone.load_state_dict(got["model"])
    clone_opt.load_state_dict(got["optimizer"])
    for m, o in ((model, opt), (clone, clone_opt)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        np.testing.assert_array_equal(a.array, b.array)


leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
          | st.builds(lambda n, d: (np.arange(n) % 3).astype(d), st.integers(0, 5),
                      st.sampled_from(["int32", "float64", "bool", "complex64"])))
keys = st.integers() | st.text(max_size=5) | st.booleans() | st.none() | st.floats(allow_nan=False)
states = st.recursive(
    leaves,
    lambda children: (st.lists(children, max_size=4) | st.tuples(children, children)
                      | st.dictionaries(keys, children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=states)
def test_any_nested_state_round_trips_exactly(tmp_path: Path, state: Any) -> None:
    assert_identical(round_trip(state, tmp_path), state)


def test_cupy_arrays_are_saved_from_host_copies(tmp_path: Path) -> None:
    cupy = pytest.importorskip("cupy")
    if not minipar.backend.cupy_available():
        pytest.skip("no GPU")
    got = round_trip({"w": cupy.arange(6.0)}, tmp_path)
    assert isinstance(got["w"], np.ndarray)
    np.testing.assert_array_equal(got["w"], np.arange(6.0))


# ----- what cannot be saved ------------------------------------------------------------------
@pytest.mark.parametrize("bad, expected", [
    ({"model": {"w": object()}}, "state['model']['w'] is a object"),
    ({"s": {1, 2}}, "state['s'] is a set"),
    ({"o": np.array([{}, 1], dtype=object)}, "state['o'] has dtype object"),
    ({frozenset(): 1}, "key of type frozenset"),
])
def test_unsupported_values_are_a_type_error_naming_where(tmp_path: Path, bad: Any, expected: str) -> None:
    with pytest.raises(TypeError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        minipar.save(bad, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []  # the failed save left nothing behind


def test_a_state_containing_itself_is_a_value_error(tmp_path: Path) -> None:
    cyclic: dict[str, Any] = {"a": [1]}
    cyclic["a"].append(cyclic)
    with pytest.raises(ValueError, match="reference cycle"):
        minipar.save(cyclic, tmp_path / "x.npz")


def test_saving_into_a_missing_directory_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        minipar.save({}, tmp_path / "missing" / "x.npz")


# ----- damaged and crafted files ------------------------------------------------------------------
def small_state() -> dict[str, Any]:
    return {"w": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.ones(3, np.float32),
            "step": 2**100, "opt": {0: {"momentum_buffer": np.full(4, 0.5)}}, "tag": "run-1"}


def test_every_truncation_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    minipar.save(small_state(), path)
    data = path.read_bytes()
    damaged = tmp_path / "damaged.npz"
    for length in range(0, len(data), 7):
        damaged.write_bytes(data[:length])
        with pytest.raises(ValueError, match="minipar snapshot|damaged"):
            minipar.load(damaged)


def test_a_flipped_byte_anywhere_is_a_value_error_or_changes_nothing(tmp_path: Path) -> None:
    """Every byte of every entry (arrays, manifest) is checksummed; a flip elsewhere may only hit
    zip header fields that are never read (local-header copies, timestamps): then the data is intact."""
    path = tmp_path / "s.npz"
    original = small_state()
    minipar.save(original, path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        payload = set()
        for info in archive.infolist():  # local header: 30 bytes + name + extra, then the bytes
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            payload.update(range(start, start + info.compress_size))
    undetected = []
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        try:
            got = snapshot_module.from_bytes(bytes(flipped))  # load's checks, without the disk
        except ValueError:
            continue
        undetected.append(position)
        assert_identical(got, original, f"state (byte {position} flipped)")
    assert payload and not payload & set(undetected)
    assert len(undetected) < len(data) // 4


@pytest.mark.parametrize("manifest_dtype, message", [
    ("|O", "an object dtype, which only pickle could load"),  # the manifest says it
    ("<f8", "Object arrays cannot be loaded"),  # the manifest lies; the .npy header says it
])
def test_a_pickle_bearing_npz_is_a_value_error_and_runs_nothing(
        tmp_path: Path, manifest_dtype: str, message: str) -> None:
    """A crafted archive whose checksums all match but whose array needs pickle."""
    marker = tmp_path / "pwned"
    payload = np.array([_Exploit(str(marker))], dtype=object)
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("a0.npy", "w") as member:
            np.lib.format.write_array(member, payload, allow_pickle=True)
    with zipfile.ZipFile(path) as archive:
        entry = archive.read("a0.npy")
    tree = {"dict": [[{"str": "w"}, {"array": {"entry": "a0.npy", "dtype": manifest_dtype, "shape": [1],
                                                "sha256": hashlib.sha256(entry).hexdigest()}}]]}
    manifest = json.dumps({"format": "minipar.snapshot", "version": 1, "tree": tree}).encode()
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("manifest.json", manifest)
        archive.comment = b"minipar.snapshot sha256=" + hashlib.sha256(manifest).hexdigest().encode()
    with pytest.raises(ValueError, match=message):
        minipar.load(path)
    assert not marker.exists()


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "npy", "plain_npz", "text", "empty"])
def test_files_that_are_not_snapshots_are_a_value_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "f.npz"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": np.ones(3)}))
    elif kind == "npy":
        np.save(tmp_path / "f.npy", np.ones(3))
        path = tmp_path / "f.npy"
    elif kind == "plain_npz":
        np.savez(path, w=np.ones(3))
    elif kind == "text":
        path.write_text("hello")
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="minipar snapshot"):
        minipar.load(path)


def rewrite_manifest(path: Path, edit: Any, fix_checksum: bool = True) -> None:
    """Replace manifest.json with ``edit(document)`` (re-checksummed unless told not to)."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
        comment = archive.comment
    document = json.loads(entries.pop("manifest.json"))
    edited = edit(document)
    manifest = edited if isinstance(edited, bytes) else json.dumps(edited).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
        archive.writestr("manifest.json", manifest)
        archive.comment = (b"minipar.snapshot sha256=" + hashlib.sha256(manifest).hexdigest().encode()
                           if fix_checksum else comment)


@pytest.mark.parametrize("edit, message", [
    (lambda d: {**d, "tree": {"eval": "__import__('os')"}}, "unknown node 'eval'"),
    (lambda d: {**d, "version": 99}, "format version 99"),
    (lambda d: {**d, "format": "other"}, "format is not"),
    (lambda d: {**d, "tree": {"int": "12abc"}}, "int node holds"),
    (lambda d: {**d, "tree": {"dict": [[{"list": []}, {"none": None}]]}}, "unhashable dict key"),
    (lambda d: {**d, "tree": {"array": {"entry": "../../etc/passwd", "sha256": "0"}}}, "is missing"),
    (lambda d: {**d, "tree": {"array": {**d["tree"]["dict"][0][1]["array"], "sha256": "0" * 64}}},
     "a0.npy SHA-256 is"),
    (lambda d: {**d, "tree": {"array": {**d["tree"]["dict"][0][1]["array"], "shape": [12]}}},
     "manifest says"),
    (lambda d: {**d, "tree": {"scalar": d["tree"]["dict"][0][1]["array"]}}, "scalar node holds"),
    (lambda d: b'{"format": "minipar.snapshot", "version": 1, "tree": '
     + b'{"list": [' * 50000 + b"]}" * 50000 + b"}", "RecursionError"),
])
def test_crafted_manifests_are_a_value_error(tmp_path: Path, edit: Any, message: str) -> None:
    path = tmp_path / "s.npz"
    minipar.save(small_state(), path)
    rewrite_manifest(path, edit)
    with pytest.raises(ValueError, match=message):
        minipar.load(path)


def test_a_manifest_edited_without_its_checksum_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    minipar.save(small_state(), path)
    rewrite_manifest(path, lambda d: {**d, "tree": {"str": "replaced"}}, fix_checksum=False)
    with pytest.raises(ValueError, match="manifest SHA-256"):
        minipar.load(path)


def test_a_missing_file_is_still_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        minipar.load(tmp_path / "nope.npz")


# ----- atomic writes -----------------------------------------------------------------------------
def test_an_exception_mid_save_leaves_the_previous_snapshot_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "snapshot.npz"
    old = {"w": np.zeros(1000), "step": 1}
    minipar.save(old, path)
    real_write = snapshot_module._write_entry
    calls = []

    def crash_on_second_array(archive: Any, entry: str, array: np.ndarray) -> str:
        calls.append(entry)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_write(archive, entry, array)

    monkeypatch.setattr(snapshot_module, "_write_entry", crash_on_second_array)
    with pytest.raises(OSError, match="disk full"):
        minipar.save({"w": np.ones(1000), "v": np.ones(5), "step": 2}, path)
    assert_identical(minipar.load(path), old)
    assert os.listdir(tmp_path) == ["snapshot.npz"]


def test_save_fsyncs_the_file_then_renames_then_fsyncs_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        assert os.path.dirname(os.path.abspath(src)) == str(tmp_path)  # same directory: atomic
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    minipar.save({"w": np.ones(3)}, tmp_path / "s.npz")
    assert events == ["fsync file", "replace", "fsync dir"]


@pytest.mark.timeout(60)
def test_a_process_killed_mid_save_leaves_the_previous_snapshot_loadable(tmp_path: Path) -> None:
    """No cleanup code runs (os._exit): only the temporary file may remain, never a torn snapshot."""
    path = tmp_path / "snapshot.npz"
    minipar.save({"w": np.zeros(50_000), "step": 1}, path)
    code = textwrap.dedent(f"""
        import os, numpy as np, minipar
        from minipar.snapshot import local as snapshot
        real = snapshot._write_entry
        def die_midway(archive, entry, array):
            if entry == "a1.npy":
                os._exit(3)          # killed while the second array is being written
            return real(archive, entry, array)
        snapshot._write_entry = die_midway
        minipar.save({{"w": np.ones(50_000), "v": np.ones(50_000), "step": 2}}, {str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert result.returncode == 3, result.stderr
    assert_identical(minipar.load(path), {"w": np.zeros(50_000), "step": 1})
    leftovers = sorted(set(os.listdir(tmp_path)) - {"snapshot.npz"})
    assert all(name.startswith(".snapshot.npz.") and name.endswith(".tmp") for name in leftovers)
    minipar.save({"step": 3}, path)  # and the next save works as usual
    assert minipar.load(path) == {"step": 3}


def test_temporaries_of_killed_saves_are_removed_by_the_next_save(tmp_path: Path) -> None:
    """Three saves die mid-write (os._exit twice, SIGKILL once), each leaving its temporary;
    the next save of the same path removes what they left: only the snapshot remains."""
    path = tmp_path / "snapshot.npz"
    minipar.save({"step": 0}, path)
    for how in ("os._exit(3)", "os.kill(os.getpid(), signal.SIGKILL)", "os._exit(3)"):
        code = textwrap.dedent(f"""
            import os, signal, numpy as np, minipar
            from minipar.snapshot import local as snapshot
            real = snapshot._write_entry
            def die_midway(archive, entry, array):
                if entry == "a1.npy":
                    {how}
                return real(archive, entry, array)
            snapshot._write_entry = die_midway
            minipar.save({{"w": np.ones(50_000), "v": np.ones(50_000)}}, {str(path)!r})
        """)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
        assert result.returncode in (3, -9), result.stderr
    litter = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert litter  # (each killed save removed the ones before it; the last one's remains)
    minipar.save({"step": 4}, path)
    assert os.listdir(tmp_path) == ["snapshot.npz"]
    assert minipar.load(path) == {"step": 4}


@pytest.mark.timeout(60)
def test_a_save_removes_only_dead_writers_temporaries_of_its_own_path(tmp_path: Path) -> None:
    """A live writer's file (a concurrent save of the same path), another path's, another
    host's and a file that is not a temporary all survive; only the dead writer's goes."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    dead_pid = int(exited.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = snapshot_module._host_tag()
        kept = [f".snapshot.npz.{host}.{live.pid}.abcd1234.tmp",  # a live writer
                f".snapshot.npz.x.{host}.{dead_pid}.abcd1234.tmp",  # path snapshot.npz.x
                f".other.npz.{host}.{dead_pid}.abcd1234.tmp",  # path other.npz
                f".snapshot.npz.another-host.{dead_pid}.abcd1234.tmp",  # cannot ask that host
                "snapshot.npz.tmp", ".snapshot.npz.notes"]  # not temporaries
        dead = f".snapshot.npz.{host}.{dead_pid}.abcd1234.tmp"
        for name in kept + [dead]:
            (tmp_path / name).write_bytes(b"partial")
        minipar.save({"step": 1}, tmp_path / "snapshot.npz")
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["snapshot.npz"])
    finally:
        live.kill()
        live.wait()


def test_load_reads_the_zip_directory_once_however_many_arrays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading was quadratic: the archive's name list was rebuilt for every array. Now the
    directory is parsed once, and the reads grow linearly: 2N arrays take 2x the reads of N."""
    counts = {"open archive": 0, "list directory": 0, "reads": 0}
    real_init, real_namelist, real_infolist = (
        zipfile.ZipFile.__init__, zipfile.ZipFile.namelist, zipfile.ZipFile.infolist)

    def counted(key: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return real(*args, **kwargs)
        return call

    class CountingFile(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            counts["reads"] += 1
            return super().read(size)

    monkeypatch.setattr(zipfile.ZipFile, "__init__", counted("open archive", real_init))
    monkeypatch.setattr(zipfile.ZipFile, "namelist", counted("list directory", real_namelist))
    monkeypatch.setattr(zipfile.ZipFile, "infolist", counted("list directory", real_infolist))
    monkeypatch.setattr(snapshot_module, "open", lambda name, mode: CountingFile(io.FileIO(name, mode)),
                        raising=False)
    measured = {}
    for n in (10_000, 20_000):
        state = {f"p{i}": np.full(2, i, dtype=np.float32) for i in range(n)}
        minipar.save(state, tmp_path / f"{n}.npz")
        counts.update({key: 0 for key in counts})
        got = minipar.load(tmp_path / f"{n}.npz")
        assert len(got) == n and got[f"p{n - 1}"][0] == n - 1
        measured[n] = dict(counts)
    for n in measured:
        assert measured[n]["open archive"] == 1 and measured[n]["list directory"] <= 1, measured
    assert measured[20_000]["reads"] <= 2 * measured[10_000]["reads"] + 10, measured


def test_zip64_entries_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries over 1 GiB get zip64 headers (sizes in an extra field); made so here for small ones."""
    monkeypatch.setattr(snapshot_module, "_ZIP64_ABOVE", -1)
    state = small_state()
    path = tmp_path / "s.npz"
    minipar.save(state, path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        arrays = [info for info in archive.infolist() if info.filename != "manifest.json"]
    local_sizes = [data[info.header_offset + 18: info.header_offset + 26] for info in arrays]
    assert arrays and local_sizes == [b"\xff" * 8] * len(arrays)  # the sizes are in the extra field
    assert_identical(minipar.load(path), state)


def test_the_manifest_size_cap_holds_on_save_and_on_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.npz"
    minipar.save({"names": ["x" * 100] * 100}, path)  # a manifest of about 11 kB
    monkeypatch.setattr(snapshot_module.fmt, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(ValueError, match="the manifest would be .* bytes, over the 1,000"):
        minipar.save({"names": ["x" * 100] * 100}, tmp_path / "t.npz")
    with pytest.raises(ValueError, match="'manifest.json' declares .* bytes; .* takes 0 to 1,000"):
        minipar.load(path)
