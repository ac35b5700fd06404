"""One line per op test: run the same computation in minipar and in PyTorch, compare both ways.

    check_op([(3, 4), (4,)], lambda a, b: a * b)                      # same code in both
    check_op([(2, 3)], lambda a: a.sum(1), lambda a: a.sum(axis=1))  # torch_fn, minipar_fn

Inputs are float64 draws from U(low, high), seeded, handed to both libraries
as copies. The output is compared, then both are back-propagated with the
same random upstream gradient (not ones, so every output element's gradient
path is exercised) and every input's gradient is compared.

Tolerances (float64 throughout; what the two libraries may differ by through
summation order and libm implementations):
    forward:   |ours - torch| <= 1e-12 + 1e-10 * |torch|
    gradients: |ours - torch| <= 1e-10 + 1e-8  * |torch|
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import minipar

FORWARD_ATOL, FORWARD_RTOL = 1e-12, 1e-10
GRAD_ATOL, GRAD_RTOL = 1e-10, 1e-8


def make_inputs(shapes: Sequence[tuple[int, ...]], low: float = -2.0, high: float = 2.0,
                seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.uniform(low, high, shape), dtype=np.float64) for shape in shapes]


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, minipar.Tensor):
        return value.numpy()
    return np.asarray(value)


def assert_close(ours: Any, theirs: Any, atol: float, rtol: float, what: str) -> None:
    ours, theirs = _to_numpy(ours), _to_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    if theirs.dtype.kind == "f":
        assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch's {theirs.dtype}"
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=rtol, err_msg=what)


def check_op(shapes: Sequence[tuple[int, ...]], torch_fn: Callable[..., Any],
             minipar_fn: Callable[..., Any] | None = None, *, low: float = -2.0, high: float = 2.0,
             seed: int = 0, inputs: Sequence[np.ndarray] | None = None,
             grad: bool = True) -> tuple[minipar.Tensor, list[minipar.Tensor]]:
    """Compare ``minipar_fn`` (default: ``torch_fn``) with ``torch_fn`` on float64 inputs.

    ``inputs`` overrides the random draws (e.g. to place values away from a
    kink); ``grad=False`` compares the forward only (comparisons, integer output).
    Returns minipar's output and input tensors for further checks.
    """
    arrays = list(inputs) if inputs is not None else make_inputs(shapes, low, high, seed)
    ours_in = [minipar.tensor(a, requires_grad=grad) for a in arrays]
    theirs_in = [torch.tensor(a, requires_grad=grad) for a in arrays]
    ours = (minipar_fn or torch_fn)(*ours_in)
    theirs = torch_fn(*theirs_in)
    assert_close(ours, theirs, FORWARD_ATOL, FORWARD_RTOL, "forward")
    if grad:
        upstream = np.random.default_rng(seed + 1).standard_normal(tuple(theirs.shape))
        ours.backward(upstream)
        theirs.backward(torch.tensor(upstream))
        for index, (mine, reference) in enumerate(zip(ours_in, theirs_in)):
            expected = reference.grad if reference.grad is not None else torch.zeros_like(reference)
            got = mine.grad if mine.grad is not None else np.zeros_like(mine.array)
            assert_close(got, expected, GRAD_ATOL, GRAD_RTOL, f"gradient of input {index}")
    return ours, ours_in
