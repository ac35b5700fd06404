"""Turning a list of samples into one batch, as PyTorch's ``default_collate`` does.

    default_collate([(x0, 3), (x1, 5)])  ->  [stack([x0, x1]), tensor([3, 5])]

Rules, applied recursively on the first sample's type:
  Tensor                -> the samples stacked along a new first dimension
  NumPy / CuPy array    -> stacked, as a Tensor (dtype kept)
  NumPy scalar          -> a 1-D Tensor of its dtype
  float / int / bool    -> a 1-D Tensor: float64 / int64 / bool (Python floats are doubles)
  str / bytes           -> the list as it is
  dict (Mapping)        -> the same keys, each collated over the samples
  namedtuple            -> the same namedtuple of collated fields
  tuple / list          -> a list of collated fields (a tuple becomes a list, as in PyTorch);
                           all samples must have the same length
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.ops import stack
from minipar.tensor import Tensor


def _is_array(value: Any) -> bool:
    """A NumPy or CuPy array (not a Tensor, not a scalar)."""
    return not isinstance(value, (Tensor, np.generic)) and hasattr(value, "shape") and hasattr(value, "dtype")


def default_collate(batch: Sequence[Any]) -> Any:
    """One batch from a list of samples (rules in the module docstring)."""
    if len(batch) == 0:
        raise ValueError("default_collate got an empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        if any(t.requires_grad for t in batch):  # keep the graph, as torch.stack would
            return stack(list(batch), 0)
        return Tensor(get_array_module(elem.array).stack([t.array for t in batch]))
    if _is_array(elem):
        if elem.dtype.kind in "OSUV":
            raise TypeError(f"default_collate: arrays of dtype {elem.dtype} cannot become a Tensor")
        return Tensor(get_array_module(elem).stack(list(batch)))
    if isinstance(elem, np.generic):
        return Tensor(np.asarray(batch))
    if isinstance(elem, bool):
        return Tensor(np.asarray(batch, dtype=bool))
    if isinstance(elem, float):
        return Tensor(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, int):
        return Tensor(np.asarray(batch, dtype=np.int64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, Mapping):
        collated = {key: default_collate([sample[key] for sample in batch]) for key in elem}
        try:
            return type(elem)(collated)
        except TypeError:  # a Mapping type that cannot be built from a dict
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, Sequence):
        if len({len(sample) for sample in batch}) != 1:
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError("default_collate: batch must contain Tensors, NumPy arrays, numbers, dicts or "
                    f"lists; found {type(elem).__name__}")


def default_convert(sample: Any) -> Any:
    """A sample without batching (``batch_size=None``): arrays and NumPy scalars become Tensors,
    containers are converted element by element, everything else is left as it is."""
    if isinstance(sample, Tensor):
        return sample
    if _is_array(sample) and sample.dtype.kind not in "OSUV":
        return Tensor(sample)
    if isinstance(sample, np.generic):
        return Tensor(np.asarray(sample))
    if isinstance(sample, Mapping):
        return {key: default_convert(value) for key, value in sample.items()}
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):
        return type(sample)(*(default_convert(field) for field in sample))
    if isinstance(sample, (list, tuple)):
        return [default_convert(field) for field in sample]
    return sample
