"""The production backward walk gives the same gradients as the reference walk, on any graph.

``minipar.autograd.backward_reference`` is the micrograd picture (depth-first topological
order, every leaf gradient copied); the production walk counts consumers and hands leaves
their gradient without copying when it can prove nobody else holds it. Random programs
mix what makes that proof hard: shared inputs, views, gradients passed through unchanged,
a Function returning one array for two inputs, hooks replacing gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minipar
from minipar.autograd import Function


class Twice(Function):
    """out = a + b, whose backward hands the *same* array to both inputs."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        return a + b

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any]:
        shared = grad * 1.0
        return shared, shared


class ViewBack(Function):
    """out = 3 a, whose backward returns a view of a new array."""

    @staticmethod
    def forward(ctx: Any, a: Any) -> Any:
        return 3 * a

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        wide = np.concatenate([3 * grad, 3 * grad], axis=-1)
        return wide[..., : grad.shape[-1]]


SHAPE = (2, 3)
OPS = ["add", "mul", "sub", "twice", "viewback", "transpose2", "slice_add", "tanh", "hooked"]

program = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.integers(0, 50)),
                   min_size=1, max_size=14)


def run(steps: list[tuple[str, int, int]], leaf_hooks: bool, reference: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    leaves = [minipar.tensor(rng.standard_normal(SHAPE), requires_grad=True) for _ in range(3)]
    if leaf_hooks:
        leaves[0].register_hook(lambda g: g * 2.0)  # a replacement: the engine must copy it
        leaves[1].register_hook(lambda g: None)     # a hook that only looks
    pool = list(leaves)
    for op, i, j in steps:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if op == "add":
            out = a + b  # Add passes the incoming gradient on, unchanged, to both
        elif op == "mul":
            out = a * b
        elif op == "sub":
            out = a - b
        elif op == "twice":
            out = Twice.apply(a, b)
        elif op == "viewback":
            out = ViewBack.apply(a)
        elif op == "transpose2":
            out = a.T.T  # two views
        elif op == "slice_add":
            out = a + b[0:1]  # a broadcast slice: b's gradient is a view's reduction
        elif op == "tanh":
            out = a.tanh()
        else:
            out = a * 1.5
            out.register_hook(lambda g: g + 1.0)  # a hook on an intermediate result
        pool.append(out)
    loss = sum(((t * (k + 1)).sum() for k, t in enumerate(pool[3:])), minipar.tensor(0.0))
    minipar.autograd.backward(loss, np.ones_like(loss.array), reference=reference)
    return [np.zeros(SHAPE) if leaf.grad is None else leaf.grad.array.copy() for leaf in leaves]


@settings(max_examples=150, deadline=None)
@given(program, st.booleans())
def test_production_and_reference_walks_give_the_same_leaf_gradients(steps, leaf_hooks) -> None:
    production = run(steps, leaf_hooks, reference=False)
    reference = run(steps, leaf_hooks, reference=True)
    for got, want in zip(production, reference):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)  # float64; sums may reorder


def test_reference_walk_frees_saved_arrays_and_refuses_a_second_backward() -> None:
    x = minipar.tensor(np.ones(3), requires_grad=True)
    y = (x * x).sum()
    minipar.autograd.backward(y, np.ones(()), reference=True)
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
    with pytest.raises(RuntimeError, match="second time"):
        minipar.autograd.backward(y, np.ones(()), reference=True)
