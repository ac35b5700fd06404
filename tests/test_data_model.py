"""PyTorch's data model: ``.array`` is the raw array, ``.data`` a history-free Tensor sharing
it, ``.grad`` a Tensor; hooks see and return Tensors; in-place updates are never recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minipar
from minipar import nn


def test_array_is_the_raw_ndarray_and_data_a_tensor_sharing_it() -> None:
    w = nn.Parameter(np.arange(6.0).reshape(2, 3))
    assert type(w.array) is np.ndarray
    data = w.data
    assert isinstance(data, minipar.Tensor) and data.array is w.array
    assert not data.requires_grad and data.is_leaf
    data.array[0, 0] = 7.0
    assert w.array[0, 0] == 7.0  # shared, not copied


def test_data_is_assignable_from_a_tensor_or_an_array_and_nothing_else() -> None:
    w = nn.Parameter(np.zeros(3))
    w.data = minipar.tensor(np.ones(3))
    np.testing.assert_array_equal(w.array, [1.0, 1.0, 1.0])
    fresh = np.full(3, 2.0)
    w.data = fresh
    assert w.array is fresh and w.requires_grad
    with pytest.raises(TypeError, match="Tensor or an array, got list"):
        w.data = [1.0, 2.0, 3.0]


def test_grad_is_a_tensor_whose_array_is_the_gradient() -> None:
    x = minipar.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    assert isinstance(x.grad, minipar.Tensor) and not x.grad.requires_grad
    np.testing.assert_array_equal(x.grad.array, [2.0, 4.0, 6.0])


def test_grad_assignment_takes_a_tensor_of_the_same_shape_or_none() -> None:
    w = nn.Parameter(np.zeros((2, 3)))
    w.grad = minipar.tensor(np.ones((2, 3)))
    np.testing.assert_array_equal(w.grad.array, np.ones((2, 3)))
    with pytest.raises(TypeError, match="Tensor or None, got ndarray"):
        w.grad = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"shape \(3,\), the tensor has shape \(2, 3\)"):
        w.grad = minipar.tensor(np.ones(3))
    w.grad = None
    assert w.grad is None


def test_pytorch_style_manual_update_loop_matches_torch() -> None:
    """p.grad.zero_(), p.data.add_(p.grad, alpha=-lr), p.data.clone(): the same numbers as torch."""
    start = np.random.default_rng(0).standard_normal((4, 3))
    x_np = np.random.default_rng(1).standard_normal((5, 4))
    ours, theirs = nn.Parameter(start.copy()), torch.nn.Parameter(torch.tensor(start))
    x_ours, x_theirs = minipar.tensor(x_np), torch.tensor(x_np)
    for _ in range(5):
        for p, x in ((ours, x_ours), (theirs, x_theirs)):
            if p.grad is not None:
                p.grad.zero_()
            ((x @ p).tanh() ** 2).sum().backward()
            p.data.add_(p.grad, alpha=-0.1)
    np.testing.assert_allclose(ours.data.clone().array, theirs.data.clone().numpy(), rtol=1e-12)
    assert ours.data.clone().array is not ours.array


def test_normal_and_uniform_draw_from_minipars_seeded_generator() -> None:
    w = nn.Parameter(np.zeros((3, 4)))
    minipar.manual_seed(5)
    w.data.normal_(0, 0.02)
    first = w.array.copy()
    minipar.manual_seed(5)
    w.data.normal_(0, 0.02)
    np.testing.assert_array_equal(w.array, first)
    assert 0 < first.std() < 0.1
    w.data.uniform_(-1, 1)
    assert (w.array >= -1).all() and (w.array < 1).all()


def test_in_place_updates_of_a_tensor_that_records_are_refused_outside_no_grad() -> None:
    w = nn.Parameter(np.zeros(3))
    with pytest.raises(RuntimeError, match=r"update its \.data instead \(p\.data\.add_"):
        w.add_(1.0)
    with minipar.no_grad():
        w.add_(1.0)  # an optimizer's own update, as in torch
    np.testing.assert_array_equal(w.array, [1.0, 1.0, 1.0])


def test_hooks_receive_tensors_and_may_return_a_replacement_tensor() -> None:
    x = minipar.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g) or g * 3.0)
    (x * x).sum().backward()
    assert isinstance(seen[0], minipar.Tensor)
    np.testing.assert_array_equal(x.grad.array, [6.0, 12.0])


def test_a_hook_returning_another_shape_is_an_error_not_a_broadcast() -> None:
    """D9: a (3,) replacement for a (2, 3) weight's gradient used to broadcast into the step."""
    w = nn.Parameter(np.ones((2, 3)))
    w.register_hook(lambda g: minipar.tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"must return None or a gradient of shape \(2, 3\), got .* \(3,\)"):
        (w * 2.0).sum().backward()


def test_clone_of_a_recording_tensor_passes_the_gradient_through() -> None:
    x = minipar.tensor([1.0, 2.0], requires_grad=True)
    y = x.clone()
    assert y.array is not x.array and y.requires_grad
    (y * y).sum().backward()
    np.testing.assert_array_equal(x.grad.array, [2.0, 4.0])
