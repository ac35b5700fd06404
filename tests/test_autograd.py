"""The autograd engine's rules, each checked against PyTorch or a closed form; gradcheck itself."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from op_helper import check_op

import minipar
import minipar.nn.functional as F
from minipar.autograd import Function
from minipar.gradcheck import gradcheck


def leaf(array, requires_grad=True):
    return minipar.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


# ----- accumulation and graph shape ------------------------------------------------------------


def test_gradients_accumulate_across_two_backwards():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.array + 3)


def test_tensor_used_twice_gets_both_contributions():
    # f = x*x + x*y + x  ->  df/dx = 2x + y + 1, df/dy = x
    check_op([(3,), (3,)], lambda x, y: x * x + x * y + x)
    x, y = leaf([1.0, -2.0]), leaf([0.5, 4.0])
    (x * x + x * y + x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.array + y.array + 1)
    np.testing.assert_array_equal(y.grad, x.array)


def test_diamond_graph_matches_torch():
    def diamond(x):
        h = x.tanh()
        return (h * 2 + h.exp() * h).sum()
    check_op([(4,)], diamond)


def test_leaf_grads_never_alias_each_other_or_the_callers_gradient():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (x + y).sum().backward()
    assert x.grad is not y.grad
    x.grad[0] = 100.0
    assert y.grad[0] == 1.0
    upstream = np.ones(2)
    z = leaf([5.0, 6.0])
    (z + 0).backward(upstream)
    upstream[0] = -7.0
    assert z.grad[0] == 1.0, "backward(grad) must not store the caller's array as .grad"
    w = leaf([1.0, 2.0])
    w.backward(upstream)
    upstream[1] = 42.0
    assert w.grad[1] == 1.0


def test_broadcast_leaf_grad_is_its_own_array():
    x = leaf(np.ones((2, 3)))
    b = leaf(np.zeros((3,)))
    (x + b).backward(np.ones((2, 3)))
    assert x.grad.shape == (2, 3) and b.grad.shape == (3,)
    x.grad[...] = 0
    np.testing.assert_array_equal(b.grad, [2.0, 2.0, 2.0])


# ----- no_grad, detach, retain_graph ------------------------------------------------------------


def test_no_grad_records_nothing_and_is_per_thread():
    x = leaf([1.0, 2.0])
    seen = {}
    with minipar.no_grad():
        y = x * 2
        thread = threading.Thread(target=lambda: seen.setdefault("other", (x * 2).requires_grad))
        thread.start()
        thread.join()
    assert not y.requires_grad and y.is_leaf
    assert seen["other"] is True, "no_grad in one thread must not switch off another thread's graph"
    assert (x * 2).requires_grad


def test_detach_shares_data_and_stops_gradient():
    x = leaf([1.0, 2.0])
    d = x.detach()
    assert d.array is x.array and not d.requires_grad
    (x * d).sum().backward()  # d is a constant: d(x*d)/dx = d
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])


def test_second_backward_without_retain_graph_raises_and_with_it_accumulates():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    x.grad = None
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    once = x.grad.array.copy()
    z.backward()
    np.testing.assert_allclose(x.grad, 2 * once)


def test_backward_on_non_scalar_without_grad_raises_saying_so():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(RuntimeError, match=r"scalar output.*\(2, 2\)"):
        (x * 2).backward()


def test_backward_with_grad_on_non_scalar_matches_torch():
    check_op([(2, 3)], lambda a: a.exp() * 3)


# ----- hooks ------------------------------------------------------------------------------------


def _copy(grad):
    return grad.detach().numpy().copy() if isinstance(grad, torch.Tensor) else np.array(grad)


def test_register_hook_observes_and_replaces_like_torch():
    def run(lib_tensor, x_array):
        x = lib_tensor(x_array)
        seen = []
        h = x * 3
        h.register_hook(lambda g: seen.append(_copy(g)) or g * 10)  # replace: scale by 10
        x.register_hook(lambda g: seen.append(_copy(g)))  # observe the final leaf gradient
        (h * h).sum().backward()
        return seen, _copy(x.grad)

    x_array = np.array([1.0, -2.0])
    ours, our_grad = run(lambda a: minipar.tensor(a, requires_grad=True), x_array)
    theirs, their_grad = run(lambda a: torch.tensor(a, requires_grad=True), x_array)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine, reference)
    np.testing.assert_allclose(our_grad, their_grad)  # 10 * 2*9x
    np.testing.assert_allclose(our_grad, 180 * x_array)


def test_hook_removal_stops_calls():
    x = leaf([1.0])
    calls = []
    remove = x.register_hook(calls.append)
    (x * 2).sum().backward()
    remove()
    (x * 2).sum().backward()
    assert len(calls) == 1


def test_post_accumulate_hook_runs_once_after_grad_is_final():
    x = leaf([1.0, 2.0])
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.array.copy()))
    (x * x + x * 4).sum().backward()  # x used three times, one call with the total
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], 2 * x.array + 4)
    (x * 1).sum().backward()  # second backward: called again, after accumulation
    np.testing.assert_array_equal(seen[1], 2 * x.array + 5)


class ViewAndBase(Function):
    """(a, b) -> a + b[:2]: backward hands b a new array and a the first two entries of it, a view."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b[:2]

    @staticmethod
    def backward(ctx, grad):
        full = np.concatenate([grad, np.zeros(1)])
        return full[:2], full


class DoubledSum(Function):
    """(a, b) -> 2 (a + b): backward hands both inputs one new array."""

    @staticmethod
    def forward(ctx, a, b):
        return 2 * (a + b)

    @staticmethod
    def backward(ctx, grad):
        twice = 2 * grad
        return twice, twice


def test_a_post_accumulate_hook_may_overwrite_grad_in_place_without_changing_any_other_gradient():
    """The engine never reads a leaf's .grad once its hooks ran (what lets DDP all-reduce it in place)."""
    def graph(a, b, c, d, e, f, g):
        s = a + b  # Add hands both leaves the array it was given
        h = (c + s.tanh()) * 1.5  # c gets the array that also flows on to tanh's node
        h = h + d  # d's gradient is passed through unchanged
        tail = ViewAndBase.apply(f * 3, e)  # e gets an array whose view flows on to f * 3
        both = DoubledSum.apply(g, g.exp())  # g gets an array that also flows on to exp
        return (h * h).sum() + (tail * tail).sum() + (both * both).sum()

    values = [np.linspace(-1, 1, 3) + k for k in range(4)]
    values += [np.array([0.5, -2.0, 1.0]), np.array([0.25, -0.5]), np.array([0.1, 0.2])]
    plain = [leaf(v) for v in values]
    graph(*plain).backward()
    scribbled, seen = [leaf(v) for v in values], {}

    def overwrite(t):
        seen[id(t)] = t.grad.array.copy()
        t.grad[...] = np.nan  # e.g. an all-reduce working in place

    for t in scribbled:
        t.register_post_accumulate_grad_hook(overwrite)
    graph(*scribbled).backward()
    for want, got in zip(plain, scribbled):
        np.testing.assert_array_equal(seen[id(got)], want.grad)


def test_post_accumulate_hook_is_refused_on_non_leaf():
    x = leaf([1.0])
    with pytest.raises(ValueError, match="leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


# ----- dtypes ------------------------------------------------------------------------------------


def test_float64_stays_float64_through_ops_and_gradients():
    x = minipar.tensor(np.array([[0.5, -1.0]]))
    w = minipar.tensor(np.array([[2.0], [3.0]]), requires_grad=True)
    x.requires_grad_()
    y = ((x @ w).tanh() * 2.5 + 1).sigmoid().exp() / 3.0
    assert y.dtype == np.float64
    y.sum().backward()
    assert w.grad.dtype == np.float64 and x.grad.dtype == np.float64


def test_python_numbers_give_float32_and_keep_it_through_ops():
    x = minipar.tensor([1.0, 2.0], requires_grad=True)
    assert x.dtype == np.float32
    y = (x * 2.5 + 1.0) ** 2 / 4.0
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_tensor_dtype_rules_follow_design():
    assert minipar.tensor(np.zeros(3)).dtype == np.float64  # arrays keep their float dtype
    assert minipar.tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert minipar.tensor(np.arange(3)).dtype == np.arange(3).dtype  # integer arrays stay integers
    assert minipar.tensor(2.5).dtype == np.float32  # Python floats: float32, ints: int64 (PyTorch's)
    assert minipar.tensor([[1.0, 2], [3, 4]]).dtype == np.float32
    assert minipar.tensor([[1, 2], [3, 4]]).dtype == np.int64
    assert minipar.tensor([True, False]).dtype == np.bool_
    assert minipar.tensor([1, 2], dtype=np.float64).dtype == np.float64
    source = np.ones(2)
    copied = minipar.tensor(source)
    source[0] = 5.0
    assert copied.array[0] == 1.0, "tensor() copies its input, like torch.tensor"


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        minipar.tensor(np.arange(3), requires_grad=True)


# ----- custom Function -------------------------------------------------------------------------------


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x ** 2


class WrongCube(Cube):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x ** 2  # deliberately wrong


def test_custom_function_is_differentiated_and_gradchecked():
    x = leaf([0.5, -1.5, 2.0])
    assert gradcheck(lambda t: Cube.apply(t) * 2, [x])


# ----- gradcheck ------------------------------------------------------------------------------------


def test_gradcheck_catches_a_wrong_backward_and_names_the_input():
    x = leaf([0.5, -1.5, 2.0])
    with pytest.raises(AssertionError, match=r"input 0 at index \(0,\): numeric .* vs analytic"):
        gradcheck(lambda t: WrongCube.apply(t), [x])


def test_gradcheck_needs_float64_and_a_differentiable_input():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, [minipar.tensor([1.0], requires_grad=True)])
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda t: t * 2, [leaf([1.0], requires_grad=False)])


def test_gradcheck_leaves_inputs_as_they_were():
    x = leaf([1.0, 2.0])
    x.grad = minipar.tensor(np.array([7.0, 7.0]))
    data = x.array
    gradcheck(lambda t: (t * t).sum(), x)
    assert x.array is data and np.array_equal(x.array, [1.0, 2.0])
    np.testing.assert_array_equal(x.grad, [7.0, 7.0])


def _rand(*shape, seed=0, low=-1.0, high=1.0):
    return leaf(np.random.default_rng(seed).uniform(low, high, shape))


@pytest.mark.parametrize("name, fn, shapes", [
    ("relu shifted off the kink", lambda x, y: ((x + 5.5).relu() * y).sum(axis=0), [(3, 4), (3, 4)]),
    ("matmul chain", lambda x, w, v: ((x @ w).tanh() @ v).sigmoid(), [(3, 4), (4, 5), (5, 2)]),
    ("broadcast divide", lambda x, y: x / (y * y + 1) - x.exp().mean(axis=1, keepdims=True),
     [(3, 4), (4,)]),
    ("indexing with repeats", lambda x, y: x[np.array([0, 2, 0])] * y[1:, ::2].sum(), [(3, 4), (3, 4)]),
    ("cat, stack, transpose", lambda x, y: minipar.stack([minipar.cat([x, y], 1).T[1:3], x.T * 2], 0),
     [(3, 2), (3, 2)]),
    ("power and log", lambda x, y: ((x * x + 1) ** 1.5 * (y * y + 2).log()).amax(dim=1), [(3, 4), (3, 4)]),
    ("log_softmax and softmax", lambda x, y: F.log_softmax(x, axis=1) * F.softmax(y * 3, axis=1),
     [(3, 5), (3, 5)]),
    ("gelu, both forms", lambda x, y: F.gelu(x * 2) + F.gelu(y * 2, approximate="tanh"), [(3, 4), (3, 4)]),
    ("layer_norm", lambda x, w: F.layer_norm(x, (4,), w, w * 0.5), [(3, 4), (4,)]),
    ("conv2d with stride and padding", lambda x, w: F.conv2d(x, w, stride=2, padding=1),
     [(2, 2, 5, 5), (3, 2, 3, 3)]),
    ("overlapping max_pool2d", lambda x, y: F.max_pool2d(x * y, 3, stride=2), [(2, 2, 5, 5), (5,)]),
])
def test_gradcheck_of_composite_expressions(name, fn, shapes):
    inputs = [_rand(*shape, seed=i) for i, shape in enumerate(shapes)]
    assert gradcheck(fn, inputs), name


def test_gradcheck_of_embedding_and_dropout_with_fixed_mask():
    weight = _rand(5, 3)
    indices = np.array([[1, 4], [1, 1]])
    assert gradcheck(lambda w: F.embedding(indices, w) * 2, [weight])

    def dropped(x):
        minipar.manual_seed(3)  # the same mask for every evaluation
        return F.dropout(x, 0.4)
    assert gradcheck(dropped, [_rand(4, 5)])
