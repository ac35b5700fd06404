"""``Embedding``: a lookup table; row i of ``weight`` is the vector for token i.

    out[..., :] = weight[indices[...], :]        indices: integers in [0, num_embeddings)

Forward is integer-array indexing. Backward scatters each output row's
gradient back onto the row it came from, *adding* when an index repeats
(the same token twice in a batch gets both gradients):

    grad_weight[i] = sum over positions p with indices[p] == i of grad[p]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import device_of, get_array_module, to_device
from minipar.nn.module import Module, Parameter
from minipar.random import generator
from minipar.tensor import Tensor


class EmbeddingFunction(Function):
    @staticmethod
    def forward(ctx: Any, weight: Any, indices: Any) -> Any:
        ctx.weight_shape, ctx.dtype = weight.shape, weight.dtype
        ctx.save_for_backward(indices)
        return weight[indices]  # (..., dim)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        (indices,) = ctx.saved_tensors
        grad_weight = xp.zeros(ctx.weight_shape, dtype=ctx.dtype)
        # unbuffered add: a repeated index accumulates instead of overwriting
        xp.add.at(grad_weight, indices.reshape(-1), grad.reshape(-1, ctx.weight_shape[1]))
        return grad_weight, None


def _index_array(indices: Any, weight: Tensor, who: str) -> Any:
    """The indices as an integer array on weight's device, checked against its row count."""
    num_embeddings = weight.shape[0]
    array = indices.array if isinstance(indices, Tensor) else indices
    if not hasattr(array, "dtype"):
        array = np.asarray(array)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who} expected integer indices, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= num_embeddings):
        raise ValueError(
            f"{who} expected indices in [0, {num_embeddings}), got values from "
            f"{int(array.min())} to {int(array.max())}"
        )
    return to_device(array, device_of(weight.array))


def embedding(indices: Any, weight: Tensor) -> Tensor:
    """PyTorch's ``F.embedding(input, weight)``: rows of ``weight`` picked by integer ``indices``."""
    if weight.ndim != 2:
        raise ValueError(f"embedding expected a weight of shape (num, dim), got {tuple(weight.shape)}")
    return EmbeddingFunction.apply(weight, _index_array(indices, weight, "embedding"))


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim)``; init N(0, 1) as PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = np.float32) -> None:
        super().__init__()
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Embedding {name} must be a positive integer, got {value!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(
            generator().standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices: Any) -> Tensor:
        who = f"Embedding(num_embeddings={self.num_embeddings})"
        return EmbeddingFunction.apply(self.weight, _index_array(indices, self.weight, who))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
