"""Every op in DESIGN.md against PyTorch in float64: forward and every input's gradient.

One line per op through ``check_op`` (tests/op_helper.py states the tolerances).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from op_helper import check_op, make_inputs

import minipar

# ----- arithmetic ------------------------------------------------------------------------------


def test_add_sub_mul_div_neg_match_torch():
    check_op([(3, 4), (3, 4)], lambda a, b: a + b)
    check_op([(3, 4), (3, 4)], lambda a, b: a - b)
    check_op([(3, 4), (3, 4)], lambda a, b: a * b)
    check_op([(3, 4), (3, 4)], lambda a, b: a / b, low=0.5, high=2.0)
    check_op([(3, 4)], lambda a: -a)


def test_arithmetic_with_python_numbers_on_either_side():
    check_op([(5,)], lambda a: 2.5 + a - 1.25)
    check_op([(5,)], lambda a: 3.0 - a * 0.5)
    check_op([(5,)], lambda a: 1.5 / a + a / 4.0, low=0.5, high=2.0)


def test_power_by_number_tensor_and_as_base():
    check_op([(2, 3)], lambda a: a ** 3)
    check_op([(2, 3)], lambda a: a ** 2.5, low=0.5, high=2.0)
    check_op([(2, 3)], lambda a: a ** -1.5, low=0.5, high=2.0)
    check_op([(2, 3), (2, 3)], lambda a, b: a ** b, low=0.5, high=2.0)
    check_op([(2, 3)], lambda a: 2.0 ** a)


def test_sqrt_and_abs_match_torch():
    check_op([(4, 3)], lambda a: a.sqrt(), low=0.5, high=3.0)
    check_op([(4, 3)], lambda a: a.abs())


# ----- elementwise functions ---------------------------------------------------------------------


def test_exp_log_match_torch():
    check_op([(3, 5)], lambda a: a.exp())
    check_op([(3, 5)], lambda a: a.log(), low=0.1, high=5.0)


def test_relu_tanh_sigmoid_match_torch():
    check_op([(4, 6)], lambda a: a.relu())
    check_op([(4, 6)], lambda a: a.tanh())
    check_op([(4, 6)], lambda a: a.sigmoid())


def test_sigmoid_is_stable_for_large_inputs():
    check_op([(50,)], lambda a: a.sigmoid(), low=-800.0, high=800.0)


def test_relu_gradient_at_zero_is_zero_as_torch():
    check_op([], lambda a: a.relu(), inputs=[np.array([-1.0, 0.0, 2.0])])


# ----- comparisons (no gradient) -----------------------------------------------------------------


@pytest.mark.parametrize("compare", [
    lambda a, b: a < b, lambda a, b: a <= b, lambda a, b: a > b,
    lambda a, b: a >= b, lambda a, b: a == b, lambda a, b: a != b,
])
def test_comparisons_give_torch_booleans(compare):
    a, b = make_inputs([(4, 5), (5,)])
    b[:2] = a[0, :2]  # some equal elements
    check_op([], compare, inputs=[a, b], grad=False)


# ----- indexing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [
    1, -1, (slice(None), 2), (slice(1, 3), slice(None, None, 2)), (Ellipsis, 0), (None, 1),
    (slice(None), slice(None), 1), (0, slice(1, None), slice(None, 3)),
])
def test_basic_indexing_and_slicing_match_torch(index):
    check_op([(3, 4, 5)], lambda a: a[index])


def test_integer_array_indexing_with_repeats_adds_gradients():
    rows = np.array([0, 2, 0, 0, 1])
    check_op([(3, 4)], lambda a: a[torch.tensor(rows)], lambda a: a[rows])
    cols = np.array([3, 3, 1])
    check_op([(3, 4)], lambda a: a[torch.tensor(rows[:3]), torch.tensor(cols)],
             lambda a: a[rows[:3], cols])
    check_op([(3, 4)], lambda a: a[:, torch.tensor(cols)], lambda a: a[:, cols])


def test_integer_tensor_index_works_like_an_array():
    index = minipar.tensor(np.array([1, 1, 0]))
    check_op([(3, 2)], lambda a: a[torch.tensor([1, 1, 0])], lambda a: a[index])


def test_boolean_mask_indexing_matches_torch():
    mask = np.array([True, False, True, True])
    check_op([(4, 3)], lambda a: a[torch.tensor(mask)], lambda a: a[mask])


def test_negative_step_slice_gradient_lands_in_place():
    # PyTorch has no negative steps, so the oracle is the index map itself
    x = minipar.tensor(np.arange(6.0), requires_grad=True)
    (x[::-2] * minipar.tensor(np.array([1.0, 2.0, 3.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 2, 0, 1])


# ----- reductions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_mean_match_torch(axis, keepdims):
    dim = tuple(range(3)) if axis is None else axis
    check_op([(2, 3, 4)], lambda a: a.sum(dim, keepdim=keepdims), lambda a: a.sum(axis, keepdims))
    check_op([(2, 3, 4)], lambda a: a.mean(dim, keepdim=keepdims), lambda a: a.mean(axis, keepdims))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_amax_amin_match_torch(axis, keepdims):
    dim = tuple(range(3)) if axis is None else axis
    check_op([(2, 3, 4)], lambda a: a.amax(dim, keepdim=keepdims), lambda a: a.amax(axis, keepdims))
    check_op([(2, 3, 4)], lambda a: a.amin(dim, keepdim=keepdims), lambda a: a.amin(axis, keepdims))


def test_max_splits_the_gradient_between_ties_as_amax():
    ties = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    check_op([], lambda a: a.amax(1), lambda a: a.amax(dim=1), inputs=[ties])
    check_op([], lambda a: a.amax(), lambda a: a.max(), inputs=[ties])


# ----- shape ---------------------------------------------------------------------------------------


def test_reshape_transpose_and_T_match_torch():
    check_op([(2, 3, 4)], lambda a: a.reshape(4, 6))
    check_op([(2, 3, 4)], lambda a: a.reshape(-1))
    check_op([(2, 3, 4)], lambda a: a.reshape((3, -1)))
    check_op([(2, 3, 4)], lambda a: a.permute(2, 0, 1))
    check_op([(2, 3, 4)], lambda a: a.permute(1, 2, 0), lambda a: a.permute((1, 2, 0)))
    check_op([(2, 3, 4)], lambda a: a.transpose(0, 2))
    check_op([(2, 3, 4)], lambda a: a.transpose(-1, 1))
    check_op([(3, 5)], lambda a: a.T)


def test_cat_and_stack_match_torch():
    check_op([(2, 3), (4, 3)], lambda a, b: torch.cat([a, b], 0), lambda a, b: minipar.cat([a, b], 0))
    check_op([(2, 3), (2, 1)], lambda a, b: torch.cat([a, b], 1), lambda a, b: minipar.cat([a, b], axis=1))
    check_op([(2, 3), (2, 3), (2, 3)], lambda a, b, c: torch.stack([a, b, c], 1),
             lambda a, b, c: minipar.stack([a, b, c], axis=1))
    check_op([(2, 3), (2, 3)], lambda a, b: torch.stack([a, b], -1), lambda a, b: minipar.stack([a, b], -1))


# ----- matmul --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [
    [(4,), (4,)],                 # vector . vector -> scalar
    [(4,), (4, 3)],               # vector @ matrix
    [(3, 4), (4,)],               # matrix @ vector
    [(3, 4), (4, 5)],             # matrix @ matrix
    [(2, 3, 4), (2, 4, 5)],       # batched
    [(2, 1, 3, 4), (5, 4, 2)],    # broadcast batch dimensions
    [(2, 3, 4), (4,)],            # batch @ vector
    [(4,), (2, 4, 3)],            # vector @ batch
    [(3, 4), (2, 4, 5)],          # matrix broadcast against a batch
])
def test_matmul_matches_torch(shapes):
    check_op(shapes, lambda a, b: a @ b)


def test_composite_expression_matches_torch():
    check_op([(4, 3), (3, 2), (2,)],
             lambda x, w, b: ((x @ w + b).tanh() * x.sum(1, keepdim=True)).exp().mean(),
             lambda x, w, b: ((x @ w + b).tanh() * x.sum(1, keepdims=True)).exp().mean())


# ----- broadcasting over any compatible shapes -----------------------------------------------------

OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@settings(max_examples=40, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2**16))
def test_broadcasting_gradients_reduce_to_each_input_shape_as_torch(shapes, op, seed):
    a, b = make_inputs(shapes.input_shapes, low=0.5, high=2.0, seed=seed)
    signs = np.where(np.random.default_rng(seed).random(a.shape) < 0.5, -1.0, 1.0)
    check_op([], OPS[op], inputs=[a * signs, b], seed=seed)


@settings(max_examples=20, deadline=None)
@given(shapes=mutually_broadcastable_shapes(signature="(m?,n),(n,p?)->(m?,p?)", max_dims=3, max_side=3))
def test_matmul_broadcast_batch_gradients_match_torch(shapes):
    check_op(shapes.input_shapes, lambda a, b: a @ b)


# ----- PyTorch's tensor API (issue 15): every differentiable new op against torch ------------------


def test_max_min_with_dim_give_values_with_the_gradient_at_the_index():
    check_op([(3, 4)], lambda a: a.max(1).values)
    check_op([(3, 4)], lambda a: a.min(0, keepdim=True).values)
    check_op([(3, 4)], lambda a: a.max(dim=-1)[0])
    check_op([(3, 4), (3, 4)], lambda a, b: torch.max(a, b), lambda a, b: minipar.max(a, b))
    check_op([(3, 4), (4,)], lambda a, b: torch.minimum(a, b), lambda a, b: minipar.minimum(a, b))


def test_var_std_default_to_bessel_correction_as_torch():
    check_op([(3, 4)], lambda a: a.var())
    check_op([(3, 4)], lambda a: a.var(0))
    check_op([(3, 4)], lambda a: a.std(1, keepdim=True))
    check_op([(3, 4)], lambda a: a.var(1, unbiased=False))
    check_op([(2, 3, 4)], lambda a: a.std(dim=(0, 2), correction=0))


def test_softmax_log_softmax_methods_match_torch():
    check_op([(3, 5)], lambda a: a.softmax(-1))
    check_op([(3, 5)], lambda a: a.log_softmax(dim=0))


def test_shape_methods_match_torch():
    check_op([(2, 1, 3)], lambda a: a.squeeze())
    check_op([(2, 1, 3)], lambda a: a.squeeze(1).unsqueeze(0).unsqueeze(-1))
    check_op([(2, 3)], lambda a: a.t())
    check_op([(2, 3, 4)], lambda a: a.flatten(1))
    check_op([(2, 3, 4, 5)], lambda a: a.flatten(1, 2))
    check_op([(3, 1)], lambda a: a.expand(2, 3, 4))
    check_op([(3, 1)], lambda a: a.expand(-1, 5))
    check_op([(2, 3)], lambda a: a.repeat(2, 3))
    check_op([(2, 3)], lambda a: a.repeat(2, 1, 2))
    check_op([(5, 3)], lambda a: torch.stack(a.chunk(3, 0)[:2], 0),
             lambda a: minipar.stack(a.chunk(3, 0)[:2], 0))
    check_op([(5, 3)], lambda a: a.split([2, 3])[1] * a.split(2)[0].sum())
    check_op([(2, 3)], lambda a: a.t().contiguous())
    check_op([(2, 3), (3, 2)], lambda a, b: a.view_as(b) * b)


def test_selections_match_torch():
    check_op([(3, 4), (3, 4)], lambda a, b: torch.where(a > 0, a, b), lambda a, b: minipar.where(a > 0, a, b))
    check_op([(3, 4), (4,)], lambda a, b: a.where(a < b, b))
    check_op([(3, 4)], lambda a: a.masked_fill(a > 0.5, 0.0))
    check_op([(3, 4)], lambda a: a.clamp(-0.5, 0.5), inputs=[np.linspace(-2, 2, 12).reshape(3, 4) + 0.01])
    check_op([(3, 4)], lambda a: a.clamp(min=0.0))
    check_op([(3, 4)], lambda a: a.pow(3))
    check_op([(4, 4)], lambda a: a.tril() + a.triu(1) * 2)
    check_op([(2, 4, 4)], lambda a: torch.tril(a, -1), lambda a: minipar.tril(a, -1))


def test_remainder_and_floor_divide_match_torch():
    check_op([(3, 4), (3, 4)], lambda a, b: a % b, low=0.5, high=3.0)
    check_op([(3, 4)], lambda a: a % 0.7)
    check_op([(3, 4), (3, 4)], lambda a, b: a // b, low=0.5, high=3.0, grad=False)  # torch: no backward


def test_matmul_bmm_einsum_match_torch():
    check_op([(2, 3, 4), (2, 4, 5)], lambda a, b: torch.bmm(a, b), lambda a, b: minipar.bmm(a, b))
    check_op([(3, 4), (4, 5)], lambda a, b: torch.matmul(a, b), lambda a, b: minipar.matmul(a, b))
    for equation, shapes in [("ij,jk->ik", [(3, 4), (4, 5)]),
                             ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
                             ("ij->j", [(3, 4)]), ("i,j->ij", [(3,), (4,)]), ("ij,ij", [(3, 4), (3, 4)]),
                             ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
                             ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)])]:
        check_op(shapes, lambda *ops, e=equation: torch.einsum(e, *ops),
                 lambda *ops, e=equation: minipar.einsum(e, *ops))


def test_integer_and_bit_operators_match_torch():
    a, b = np.array([7, -3, 12, 5]), np.array([2, 5, 5, 3])
    for op in (lambda x, y: x % y, lambda x, y: x // y, lambda x, y: x & y, lambda x, y: x | y,
               lambda x, y: x ^ y, lambda x, y: x << (y % 4), lambda x, y: x >> 1, lambda x, y: ~x,
               lambda x, y: 10 % y, lambda x, y: 100 // y, lambda x, y: 6 & x):
        ours = op(minipar.tensor(a), minipar.tensor(b))
        theirs = op(torch.tensor(a), torch.tensor(b))
        assert ours.dtype == np.int64 and ours.tolist() == theirs.tolist()
    masks = (minipar.tensor([True, False]), torch.tensor([True, False]))
    assert (~masks[0]).tolist() == (~masks[1]).tolist()
    assert (masks[0] | ~masks[0]).tolist() == [True, True]
    with pytest.raises(TypeError, match=r"& needs integer or bool tensors, got float32"):
        minipar.ones(2) & minipar.ones(2)
