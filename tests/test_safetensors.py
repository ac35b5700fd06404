"""safetensors, minipar's own reader and writer, against the safetensors package and PyTorch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

import minipar
from minipar import nn


def models() -> tuple[nn.Module, torch.nn.Module]:
    minipar.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 8, dtype=np.float64), nn.Tanh(), nn.Linear(8, 3, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    return ours, theirs


def test_a_state_dict_pytorch_wrote_loads_into_the_same_minipar_model(tmp_path: Path) -> None:
    ours, theirs = models()
    safetensors.torch.save_file(theirs.state_dict(), str(tmp_path / "torch.safetensors"))
    ours.load_state_dict(minipar.load(tmp_path / "torch.safetensors"))
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_allclose(ours(minipar.tensor(x)).array, theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-15, atol=1e-15)


def test_a_state_dict_minipar_wrote_loads_into_pytorch(tmp_path: Path) -> None:
    ours, theirs = models()
    minipar.save(ours.state_dict(), tmp_path / "ours.safetensors")
    theirs.load_state_dict(safetensors.torch.load_file(str(tmp_path / "ours.safetensors")))
    x = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(theirs(torch.tensor(x)).detach().numpy(), ours(minipar.tensor(x)).array,
                               rtol=1e-15, atol=1e-15)


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_with_the_reference_reader(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    minipar.save({"a": array, "empty": np.zeros((0, 3), dtype)}, tmp_path / "x.safetensors")
    theirs = safetensors.numpy.load_file(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(theirs["a"], array)
    safetensors.numpy.save_file({"a": array}, str(tmp_path / "y.safetensors"))
    np.testing.assert_array_equal(minipar.load(tmp_path / "y.safetensors")["a"], array)


def crafted(tmp_path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    blob = json.dumps(header).encode()
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return path


@pytest.mark.parametrize("header, data, length, message", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", None, "outside the 0 data bytes"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None, "need 12"),
    ({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), None, "unknown dtype"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), None, "bad shape"),
    ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
      "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6), None, "overlap"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), 1 << 40, "header claims"),
    ([1, 2], b"", None, "not a JSON object"),
])
def test_crafted_files_are_value_errors_before_any_data_is_read(tmp_path, header, data, length, message):
    with pytest.raises(ValueError, match=message):
        minipar.load(crafted(tmp_path, header, data, length))


def test_pt_paths_hold_minipars_own_format_and_map_location_is_accepted(tmp_path: Path) -> None:
    state = {"model": {"w": np.ones((2, 2))}, "step": 7}
    minipar.save(state, tmp_path / "checkpoint.pt")
    back = minipar.load(tmp_path / "checkpoint.pt", map_location="cpu")
    assert back["step"] == 7 and np.array_equal(back["model"]["w"], np.ones((2, 2)))
    with pytest.raises(TypeError, match="flat dict of tensors"):
        minipar.save([1, 2], tmp_path / "bad.safetensors")


def test_a_torch_save_pickle_is_refused_never_unpickled(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError):
        minipar.load(tmp_path / "pickled.pt")
