"""``gradcheck``: compare backward's gradients with central finite differences (no PyTorch needed).

For a function f of tensors, pick a fixed random vector v of f's output shape
and look at the scalar s(x) = sum(v * f(x)). Backward with ``grad=v`` gives
ds/dx analytically. Numerically, one element at a time,

    ds/dx_j ~ (s(x + eps e_j) - s(x - eps e_j)) / (2 eps)     (error O(eps^2))

A wrong backward agrees with that for a random v only by accident, so one
vector checks the whole vector-Jacobian product. Run in float64: with eps =
1e-6 the difference quotient keeps about 10 significant digits; float32 would
keep almost none. Keep inputs away from kinks (relu at 0, ties in max):
there the two one-sided slopes differ and no finite difference is right.

    >>> import numpy as np, minipar
    >>> from minipar.gradcheck import gradcheck
    >>> x = minipar.tensor(np.random.rand(3, 4), requires_grad=True)   # float64
    >>> gradcheck(lambda x: (x.exp() * x).sum(axis=1), [x])
    True

Cost: 2 forward passes per input element, so keep the inputs small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minipar.autograd import no_grad
from minipar.backend import get_array_module
from minipar.tensor import Tensor


def gradcheck(fn: Callable[..., Tensor], inputs: Tensor | Sequence[Any], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """True when every input's analytic gradient matches central differences, else AssertionError.

    ``inputs``: a tensor or a sequence of arguments for ``fn``; those that are
    float64 tensors with requires_grad=True are checked. An element passes when
    |analytic - numeric| <= atol + rtol * |numeric|. Inputs' ``.array`` and
    ``.grad`` are left as they were.
    """
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [i for i, arg in enumerate(args) if isinstance(arg, Tensor) and arg.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input tensor with requires_grad=True")
    for i in checked:
        if args[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck needs float64 inputs (finite differences lose float32's few digits), "
                f"input {i} is {args[i].dtype}: pass .double() copies"
            )
    saved = [(args[i].array, args[i].grad) for i in checked]
    try:
        analytic, projection = _analytic(fn, args, checked)
        for i, grad in zip(checked, analytic):
            _compare(fn, args, i, grad, projection, eps, atol, rtol)
    finally:
        for i, (data, grad) in zip(checked, saved):
            args[i].array, args[i]._grad = data, grad
    return True


def _analytic(fn: Callable[..., Tensor], args: tuple[Any, ...], checked: list[int]) -> tuple[list[Any], Any]:
    """Backward once with grad = v (a fixed standard-normal array); returns each input's grad."""
    for i in checked:
        args[i].grad = None
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    xp = get_array_module(out.array)
    projection = xp.asarray(np.random.default_rng(1234).standard_normal(out.shape), dtype=np.float64)
    if out.requires_grad:
        out.backward(projection)
    grads = []
    for i in checked:
        grad = args[i].grad
        grads.append(xp.zeros_like(args[i].array) if grad is None else grad.array.copy())
    return grads, projection


def _compare(fn: Callable[..., Tensor], args: tuple[Any, ...], i: int, analytic: Any, projection: Any,
             eps: float, atol: float, rtol: float) -> None:
    """Central differences for input ``i``, one element at a time, against ``analytic``."""
    tensor = args[i]
    data = tensor.array.copy()  # perturbed in place; the caller's array is restored afterwards
    tensor.array = data

    def projected() -> float:
        with no_grad():
            return (fn(*args).array * projection).sum().item()

    for index in np.ndindex(data.shape):
        original = data[index].item()
        data[index] = original + eps
        plus = projected()
        data[index] = original - eps
        minus = projected()
        data[index] = original
        numeric = (plus - minus) / (2 * eps)
        expected = analytic[index].item()
        if not abs(expected - numeric) <= atol + rtol * abs(numeric):
            raise AssertionError(
                f"gradcheck failed for input {i} at index {index}: numeric {numeric!r} vs "
                f"analytic {expected!r} (|difference| {abs(expected - numeric):.3g} > "
                f"atol {atol} + rtol {rtol} * |numeric|)"
            )
