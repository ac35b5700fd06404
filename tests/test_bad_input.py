"""Bad input gets a clear error that says what was expected and what came, not a NumPy traceback."""

from __future__ import annotations

import operator
import re

import numpy as np
import pytest

import minipar
import minipar.nn.functional as F
from minipar import nn, optim


def t(*shape, requires_grad=False):
    return minipar.tensor(np.ones(shape), requires_grad=requires_grad)


# ----- shapes ------------------------------------------------------------------------------------------


def test_matmul_of_mismatched_shapes_names_both():
    with pytest.raises(ValueError, match=re.escape("(3, 4)") + ".*" + re.escape("(5, 2)")):
        t(3, 4) @ t(5, 2)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 4)") + ".*" + re.escape("(3, 4, 5)")):
        t(2, 3, 4) @ t(3, 4, 5)  # batch dimensions 2 and 3 do not broadcast
    with pytest.raises(ValueError, match="1-D"):
        minipar.tensor(np.float64(2.0)) @ t(2)


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow])
def test_broadcasting_mismatch_names_both_shapes(op):
    with pytest.raises(ValueError, match=re.escape("(3, 4)") + ".*" + re.escape("(2, 4)")):
        op(t(3, 4), t(2, 4))


def test_reshape_to_a_wrong_size_names_both():
    with pytest.raises(ValueError, match=r"\(2, 3\).*6 elements.*\(4, 2\)"):
        t(2, 3).reshape(4, 2)


def test_cat_with_mismatched_shapes_says_so():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        minipar.cat([t(2, 3), t(2, 4)], axis=0)


def test_out_of_range_axis_is_a_value_error():
    with pytest.raises(ValueError, match="dim 2 is out of range for a tensor with 2 dimensions"):
        t(2, 3).sum(axis=2)


# ----- backward ------------------------------------------------------------------------------------


def test_backward_on_a_non_scalar_without_grad_says_it_needs_a_scalar():
    y = t(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"needs a scalar output, got shape \(2, 3\)"):
        y.backward()


def test_backward_with_a_wrong_shaped_grad_names_both_shapes():
    y = t(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_on_a_tensor_without_grad_says_why():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (t(2) * 2).sum().backward()


# ----- layers ------------------------------------------------------------------------------------------


def test_linear_fed_the_wrong_feature_size_says_what_it_expected():
    with pytest.raises(ValueError, match=re.escape("Linear(in_features=5) expected input whose last "
                                                   "dimension is 5, got shape (8, 4)")):
        nn.Linear(5, 3)(t(8, 4))


def test_conv2d_fed_the_wrong_channels_says_what_it_expected():
    with pytest.raises(ValueError, match=re.escape(
            "Conv2d(in_channels=3) expected input of shape (N, 3, H, W), got (8, 1, 28, 28)")):
        nn.Conv2d(3, 6, 5)(t(8, 1, 28, 28))
    with pytest.raises(ValueError, match=re.escape("(N, 3, H, W), got (3, 28, 28)")):
        nn.Conv2d(3, 6, 5)(t(3, 28, 28))


def test_conv2d_input_smaller_than_the_kernel_says_so():
    with pytest.raises(ValueError, match=r"kernel \(5, 5\).*got spatial size \(3, 3\)"):
        nn.Conv2d(1, 2, 5)(t(1, 1, 3, 3))


def test_maxpool_layernorm_embedding_flatten_name_expected_and_got():
    with pytest.raises(ValueError, match=re.escape("expected input of shape (N, C, H, W) with H >= 2 and "
                                                   "W >= 2, got (4, 1, 1)")):
        nn.MaxPool2d(2)(t(4, 1, 1))
    with pytest.raises(ValueError, match=re.escape("trailing shape is (8,), got (4, 6)")):
        nn.LayerNorm(8)(t(4, 6))
    with pytest.raises(ValueError, match=r"indices in \[0, 10\), got values from 0 to 10"):
        nn.Embedding(10, 3)(np.array([0, 10]))
    with pytest.raises(TypeError, match="integer indices"):
        nn.Embedding(10, 3)(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=3, end_dim=-1\).*got shape \(2, 3\)"):
        nn.Flatten(3)(t(2, 3))


@pytest.mark.parametrize("make", [
    lambda: nn.Dropout(-0.1), lambda: nn.Dropout(1.5), lambda: nn.Dropout("0.5"),
    lambda: F.dropout(t(2), p=2.0), lambda: nn.GELU(approximate="fast"), lambda: nn.Conv2d(0, 2, 3),
    lambda: nn.Conv2d(1, 2, 3, stride=0), lambda: nn.Conv2d(1, 2, 3, padding=-1), lambda: nn.MaxPool2d(0),
    lambda: nn.LayerNorm(0), lambda: nn.Embedding(0, 3), lambda: nn.Linear(3, -1),
])
def test_bad_layer_arguments_are_value_errors(make):
    with pytest.raises(ValueError):
        make()


# ----- losses --------------------------------------------------------------------------------------------


def test_cross_entropy_bad_targets_say_what_was_expected():
    logits = t(4, 3)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\), got values from 0 to 3"):
        F.cross_entropy(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\), got values from -1"):
        F.cross_entropy(logits, np.array([-1, 1, 2, 0]))
    with pytest.raises(TypeError, match="integer class targets, got dtype float64"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets of shape \(4,\).*got \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"targets of shape \(\) for logits \(4,\), got \(4,\)"):
        F.cross_entropy(t(4), np.array([0, 1, 2, 0]))  # (C,) logits are one unbatched sample, as torch
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, d1, ...\), got shape \(\)"):
        F.cross_entropy(minipar.tensor(1.0), np.array(0))


def test_mse_loss_refuses_silent_broadcasting():
    with pytest.raises(ValueError, match=r"\(4, 1\) and \(4,\)"):
        F.mse_loss(t(4, 1), t(4))


# ----- optimizers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=-0.1),
    lambda p: optim.SGD(p, lr=0.1, momentum=-0.5),
    lambda p: optim.SGD(p, lr=0.1, weight_decay=-1.0),
    lambda p: optim.SGD(p, lr=0.1, nesterov=True),  # nesterov needs momentum
    lambda p: optim.Adam(p, lr=-1e-3),
    lambda p: optim.Adam(p, betas=(1.0, 0.999)),
    lambda p: optim.Adam(p, betas=(0.9, -0.1)),
    lambda p: optim.Adam(p, betas=(0.9,)),
    lambda p: optim.Adam(p, eps=-1e-8),
    lambda p: optim.Adam(p, weight_decay=-0.1),
    lambda p: optim.Adam(p, lr="fast"),
])
def test_optimizers_refuse_bad_hyperparameters(make):
    with pytest.raises(ValueError):
        make([nn.Parameter(np.ones(2))])


@pytest.mark.parametrize("cls, kwargs", [(optim.SGD, {"lr": 0.1}), (optim.Adam, {})])
def test_optimizers_refuse_empty_or_non_tensor_params(cls, kwargs):
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([], **kwargs)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls(nn.ReLU().parameters(), **kwargs)  # a model without parameters
    with pytest.raises(TypeError, match="expects Tensors"):
        cls([np.ones(2)], **kwargs)


def test_optimizer_state_dict_for_a_different_model_is_refused():
    opt = optim.Adam([nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))])
    other = optim.Adam([nn.Parameter(np.ones(2))])
    with pytest.raises(ValueError, match="holds 2 parameters, optimizer has 1"):
        other.load_state_dict(opt.state_dict())
