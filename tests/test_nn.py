"""Every layer against the PyTorch module in float64, with PyTorch's weights loaded into ours.

Loading ``torch_module.state_dict()`` with ``load_state_dict`` also checks that
parameter names and shapes are PyTorch's. Tolerances are op_helper's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from op_helper import FORWARD_ATOL, FORWARD_RTOL, GRAD_ATOL, GRAD_RTOL, assert_close

import minipar
import minipar.nn.functional as F
from minipar import nn
from minipar.backend import cupy_available, to_device
from minipar.nn.activation import erf
from minipar.nn.conv import conv2d_naive


def compare_module(ours, theirs, x, seed=0, input_grad=True):
    """Copy theirs' weights into ours, run both on x, back-propagate one random gradient, compare all."""
    theirs = theirs.double()
    ours = ours.double()
    ours.load_state_dict(theirs.state_dict())
    our_names = [(name, p.shape) for name, p in ours.named_parameters()]
    their_names = [(name, tuple(p.shape)) for name, p in theirs.named_parameters()]
    assert our_names == their_names
    floating = x.dtype.kind == "f"
    x_ours = minipar.tensor(x, requires_grad=floating and input_grad)
    x_theirs = torch.tensor(x, requires_grad=floating and input_grad)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert_close(y_ours, y_theirs, FORWARD_ATOL, FORWARD_RTOL, "forward")
    upstream = np.random.default_rng(seed).standard_normal(tuple(y_theirs.shape))
    y_ours.backward(upstream)
    y_theirs.backward(torch.tensor(upstream))
    if floating and input_grad:
        assert_close(x_ours.grad, x_theirs.grad, GRAD_ATOL, GRAD_RTOL, "input gradient")
    their_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert_close(param.grad, their_params[name].grad, GRAD_ATOL, GRAD_RTOL, f"gradient of {name}")
    return y_ours


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- Linear and Conv2d --------------------------------------------------------------------------


def test_linear_matches_torch():
    compare_module(nn.Linear(5, 3), torch.nn.Linear(5, 3), randn(4, 5))
    compare_module(nn.Linear(5, 3, bias=False), torch.nn.Linear(5, 3, bias=False), randn(2, 4, 5))


@pytest.mark.parametrize("args, kwargs, shape", [
    ((3, 4, 3), {}, (2, 3, 7, 6)),
    ((2, 5, 3), {"stride": 2, "padding": 1}, (2, 2, 8, 9)),
    ((1, 2, (3, 2)), {"stride": (2, 1), "padding": (0, 1)}, (3, 1, 7, 5)),
    ((2, 3, 1), {}, (2, 2, 4, 4)),
    ((2, 3, 4), {"stride": 3, "bias": False}, (1, 2, 10, 11)),
    ((1, 4, 3), {"padding": 2}, (2, 1, 2, 2)),
])
def test_conv2d_matches_torch_with_stride_and_padding(args, kwargs, shape):
    compare_module(nn.Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs), randn(*shape))


def test_conv2d_im2col_equals_the_naive_loops():
    x, w, b = randn(2, 3, 9, 8), randn(4, 3, 3, 2, seed=1), randn(4, seed=2)
    fast = F.conv2d(minipar.tensor(x), minipar.tensor(w), minipar.tensor(b), stride=2, padding=1)
    np.testing.assert_allclose(fast.array, conv2d_naive(x, w, b, stride=2, padding=1), rtol=1e-12, atol=1e-12)


def test_conv2d_reads_non_contiguous_input_correctly():
    x = randn(2, 3, 6, 5)
    w = minipar.tensor(randn(4, 3, 3, 3, seed=1))
    strided = minipar.tensor(x.transpose(0, 1, 3, 2).copy()).permute(0, 1, 3, 2)  # a view
    assert not strided.array.flags.c_contiguous
    np.testing.assert_allclose(F.conv2d(strided, w, stride=2).array,
                               F.conv2d(minipar.tensor(x), w, stride=2).array, rtol=1e-14, atol=1e-14)


def test_conv2d_init_bound_is_one_over_sqrt_fan_in_as_torch():
    minipar.manual_seed(0)
    conv = nn.Conv2d(3, 64, 5)
    bound = 1 / math.sqrt(3 * 5 * 5)
    for param in (conv.weight.array, conv.bias.array):
        assert np.abs(param).max() <= bound and np.abs(param).max() > 0.9 * bound
    their_max = max(torch.nn.Conv2d(3, 64, 5).weight.abs().max().item() for _ in range(3))
    assert their_max <= bound + 1e-7 and their_max > 0.95 * bound
    assert conv.weight.dtype == np.float32


# ----- pooling and shape layers ---------------------------------------------------------------------


@pytest.mark.parametrize("args, shape", [
    ((2,), (2, 3, 8, 8)),              # windows tile the input: the reshape path
    ((2,), (2, 2, 7, 9)),              # a remainder row/column that fits no window is dropped
    (((2, 3),), (1, 2, 6, 9)),         # rectangular kernel
    ((3, 2), (2, 2, 7, 7)),            # overlapping windows: the strided-view path
    ((2, 3), (1, 3, 8, 8)),            # gaps between windows
])
def test_maxpool2d_matches_torch(args, shape):
    compare_module(nn.MaxPool2d(*args), torch.nn.MaxPool2d(*args), randn(*shape))


@pytest.mark.parametrize("args", [(2,), (3, 1)])
def test_maxpool2d_sends_tied_gradient_to_the_first_maximum_as_torch(args):
    x = np.random.default_rng(0).integers(0, 2, (2, 2, 6, 6)).astype(np.float64)  # many ties
    compare_module(nn.MaxPool2d(*args), torch.nn.MaxPool2d(*args), x)


def test_flatten_matches_torch():
    compare_module(nn.Flatten(), torch.nn.Flatten(), randn(2, 3, 4, 5))
    compare_module(nn.Flatten(0, 2), torch.nn.Flatten(0, 2), randn(2, 3, 4, 5))
    compare_module(nn.Flatten(-2), torch.nn.Flatten(-2), randn(2, 3, 4))


# ----- activations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [
    (nn.ReLU(), torch.nn.ReLU()),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
], ids=["relu", "gelu", "gelu-tanh", "tanh", "sigmoid"])
def test_activation_layers_match_torch(ours, theirs):
    x = np.concatenate([randn(200) * 3, np.linspace(-9, 9, 101)])
    compare_module(ours, theirs, x)


def test_erf_is_accurate_to_a_few_ulp_in_float64():
    x = np.concatenate([np.linspace(-7, 7, 20001), randn(20000) * 2, randn(1000) * 1e-3,
                        [0.0, 1e-300, -5e-324, np.inf, -np.inf]])
    expected = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64
    ulps = np.abs(got - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 4
    assert np.isnan(erf(np.array([np.nan]))[0])
    np.testing.assert_allclose(got, torch.special.erf(torch.tensor(x)).numpy(), rtol=1e-15, atol=0)


def test_erf_float32_stays_float32_and_is_accurate():
    x = np.linspace(-5, 5, 1001).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, torch.special.erf(torch.tensor(x)).numpy(), rtol=3e-7, atol=1e-7)


# ----- LayerNorm, Embedding ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, shape", [
    ((6,), {}, (4, 6)),
    (((3, 4),), {"eps": 1e-3}, (2, 5, 3, 4)),
    ((5,), {"elementwise_affine": False}, (3, 5)),
    ((5,), {"bias": False}, (2, 3, 5)),
])
def test_layernorm_matches_torch(args, kwargs, shape):
    theirs = torch.nn.LayerNorm(*args, **kwargs)
    with torch.no_grad():  # move weight and bias off their (1, 0) start so they matter
        for param in theirs.parameters():
            param.add_(torch.randn(param.shape))
    compare_module(nn.LayerNorm(*args, **kwargs), theirs, randn(*shape) * 3 + 1)


def test_layernorm_starts_at_ones_and_zeros_as_torch():
    layer = nn.LayerNorm(4)
    np.testing.assert_array_equal(layer.weight.array, np.ones(4))
    np.testing.assert_array_equal(layer.bias.array, np.zeros(4))


def test_embedding_matches_torch_and_adds_gradients_of_repeated_indices():
    indices = np.array([[1, 3, 1], [0, 1, 9]])
    compare_module(nn.Embedding(10, 4), torch.nn.Embedding(10, 4), indices)
    layer = nn.Embedding(10, 4).double()
    layer(indices).backward(np.ones((2, 3, 4)))
    np.testing.assert_array_equal(layer.weight.grad[:, 0], [1, 3, 0, 1, 0, 0, 0, 0, 0, 1])


def test_embedding_init_is_standard_normal_as_torch():
    minipar.manual_seed(0)
    weight = nn.Embedding(1000, 50).weight.array
    assert abs(weight.mean()) < 0.02 and abs(weight.std() - 1) < 0.02


# ----- a whole CNN ----------------------------------------------------------------------------------


def small_cnn(lib):
    return lib.Sequential(
        lib.Conv2d(1, 4, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(4, 6, 3, stride=1), lib.GELU(), lib.Flatten(),
        lib.Linear(6 * 2 * 2, 16), lib.LayerNorm(16), lib.Tanh(), lib.Linear(16, 10),
    )


def test_small_cnn_state_dict_names_and_gradients_match_torch():
    ours = small_cnn(nn)
    assert list(ours.state_dict()) == list(small_cnn(torch.nn).state_dict())
    compare_module(ours, small_cnn(torch.nn), randn(5, 1, 8, 8))


# ----- losses and softmax --------------------------------------------------------------------------


def test_cross_entropy_of_huge_logits_does_not_overflow_and_matches_torch():
    logits = randn(6, 10) * 300
    targets = np.array([0, 3, 9, 3, 5, 1])
    for reduction in ("mean", "sum", "none"):
        ours = minipar.tensor(logits, requires_grad=True)
        theirs = torch.tensor(logits, requires_grad=True)
        loss = F.cross_entropy(ours, targets, reduction=reduction)
        reference = torch.nn.functional.cross_entropy(theirs, torch.tensor(targets), reduction=reduction)
        assert np.all(np.isfinite(loss.array))
        assert_close(loss, reference, FORWARD_ATOL, FORWARD_RTOL, f"{reduction} loss")
        upstream = np.random.default_rng(1).standard_normal(tuple(reference.shape))
        loss.backward(upstream)
        reference.backward(torch.tensor(upstream))
        assert_close(ours.grad, theirs.grad, GRAD_ATOL, GRAD_RTOL, f"{reduction} gradient")
    loss32 = F.cross_entropy(minipar.tensor(logits.astype(np.float32)), targets)
    assert loss32.dtype == np.float32 and np.isfinite(loss32.item())


def test_cross_entropy_accepts_tensor_targets():
    logits = randn(3, 4)
    loss = F.cross_entropy(minipar.tensor(logits), minipar.tensor(np.array([1, 0, 3])))
    reference = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor([1, 0, 3]))
    assert_close(loss, reference, FORWARD_ATOL, FORWARD_RTOL, "loss")


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_log_softmax_and_softmax_match_torch(dim):
    from op_helper import check_op
    check_op([(4, 6)], lambda a: torch.log_softmax(a, dim), lambda a: F.log_softmax(a, dim=dim))
    check_op([(4, 6)], lambda a: torch.softmax(a, dim), lambda a: F.softmax(a, axis=dim))
    check_op([(4, 6)], lambda a: torch.log_softmax(a * 300, dim), lambda a: F.log_softmax(a * 300, dim=dim))


def test_mse_loss_matches_torch():
    from op_helper import check_op
    check_op([(4, 3), (4, 3)], torch.nn.functional.mse_loss, F.mse_loss)


# ----- Dropout --------------------------------------------------------------------------------------


def test_dropout_zeroes_about_p_and_scales_survivors_by_one_over_one_minus_p():
    minipar.manual_seed(0)
    x = minipar.tensor(np.full((200, 500), 2.0), requires_grad=True)
    y = nn.Dropout(0.3)(x)
    kept = y.array != 0
    assert abs(1 - kept.mean() - 0.3) < 0.005
    np.testing.assert_allclose(y.array[kept], 2.0 / 0.7, rtol=1e-15)
    y.backward(np.ones(x.shape))
    np.testing.assert_array_equal(x.grad != 0, kept)
    np.testing.assert_allclose(x.grad[kept], 1 / 0.7, rtol=1e-15)


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero():
    x = minipar.tensor(randn(4, 5))
    layer = nn.Sequential(nn.Dropout(0.5))
    layer.eval()
    assert layer(x) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert nn.Dropout(0.0)(x) is x
    assert np.all(nn.Dropout(1.0)(x).array == 0)


def test_dropout_masks_repeat_under_manual_seed_and_rng_state():
    x = minipar.tensor(np.ones((50, 40)))
    minipar.manual_seed(7)
    first = F.dropout(x, 0.5).array
    minipar.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).array, first)
    minipar.manual_seed(8)
    assert not np.array_equal(F.dropout(x, 0.5).array, first)
    state = minipar.get_rng_state()
    second = F.dropout(x, 0.5).array
    third = F.dropout(x, 0.5).array
    assert not np.array_equal(second, third)
    minipar.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).array, second)
    np.testing.assert_array_equal(F.dropout(x, 0.5).array, third)


def test_dropout_keeps_float32():
    y = nn.Dropout(0.2)(minipar.tensor(np.ones((3, 3), dtype=np.float32)))
    assert y.dtype == np.float32


# ----- GPU (skipped without CuPy and a device) ---------------------------------------------------------


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a GPU")
def test_layers_on_gpu_match_cpu():
    def run(device):
        minipar.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.MaxPool2d(2), nn.Dropout(0.3),
                              nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(), nn.Flatten(), nn.LayerNorm(4),
                              nn.Linear(4, 3)).double().to(device)
        table = nn.Embedding(5, 4).double().to(device)
        x = minipar.tensor(randn(2, 1, 8, 8), requires_grad=True, device=device)
        logits = model(x) + table(np.array([0, 4])).sum(axis=1, keepdims=True)
        F.cross_entropy(logits, np.array([0, 2])).backward()
        grads = [p.grad for p in list(model.parameters()) + list(table.parameters())] + [x.grad]
        return [to_device(a, "cpu") for a in [logits.array, *grads]]

    for on_gpu, on_cpu in zip(run("cuda"), run("cpu")):
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-10, atol=1e-12)


def test_layer_sizes_may_be_numpy_integers_but_not_bools() -> None:
    """D9: NumPy integers are integers (shapes arrive as np.int64 from array arithmetic)."""
    layer = nn.Linear(np.int64(3), np.int32(2))
    assert layer.weight.shape == (2, 3) and type(layer.in_features) is int
    with pytest.raises(ValueError, match="in_features must be a positive integer, got True"):
        nn.Linear(True, 2)
