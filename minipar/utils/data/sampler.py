"""Samplers: the order in which a DataLoader visits a dataset's indices, as PyTorch has them.

    SequentialSampler(dataset)         0, 1, ..., n-1
    RandomSampler(dataset)             a permutation (or draws with replacement)
    BatchSampler(sampler, 32, False)   lists of 32 indices from any sampler

Random draws come from ``generator`` when given, else from minipar's generator of this
thread, so ``minipar.manual_seed`` makes shuffling reproducible. ``generator`` is a
``numpy.random.Generator`` or an object holding one as ``.generator`` (the hook for a
torch-style ``Generator`` object with ``manual_seed``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from minipar.random import generator as thread_generator


def _check_count(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _numpy_generator(generator: Any) -> np.random.Generator:
    """The NumPy generator to draw from: ``generator``, the one it holds, or minipar's."""
    if generator is None:
        return thread_generator()
    if isinstance(generator, np.random.Generator):
        return generator
    inner = getattr(generator, "generator", None)
    if isinstance(inner, np.random.Generator):
        return inner
    raise TypeError("generator must be a numpy.random.Generator (or an object holding one as "
                    f".generator), got {type(generator).__name__}")


class Sampler:
    """Base class: an iterable of dataset indices with a length (subclasses define both)."""

    def __init__(self, data_source: Any = None) -> None:
        pass

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__()")


class SequentialSampler(Sampler):
    """Indices ``0..len(data_source)-1`` in order."""

    def __init__(self, data_source: Any) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A fresh random order of ``data_source``'s indices on every iteration.

    Without replacement: a permutation of ``0..n-1`` (``num_samples > n`` chains several
    permutations, the last one cut, as PyTorch does). With replacement: ``num_samples``
    independent uniform draws from ``0..n-1``. ``num_samples`` defaults to ``n``.
    """

    def __init__(self, data_source: Any, replacement: bool = False, num_samples: int | None = None,
                 generator: Any = None) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be a bool, got {replacement!r}")
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self._num_samples = None if num_samples is None else _check_count(num_samples, "num_samples", 1)
        _numpy_generator(generator)  # a bad generator fails here, not in the first epoch

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n, rng = len(self.data_source), _numpy_generator(self.generator)
        if self.replacement:
            return iter(rng.integers(0, n, size=self.num_samples).tolist())
        full, rest = divmod(self.num_samples, n) if n else (0, 0)
        orders = [rng.permutation(n).tolist() for _ in range(full)]
        if rest:
            orders.append(rng.permutation(n)[:rest].tolist())
        return itertools.chain.from_iterable(orders)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a fresh random order on every iteration."""

    def __init__(self, indices: Sequence[int], generator: Any = None) -> None:
        self.indices, self.generator = list(indices), generator

    def __iter__(self) -> Iterator[int]:
        order = _numpy_generator(self.generator).permutation(len(self.indices))
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler``; the last one shorter unless ``drop_last``.

    ``len`` is ``ceil(len(sampler) / batch_size)``, or the floor with ``drop_last``. Indices
    are pulled lazily, one batch at a time, so a sampler that counts what it has handed
    out (``DistributedSampler``'s resume position) counts exactly the batches taken so far.
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        self.sampler = sampler
        self.batch_size = _check_count(batch_size, "batch_size", 1)
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        stream = iter(self.sampler)
        while True:
            batch = [int(i) for i in itertools.islice(stream, self.batch_size)]
            if not batch or (self.drop_last and len(batch) < self.batch_size):
                return
            yield batch

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)
