"""nn.init (PyTorch's fans, gains and distributions from minipar's generator) and the module
bookkeeping PyTorch scripts lean on: containers, re-assigned parameters, subclassing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import minipar
from minipar import nn
from minipar.nn import init


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3, 3), (6, 2, 5), (7, 1, 1, 2)])
def test_fans_equal_torchs(shape):
    assert init._calculate_fan_in_and_fan_out(minipar.zeros(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None),
])
def test_calculate_gain_equals_torchs(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15)


def test_fans_need_two_dimensions_and_gains_a_known_name():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(minipar.zeros(4))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")


def uniform_bound_and_std(fill, shape=(400, 300, 3)):
    tensor = minipar.zeros(*shape, dtype=np.float64)
    assert fill(tensor) is tensor
    return np.abs(tensor.array).max(), tensor.array.std(), tensor.array.mean()


@pytest.mark.parametrize("name, kwargs, bound", [
    ("xavier_uniform_", {}, math.sqrt(6 / (300 * 3 + 400 * 3))),
    ("xavier_uniform_", {"gain": 2.0}, 2 * math.sqrt(6 / (300 * 3 + 400 * 3))),
    ("kaiming_uniform_", {}, math.sqrt(2) * math.sqrt(3 / (300 * 3))),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, 1 / math.sqrt(300 * 3)),  # Linear's default init
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2) * math.sqrt(3 / 1200)),
    ("uniform_", {"a": -0.3, "b": 0.3}, 0.3),
])
def test_uniform_inits_fill_up_to_torchs_bound_with_the_uniform_std(name, kwargs, bound):
    minipar.manual_seed(0)
    largest, std, mean = uniform_bound_and_std(lambda t: getattr(init, name)(t, **kwargs))
    assert bound * 0.999 < largest <= bound
    assert std == pytest.approx(bound / math.sqrt(3), rel=0.01) and abs(mean) < 0.01 * bound
    torch_weight = getattr(torch.nn.init, name)(torch.zeros(400, 300, 3, dtype=torch.float64), **kwargs)
    assert torch_weight.abs().max().item() <= bound


@pytest.mark.parametrize("name, kwargs, std", [
    ("xavier_normal_", {}, math.sqrt(2 / (300 * 3 + 400 * 3))),
    ("kaiming_normal_", {}, math.sqrt(2) / math.sqrt(300 * 3)),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "tanh"}, 5 / 3 / math.sqrt(1200)),
    ("normal_", {"mean": 0.5, "std": 0.02}, 0.02),
])
def test_normal_inits_have_torchs_std(name, kwargs, std):
    minipar.manual_seed(1)
    _, got_std, mean = uniform_bound_and_std(lambda t: getattr(init, name)(t, **kwargs))
    assert got_std == pytest.approx(std, rel=0.01)
    assert mean == pytest.approx(kwargs.get("mean", 0.0), abs=0.01 * std)


def test_trunc_normal_stays_inside_its_window_with_the_truncated_std():
    minipar.manual_seed(2)
    tensor = init.trunc_normal_(minipar.zeros(500, 400, dtype=np.float64), mean=0.1, std=1.0, a=-1.0, b=1.5)
    assert tensor.array.min() >= -1.0 and tensor.array.max() <= 1.5
    reference = torch.nn.init.trunc_normal_(torch.zeros(500, 400, dtype=torch.float64), 0.1, 1.0, -1.0, 1.5)
    assert tensor.array.std() == pytest.approx(reference.std().item(), rel=0.01)
    assert tensor.array.mean() == pytest.approx(reference.mean().item(), abs=0.01)


def test_constant_zeros_ones_and_seeded_repeats():
    layer = nn.Linear(3, 2)
    init.constant_(layer.weight, 0.25)
    np.testing.assert_array_equal(layer.weight.array, np.full((2, 3), 0.25, dtype=np.float32))
    init.ones_(layer.bias)
    assert layer.bias.dtype == np.float32 and np.all(layer.bias.array == 1)
    init.zeros_(layer.bias)
    assert np.all(layer.bias.array == 0)
    minipar.manual_seed(5)
    first = init.normal_(minipar.zeros(10)).array.copy()
    minipar.manual_seed(5)
    np.testing.assert_array_equal(init.normal_(minipar.zeros(10)).array, first)


# ----- module bookkeeping ---------------------------------------------------------------------------


def test_reassigning_a_parameter_keeps_its_place_as_torch():
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ours.weight = nn.Parameter(np.zeros((2, 3), dtype=np.float32))
    theirs.weight = torch.nn.Parameter(torch.zeros(2, 3))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] == \
        ["weight", "bias"]
    assert list(ours.state_dict()) == ["weight", "bias"]
    with pytest.raises(TypeError, match=r"cannot assign ndarray as parameter 'weight'"):
        ours.weight = np.zeros((2, 3))


def test_a_module_subclass_used_as_base_class_and_annotation():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
            self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Identity()})
            self.norm = nn.BatchNorm1d(4)

        def forward(self, x: minipar.Tensor) -> minipar.Tensor:
            for block in self.blocks:
                x = block(x)
            return self.heads["a"](self.heads["b"](self.norm(x)))

    def count(module: nn.Module) -> int:
        return sum(p.array.size for p in module.parameters())

    class TorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 1), "b": torch.nn.Identity()})
            self.norm = torch.nn.BatchNorm1d(4)

    net = Net()
    assert list(net.state_dict()) == list(TorchNet().state_dict())
    assert count(net) == sum(p.numel() for p in TorchNet().parameters())
    assert net(minipar.randn(5, 4)).shape == (5, 1)
    assert len(net.blocks) == 2 and "a" in net.heads and list(net.heads.keys()) == ["a", "b"]
    net.blocks.append(nn.Linear(4, 4))
    assert [n for n, _ in net.named_parameters()][:6] == ["blocks.0.weight", "blocks.0.bias",
                                                         "blocks.1.weight", "blocks.1.bias",
                                                         "blocks.2.weight", "blocks.2.bias"]
    with pytest.raises(TypeError, match="ModuleList holds Modules"):
        net.blocks.append(3)
