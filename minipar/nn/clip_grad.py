"""Gradient clipping, as ``torch.nn.utils`` has it (``minipar.nn.utils`` is this module).

    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)   # before opt.step()

``clip_grad_norm_``: the total p-norm of all gradients together, ``total = (sum_i ||g_i||_p^p)^(1/p)``
(``inf``: the largest absolute entry); if it exceeds ``max_norm`` every gradient is scaled
by ``max_norm / (total + 1e-6)``, in place. Returns ``total`` as a 0-d Tensor.
``clip_grad_value_``: every gradient entry clamped to ``[-clip_value, clip_value]``, in place.
``parameters_to_vector`` / ``vector_to_parameters``: parameters as one flat vector and back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.tensor import Tensor


def _with_grads(parameters: Any) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in params if p.grad is not None]


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: Any = None) -> Tensor:
    grads = [p.grad.array for p in _with_grads(parameters)]
    norm_type = float(norm_type)
    if not grads:
        return Tensor(np.asarray(0.0))
    if math.isinf(norm_type):
        total = max(float(get_array_module(g).abs(g).max()) if g.size else 0.0 for g in grads)
    else:
        norms = [float(get_array_module(g).linalg.norm(g.reshape(-1), norm_type)) for g in grads]
        total = float(np.linalg.norm(np.asarray(norms), norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total}: "
                           "non-finite, so clipping them is impossible (error_if_nonfinite=True)")
    coefficient = float(max_norm) / (total + 1e-6)
    if coefficient < 1.0:
        for g in grads:
            g *= g.dtype.type(coefficient)
    return Tensor(np.asarray(total, dtype=grads[0].dtype))


def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach: Any = None) -> None:
    for p in _with_grads(parameters):
        g = p.grad.array
        get_array_module(g).clip(g, -clip_value, clip_value, out=g)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    arrays = [p.array.reshape(-1) for p in parameters]
    return Tensor(get_array_module(arrays[0]).concatenate(arrays))


def vector_to_parameters(vector: Tensor, parameters: Iterable[Tensor]) -> None:
    flat, offset = vector.array if isinstance(vector, Tensor) else vector, 0
    for p in parameters:
        p.array[...] = flat[offset:offset + p.array.size].reshape(p.shape)
        offset += p.array.size
