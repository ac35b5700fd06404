"""Datasets as PyTorch has them: anything with ``__getitem__`` and ``__len__``.

    dataset = TensorDataset(images, labels)          # dataset[i] == (images[i], labels[i])
    train, val = random_split(dataset, [0.8, 0.2])   # two Subsets, a random partition
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.tensor import Tensor
from minipar.utils.data.sampler import _numpy_generator


class Dataset:
    """A map-style dataset: ``dataset[i]`` is sample ``i`` and ``len(dataset)`` how many there are.

    Subclass it and define ``__getitem__`` (and ``__len__`` for samplers and ``len(loader)``);
    ``a + b`` concatenates two datasets. A sample is anything ``default_collate`` can batch:
    Tensors, arrays, numbers, or tuples and dicts of them.
    """

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index)")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A stream of samples: define ``__iter__``. A DataLoader reads it in order and groups it
    into batches (no sampler, no shuffle: the stream decides the order)."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__()")


class TensorDataset(Dataset):
    """Sample ``i`` is ``(t[i] for t in tensors)``: rows of Tensors (or arrays) with a common first dim.

    Arrays are wrapped as Tensors sharing their memory. A DataLoader with the default collate
    takes a whole batch of rows with one fancy index per tensor (``batch``), which gives the
    same Tensors as indexing row by row and stacking, without the per-row work.
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor, e.g. TensorDataset(x, y)")
        wrapped = []
        for position, item in enumerate(tensors):
            if not isinstance(item, Tensor):
                if not hasattr(item, "shape") or not hasattr(item, "dtype"):
                    raise TypeError(f"TensorDataset takes Tensors or arrays; argument {position} is "
                                    f"{type(item).__name__}")
                item = Tensor(item)
            if len(item.shape) == 0:
                raise ValueError(f"TensorDataset argument {position} is 0-d; every tensor needs a "
                                 "first (sample) dimension")
            wrapped.append(item)
        lengths = [t.shape[0] for t in wrapped]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset tensors must have the same first dimension, "
                             f"got lengths {lengths}")
        self.tensors = tuple(wrapped)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def batch(self, indices: Sequence[int]) -> list[Tensor]:
        """``default_collate([self[i] for i in indices])``, one fancy index per tensor (copies)."""
        result = []
        for t in self.tensors:
            index = get_array_module(t.array).asarray(np.asarray(indices, dtype=np.int64))
            result.append(t[index] if t.requires_grad else Tensor(t.array[index]))
        return result


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order: ``subset[i] = dataset[indices[i]]``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, list):
            return [self.dataset[self.indices[i]] for i in index]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch's samples at once (PyTorch's batched fetch; the loader calls it when present)."""
        inner = [self.indices[i] for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(inner)
        return [self.dataset[i] for i in inner]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    """Datasets one after another: index ``i`` falls in the first dataset whose cumulative size exceeds it."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        for position, dataset in enumerate(self.datasets):
            if isinstance(dataset, IterableDataset):
                raise TypeError(f"ConcatDataset takes map-style datasets; dataset {position} is iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            if -index > len(self):
                raise IndexError(f"index {index} is out of range for a dataset of {len(self)} samples")
            index += len(self)
        which = bisect.bisect_right(self.cumulative_sizes, index)
        if which == len(self.datasets):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} samples")
        start = self.cumulative_sizes[which - 1] if which > 0 else 0
        return self.datasets[which][index - start]


def random_split(dataset: Any, lengths: Sequence[int | float], generator: Any = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random Subsets of the given ``lengths``, as PyTorch does.

    ``lengths`` are sizes summing to ``len(dataset)``, or fractions summing to 1: then each
    size is ``floor(fraction * n)`` and the remainder goes one by one to the first splits
    (round robin). The indices are one permutation of ``0..n-1`` cut in order. The
    permutation is drawn from ``generator`` (a ``numpy.random.Generator``, or an object
    holding one as ``.generator``) or, by default, minipar's generator (``manual_seed``).
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1) \
            and sum(lengths) <= 1:
        for position, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split fraction at index {position} is not in [0, 1], "
                                 f"got {fraction}")
        sizes = [int(math.floor(n * fraction)) for fraction in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0 for x in lengths):
            raise ValueError(f"random_split lengths must be non-negative integers summing to {n} or "
                             f"fractions summing to 1, got {lengths}")
        sizes = [int(x) for x in lengths]
    if sum(sizes) != n:
        raise ValueError(f"random_split: the lengths sum to {sum(sizes)}, the dataset has {n} samples")
    order = _numpy_generator(generator).permutation(n).tolist()
    splits, offset = [], 0
    for size in sizes:
        splits.append(Subset(dataset, order[offset : offset + size]))
        offset += size
    return splits
