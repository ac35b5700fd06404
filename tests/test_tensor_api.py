"""PyTorch's tensor API on minipar (issue 15, items 1, 2, 11, 12): names, return types, dtypes,
devices, namespaces and the errors a PyTorch user meets. Gradients of the ops are in test_ops.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import minipar
from minipar import amp


def both(values):
    return minipar.tensor(np.asarray(values)), torch.tensor(np.asarray(values))


def test_size_dim_numel_ndim_are_torchs():
    x = minipar.zeros(2, 3, 4)
    assert x.size() == (2, 3, 4) and isinstance(x.size(), tuple) and x.size().numel() == 24
    assert x.size(1) == 3 and x.size(-1) == 4
    assert x.dim() == x.ndim == 3 and x.numel() == 24
    with pytest.raises(IndexError, match="dim 3 is out of range"):
        x.size(3)


def test_size_used_as_a_number_says_it_is_a_method():
    x = minipar.zeros(2, 3)
    for misuse in (lambda: x.size * 2, lambda: x.size == 6, lambda: int(x.size), lambda: range(x.size)):
        with pytest.raises(TypeError, match=r"Tensor.size is a method.*x.numel\(\)"):
            misuse()


def test_max_min_with_dim_are_named_tuples_of_values_and_indices():
    ours, theirs = both([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    values, indices = ours.max(1)
    assert values.tolist() == theirs.max(1).values.tolist()
    assert indices.tolist() == theirs.max(1).indices.tolist() == ours.max(1).indices.tolist()
    assert ours.max(1)[1].tolist() == [1, 0] and indices.dtype == np.int64  # the census's wrong answer
    assert ours.min(dim=0, keepdim=True).indices.tolist() == theirs.min(dim=0, keepdim=True).indices.tolist()
    assert ours.max().item() == 7.0 and ours.max().ndim == 0
    assert minipar.max(ours, 1).indices.tolist() == torch.max(theirs, 1).indices.tolist()
    assert minipar.min(ours).item() == 0.0


def test_argmax_argmin_any_all_follow_torch():
    ours, theirs = both([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    assert ours.argmax().item() == theirs.argmax().item() == 3
    assert ours.argmax(1).tolist() == theirs.argmax(1).tolist()
    assert ours.argmin(0, keepdim=True).tolist() == theirs.argmin(0, keepdim=True).tolist()
    assert minipar.argmax(ours, dim=1).tolist() == torch.argmax(theirs, dim=1).tolist()
    assert int(ours.argmax()) == 3 and float(ours[1, 0]) == 7.0 and list(range(minipar.tensor(2))) == [0, 1]
    with pytest.raises(TypeError, match="only integer tensors of one element"):
        range(ours[0, 0])
    assert (ours > 4).any(1).tolist() == (theirs > 4).any(1).tolist()
    assert (ours > 0).all(dim=0).tolist() == (theirs > 0).all(dim=0).tolist()
    assert bool((ours > 6).any()) and not bool((ours > 0).all())


def test_numpy_axis_and_keepdims_stay_aliases_of_dim_and_keepdim():
    x = minipar.tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(axis=1, keepdims=True).tolist() == x.sum(dim=1, keepdim=True).tolist() == [[3.0], [12.0]]
    assert x.max(axis=0).indices.tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match="dim or its NumPy alias axis, not both"):
        x.sum(dim=0, axis=1)


def test_comparison_methods_where_clamp_masked_fill_tolist():
    ours, theirs = both([[1.0, -2.0], [3.0, 0.5]])
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        assert getattr(ours, name)(0.5).tolist() == getattr(theirs, name)(0.5).tolist(), name
    assert minipar.where(ours > 0, ours, 0.0).tolist() == torch.where(theirs > 0, theirs, 0.0).tolist()
    assert [i.tolist() for i in minipar.where(ours > 0)] == [i.tolist() for i in torch.where(theirs > 0)]
    assert ours.clamp(max=1.0).tolist() == theirs.clamp(max=1.0).tolist()
    assert ours.masked_fill(ours < 0, -9.0).tolist() == theirs.masked_fill(theirs < 0, -9.0).tolist()
    assert ours.tolist() == [[1.0, -2.0], [3.0, 0.5]] and minipar.tensor(2.5).tolist() == 2.5


def test_tensor_dtype_rules_and_dtype_names():
    assert minipar.tensor([1, 2]).dtype == minipar.int64 == minipar.long
    assert minipar.tensor([1.0, 2]).dtype == minipar.float32 == minipar.float
    assert minipar.tensor(3).dtype == torch.tensor(3).numpy().dtype
    assert minipar.tensor([True]).dtype == minipar.bool
    assert minipar.tensor(np.arange(2, dtype=np.int32)).dtype == minipar.int32
    assert minipar.float64 == minipar.double == np.float64 and minipar.float16 == minipar.half == np.float16


def test_dtype_conversions_follow_torch():
    x = minipar.tensor([1.7, -2.2], requires_grad=True)
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16 and x.float() is x
    assert x.long().tolist() == torch.tensor([1.7, -2.2]).long().tolist() and not x.long().requires_grad
    assert x.int().dtype == np.int32 and x.bool().tolist() == [True, True]
    assert x.to(minipar.float64).dtype == np.float64 and x.to(np.float64).requires_grad
    assert x.type() == "torch.FloatTensor" and x.long().type() == torch.tensor([1]).type()
    assert x.type(minipar.float64).dtype == np.float64 and x.type("torch.LongTensor").dtype == np.int64
    assert x.to(minipar.zeros(1, dtype=minipar.float64)).dtype == np.float64
    x.to(minipar.float64).sum().backward()
    assert x.grad.dtype == np.float32  # the cast is differentiable and casts the gradient back


def test_devices_parse_as_torch_and_cuda_answers_without_a_gpu():
    d = minipar.device("cuda:1")
    assert (d.type, d.index, str(d), repr(d)) == ("cuda", 1, "cuda:1", "device(type='cuda', index=1)")
    assert minipar.device("cuda", 0) == "cuda:0" and minipar.device(0) == "cuda:0"
    assert minipar.device("cpu").index is None and minipar.zeros(1).device.type == "cpu"
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        minipar.device("gpu")
    x = minipar.zeros(2)
    assert x.to("cpu") is x and x.to(minipar.device("cpu")) is x and x.cpu() is x
    assert isinstance(minipar.cuda.is_available(), bool)
    assert minipar.cuda.device_count() == (torch.cuda.device_count() if minipar.cuda.is_available() else 0)
    if not minipar.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"\.to\(0\) means 'cuda:0', as in PyTorch.*no GPU"):
            x.to(0)
        with pytest.raises(RuntimeError, match="cannot move to 'cuda:1'"):
            x.to("cuda:1")


def test_factories_take_torchs_arguments_and_give_torchs_dtypes():
    minipar.manual_seed(0)
    assert minipar.zeros((2, 3)).shape == minipar.ones(2, 3).shape == minipar.empty(2, 3).shape == (2, 3)
    assert minipar.randn(2, 3, dtype=minipar.float64, requires_grad=True).requires_grad
    assert minipar.rand((4,), device="cpu").dtype == np.float32
    assert minipar.arange(5).dtype == np.int64 and minipar.arange(0.0, 1.0, 0.25).dtype == np.float32
    r = minipar.randint(0, 10, (100,))
    assert r.dtype == np.int64 and 0 <= int(r.min()) and int(r.max()) < 10
    assert minipar.randint(3, (5,)).shape == (5,)
    assert sorted(minipar.randperm(6).tolist()) == list(range(6))
    for size, value in [((2, 2), 7), ((2,), 7.0), (3, True)]:
        assert minipar.full(size, value).tolist() == torch.full(size if isinstance(size, tuple) else (size,),
                                                                value).tolist()
        assert minipar.full(size, value).dtype == torch.full((1,), value).numpy().dtype
    assert minipar.eye(3).tolist() == torch.eye(3).tolist()
    np.testing.assert_allclose(minipar.linspace(0, 1, 5).numpy(), torch.linspace(0, 1, 5).numpy())
    assert minipar.triu(minipar.ones(3, 3)).tolist() == torch.triu(torch.ones(3, 3)).tolist()


def test_from_numpy_shares_memory_and_as_tensor_copies_only_when_needed():
    a = np.zeros(3, dtype=np.float32)
    t = minipar.from_numpy(a)
    a[0] = 5.0
    assert t.tolist()[0] == 5.0
    assert minipar.as_tensor(a).array is a and minipar.as_tensor(t) is t
    assert minipar.as_tensor(a, dtype=minipar.float64).array is not a
    with pytest.raises(TypeError, match="from_numpy needs a numpy.ndarray"):
        minipar.from_numpy([1, 2])


def test_no_grad_works_as_a_decorator():
    w = minipar.ones(2, requires_grad=True)

    @minipar.no_grad()
    def evaluate(x):
        return (w * x).sum()

    assert not evaluate(minipar.ones(2)).requires_grad
    assert (w * 2).requires_grad  # the mode is restored after the call


def test_add_with_alpha_and_the_other_in_place_updates():
    p = minipar.ones(3)
    p.add_(minipar.tensor([1.0, 2.0, 3.0]), alpha=-0.5).mul_(2.0)
    assert p.tolist() == [1.0, 0.0, -1.0]
    assert p.clamp_(min=0.0).tolist() == [1.0, 0.0, 0.0] and p.zero_().tolist() == [0.0] * 3


def test_namespaces_load_on_first_use():
    assert minipar.nn.Linear and minipar.optim.SGD and minipar.utils and minipar.amp.GradScaler
    code = "import minipar; print(minipar.optim.SGD.__name__, minipar.cuda.device_count() >= 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SGD", "True"]


def test_torch_features_minipar_leaves_out_say_so_by_name():
    with pytest.raises(AttributeError, match="minipar does not implement torch.compile; it runs eagerly"):
        minipar.compile  # noqa: B018
    with pytest.raises(AttributeError, match="minipar does not implement torch.jit"):
        minipar.jit  # noqa: B018
    with pytest.raises(AttributeError, match="module 'minipar' has no attribute 'frobnicate'"):
        minipar.frobnicate  # noqa: B018
    assert not hasattr(minipar, "backends")


def test_grad_scaler_takes_the_device_first_as_torch_amp_does():
    scaler = amp.GradScaler("cpu", init_scale=8.0)
    assert scaler.scale(minipar.tensor(1.0)).item() == 8.0
    assert amp.GradScaler("cuda").scale(minipar.tensor(1.0)).item() == 2.0 ** 16
    with pytest.raises(ValueError, match="GradScaler's device must be 'cpu' or 'cuda'"):
        amp.GradScaler("tpu")
