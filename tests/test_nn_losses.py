"""Every loss and the new functions against PyTorch, float64: forward 1e-12, every gradient.

Tolerances and the one-line helper are op_helper's; targets that carry no gradient
(class indices) are passed to both libraries as the same array.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from op_helper import FORWARD_ATOL, FORWARD_RTOL, assert_close, check_op

import minipar
import minipar.nn.functional as F
from minipar import nn

TF = torch.nn.functional


def classes_of(shape, classes, seed=0, ignore=None):
    """Integer targets of ``shape``; with ``ignore``, about a quarter of them set to it."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, shape)
    if ignore is not None:
        targets[rng.random(shape) < 0.25] = ignore
    return targets


# ----- cross_entropy ---------------------------------------------------------------------------------


CROSS_ENTROPY_CASES = [
    ((6, 5), {}),
    ((6, 5), {"reduction": "sum"}),
    ((6, 5), {"reduction": "none"}),
    ((6, 5), {"weight": True}),
    ((6, 5), {"weight": True, "reduction": "none"}),
    ((8, 5), {"ignore_index": 2}),
    ((8, 5), {"ignore_index": -100, "ignored": True}),
    ((8, 5), {"ignore_index": -100, "ignored": True, "weight": True}),
    ((6, 5), {"label_smoothing": 0.2}),
    ((6, 5), {"label_smoothing": 0.1, "weight": True}),
    ((8, 5), {"label_smoothing": 0.3, "weight": True, "ignored": True}),
    ((8, 5), {"label_smoothing": 0.3, "ignored": True, "reduction": "sum"}),
    ((8, 5), {"label_smoothing": 0.3, "ignored": True, "reduction": "none"}),
    ((3, 4, 5, 2), {}),
    ((3, 4, 5, 2), {"reduction": "none", "weight": True}),
    ((2, 4, 3), {"ignored": True, "label_smoothing": 0.1, "weight": True}),
    ((5,), {}),
    ((5,), {"reduction": "none", "label_smoothing": 0.2}),
]


@pytest.mark.parametrize("shape, options", CROSS_ENTROPY_CASES)
def test_cross_entropy_with_class_targets_matches_torch(shape, options):
    options = dict(options)
    classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    ignore = options.get("ignore_index", -100) if options.pop("ignored", False) else None
    targets = classes_of(target_shape, classes, ignore=ignore)
    if options.pop("weight", False):
        options["weight"] = np.random.default_rng(5).uniform(0.5, 2, classes)
    theirs_options = {k: torch.tensor(v) if k == "weight" else v for k, v in options.items()}
    check_op([shape], lambda z: TF.cross_entropy(z, torch.tensor(targets), **theirs_options),
             lambda z: F.cross_entropy(z, targets, **options), low=-4, high=4)


@pytest.mark.parametrize("shape, options", [
    ((6, 5), {}),
    ((6, 5), {"reduction": "sum", "label_smoothing": 0.25}),
    ((6, 5), {"reduction": "none", "weight": True}),
    ((2, 4, 3, 3), {"weight": True, "label_smoothing": 0.1}),
    ((4,), {"reduction": "none"}),
])
def test_cross_entropy_with_probability_targets_matches_torch_for_logits_and_targets(shape, options):
    options = dict(options)
    classes = shape[0] if len(shape) == 1 else shape[1]
    if options.pop("weight", False):
        options["weight"] = np.random.default_rng(5).uniform(0.5, 2, classes)
    theirs_options = {k: torch.tensor(v) if k == "weight" else v for k, v in options.items()}
    probabilities = torch.softmax(torch.tensor(np.random.default_rng(3).normal(size=shape)), dim=0 if
                                  len(shape) == 1 else 1).numpy()
    logits = np.random.default_rng(4).uniform(-3, 3, shape)
    check_op([], lambda z, t: TF.cross_entropy(z, t, **theirs_options),
             lambda z, t: F.cross_entropy(z, t, **options), inputs=[logits, probabilities])


def test_cross_entropy_with_every_target_ignored_is_nan_as_torch():
    logits = np.random.default_rng(0).normal(size=(3, 4))
    ours = F.cross_entropy(minipar.tensor(logits), np.full(3, -100))
    theirs = TF.cross_entropy(torch.tensor(logits), torch.full((3,), -100))
    assert np.isnan(ours.item()) and np.isnan(theirs.item())


def test_cross_entropy_module_holds_its_options_and_weight_buffer():
    weight = np.array([1.0, 2.0, 0.5])
    ours = nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), ignore_index=1, label_smoothing=0.1)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    targets = np.array([0, 1, 2, 2, 0])
    check_op([(5, 3)], lambda z: theirs(z, torch.tensor(targets)), lambda z: ours(z, targets))


def test_cross_entropy_float32_stays_float32_and_plain_case_is_unchanged():
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    loss = F.cross_entropy(minipar.tensor(logits), np.array([0, 2, 1, 1]))
    assert loss.dtype == np.float32
    reference = TF.cross_entropy(torch.tensor(logits), torch.tensor([0, 2, 1, 1]))
    np.testing.assert_allclose(loss.item(), reference.item(), rtol=1e-6)


def test_cross_entropy_rejects_what_torch_rejects():
    logits = minipar.tensor(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2, 0]), weight=np.ones(4))
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        F.cross_entropy(logits, np.array([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(logits, np.array([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match=r"targets of shape \(2, 5\)"):
        F.cross_entropy(minipar.tensor(np.zeros((2, 3, 5))), np.zeros((2, 4), dtype=np.int64))


# ----- nll_loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, options", [
    ((6, 4), {}),
    ((6, 4), {"reduction": "sum", "weight": True}),
    ((8, 4), {"reduction": "none", "ignored": True}),
    ((8, 4), {"weight": True, "ignored": True}),
    ((2, 4, 3, 2), {"weight": True}),
    ((4,), {}),
])
def test_nll_loss_matches_torch(shape, options):
    options = dict(options)
    classes = shape[0] if len(shape) == 1 else shape[1]
    ignore = -100 if options.pop("ignored", False) else None
    targets = classes_of(() if len(shape) == 1 else (shape[0], *shape[2:]), classes, seed=2, ignore=ignore)
    if options.pop("weight", False):
        options["weight"] = np.random.default_rng(5).uniform(0.5, 2, classes)
    theirs_options = {k: torch.tensor(v) if k == "weight" else v for k, v in options.items()}
    check_op([shape], lambda z: TF.nll_loss(TF.log_softmax(z, 0 if len(shape) == 1 else 1),
                                            torch.tensor(targets), **theirs_options),
             lambda z: F.nll_loss(F.log_softmax(z, 0 if len(shape) == 1 else 1), targets, **options))


def test_nll_loss_module_equals_cross_entropy_after_log_softmax():
    targets = np.array([2, 0, 1])
    check_op([(3, 3)], lambda z: torch.nn.NLLLoss()(torch.log_softmax(z, 1), torch.tensor(targets)),
             lambda z: nn.NLLLoss()(nn.LogSoftmax(dim=1)(z), targets))


# ----- elementwise losses ------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ours, theirs", [
    (F.mse_loss, TF.mse_loss),
    (F.l1_loss, TF.l1_loss),
    (F.smooth_l1_loss, TF.smooth_l1_loss),
    (lambda a, b, **k: F.smooth_l1_loss(a, b, beta=0.5, **k),
     lambda a, b, **k: TF.smooth_l1_loss(a, b, beta=0.5, **k)),
    (lambda a, b, **k: F.smooth_l1_loss(a, b, beta=0.0, **k),
     lambda a, b, **k: TF.smooth_l1_loss(a, b, beta=0.0, **k)),
], ids=["mse", "l1", "smooth_l1", "smooth_l1_beta_half", "smooth_l1_beta_zero"])
def test_regression_losses_match_torch_for_input_and_target(ours, theirs, reduction):
    check_op([(4, 5), (4, 5)], lambda a, b: theirs(a, b, reduction=reduction),
             lambda a, b: ours(a, b, reduction=reduction))


@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True}])
def test_binary_cross_entropy_matches_torch_for_input_and_target(options):
    options = dict(options)
    if options.pop("weight", False):
        options["weight"] = np.random.default_rng(7).uniform(0.5, 2, (1, 5))
    theirs_options = {k: torch.tensor(v) if k == "weight" else v for k, v in options.items()}
    rng = np.random.default_rng(1)
    inputs = [rng.uniform(0.02, 0.98, (4, 5)), rng.uniform(0, 1, (4, 5))]
    check_op([], lambda x, t: TF.binary_cross_entropy(x, t, **theirs_options),
             lambda x, t: F.binary_cross_entropy(x, t, **options), inputs=inputs)


def test_binary_cross_entropy_clamps_log_at_minus_100_as_torch():
    x, t = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])
    ours = F.binary_cross_entropy(minipar.tensor(x), t, reduction="none")
    assert_close(ours, TF.binary_cross_entropy(torch.tensor(x), torch.tensor(t), reduction="none"),
                 FORWARD_ATOL, FORWARD_RTOL, "clamped")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        F.binary_cross_entropy(minipar.tensor(np.array([1.5])), np.array([1.0]))


@pytest.mark.parametrize("options", [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True}, {"pos_weight": True},
    {"pos_weight": True, "weight": True, "reduction": "none"},
])
def test_binary_cross_entropy_with_logits_matches_torch_for_input_and_target(options):
    options = dict(options)
    rng = np.random.default_rng(8)
    if options.pop("weight", False):
        options["weight"] = rng.uniform(0.5, 2, (4, 1))
    if options.pop("pos_weight", False):
        options["pos_weight"] = rng.uniform(0.5, 3, 5)
    theirs_options = {k: torch.tensor(v) if k in ("weight", "pos_weight") else v for k, v in options.items()}
    inputs = [rng.uniform(-30, 30, (4, 5)), rng.uniform(0, 1, (4, 5))]  # large logits: no overflow
    check_op([], lambda z, t: TF.binary_cross_entropy_with_logits(z, t, **theirs_options),
             lambda z, t: F.binary_cross_entropy_with_logits(z, t, **options), inputs=inputs)


@pytest.mark.parametrize("name, kwargs", [
    ("MSELoss", {}), ("L1Loss", {"reduction": "sum"}), ("SmoothL1Loss", {"beta": 0.3}),
    ("BCEWithLogitsLoss", {"reduction": "none"}),
])
def test_loss_modules_equal_their_torch_modules(name, kwargs):
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    rng = np.random.default_rng(2)
    check_op([], theirs, ours, inputs=[rng.uniform(-2, 2, (3, 4)), rng.uniform(0, 1, (3, 4))])


def test_bce_loss_module_with_weight_buffer_equals_torch():
    weight = np.array([0.5, 1.0, 2.0])
    rng = np.random.default_rng(3)
    check_op([], torch.nn.BCELoss(weight=torch.tensor(weight)), nn.BCELoss(weight=weight),
             inputs=[rng.uniform(0.05, 0.95, (2, 3)), rng.uniform(0, 1, (2, 3))])


def test_losses_refuse_mismatched_shapes_and_deprecated_arguments():
    with pytest.raises(ValueError, match=r"same shape, got \(4, 1\) and \(4,\)"):
        F.l1_loss(minipar.tensor(np.zeros((4, 1))), np.zeros(4))
    with pytest.raises(ValueError, match="size_average and reduce are deprecated"):
        nn.MSELoss(size_average=True)


# ----- activations, softmax layers, one_hot, pad, normalize -------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [
    (F.silu, TF.silu),
    (nn.SiLU(), torch.nn.SiLU()),
    (F.leaky_relu, TF.leaky_relu),
    (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    (nn.LeakyReLU(0.3, inplace=True), torch.nn.LeakyReLU(0.3)),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.Identity(), torch.nn.Identity()),
], ids=["silu", "SiLU", "leaky_relu", "leaky_relu_0.2", "LeakyReLU", "Softmax", "LogSoftmax", "Sigmoid",
        "Identity"])
def test_activation_functions_and_layers_match_torch(ours, theirs):
    check_op([(6, 7)], theirs, ours, low=-40, high=40)
    check_op([(6, 7)], theirs, ours, seed=3)


def test_softmax_without_dim_uses_torchs_implicit_choice_and_warns():
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        ours = F.softmax(minipar.tensor(x))
    with pytest.warns(UserWarning):
        theirs = TF.softmax(torch.tensor(x))
    assert_close(ours, theirs, FORWARD_ATOL, FORWARD_RTOL, "implicit dim")


def test_one_hot_matches_torch_and_is_int64():
    labels = np.array([[0, 3], [2, 1]])
    for classes in (-1, 6):
        ours = F.one_hot(minipar.tensor(labels), classes)
        theirs = TF.one_hot(torch.tensor(labels), classes)
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours.array, theirs.numpy())
    with pytest.raises(ValueError, match="smaller than num_classes=3"):
        F.one_hot(minipar.tensor(labels), 3)
    with pytest.raises(TypeError, match="integer class indices"):
        F.one_hot(minipar.tensor(np.array([0.0])))


@pytest.mark.parametrize("shape, amounts, value", [
    ((2, 3), (1, 2), None),
    ((2, 3, 4), (1, 0, 2, 1), 1.5),
    ((2, 3, 4, 5), (0, 1, 1, 0, 2, 2), None),
    ((3, 6), (-1, 2, 1, -2), 0.5),   # negative amounts crop
    ((2, 5), (-2, -1), None),
])
def test_pad_constant_matches_torch(shape, amounts, value):
    check_op([shape], lambda x: TF.pad(x, amounts, value=value if value is not None else 0.0),
             lambda x: F.pad(x, amounts, value=value))


def test_pad_names_what_it_does_not_implement():
    with pytest.raises(ValueError, match="mode='constant' only"):
        F.pad(minipar.tensor(np.zeros((1, 2, 3))), (1, 1), mode="reflect")
    with pytest.raises(ValueError, match="even number"):
        F.pad(minipar.tensor(np.zeros((2, 3))), (1, 1, 1))


@pytest.mark.parametrize("kwargs", [{}, {"dim": 0}, {"p": 1.0}, {"p": 3.0, "dim": -1}, {"p": float("inf")}])
def test_normalize_matches_torch(kwargs):
    check_op([(4, 5)], lambda x: TF.normalize(x, **kwargs), lambda x: F.normalize(x, **kwargs))


def test_normalize_of_a_zero_row_divides_by_eps_as_torch():
    x = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]])
    check_op([], lambda a: TF.normalize(a, eps=1e-3), lambda a: F.normalize(a, eps=1e-3), inputs=[x])


# ----- pooling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, shape", [
    ((2,), {}, (2, 3, 8, 8)),
    ((3,), {"stride": 2}, (2, 2, 7, 9)),
    (((2, 3),), {"stride": (1, 2), "padding": (1, 1)}, (1, 2, 6, 7)),
    ((3,), {"padding": 1, "count_include_pad": False}, (2, 2, 5, 5)),
    ((2,), {"divisor_override": 3}, (1, 1, 4, 4)),
    ((2,), {}, (3, 6, 6)),  # unbatched (C, H, W)
])
def test_avg_pool2d_matches_torch(args, kwargs, shape):
    check_op([shape], torch.nn.AvgPool2d(*args, **kwargs), nn.AvgPool2d(*args, **kwargs))
    check_op([shape], lambda x: TF.avg_pool2d(x, *args, **kwargs), lambda x: F.avg_pool2d(x, *args, **kwargs))


@pytest.mark.parametrize("output_size, shape", [
    (1, (2, 3, 7, 5)), ((2, 3), (2, 2, 8, 9)), ((3, 3), (1, 2, 7, 5)), ((None, 2), (1, 1, 4, 5)),
    (4, (2, 6, 6)),
])
def test_adaptive_avg_pool2d_matches_torch(output_size, shape):
    check_op([shape], torch.nn.AdaptiveAvgPool2d(output_size), nn.AdaptiveAvgPool2d(output_size))
