"""``DataLoader``: batches of rows of arrays, in order, shuffled or from a sampler."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.random import generator
from minipar.tensor import Tensor
from minipar.utils.data.sampler import _check_count


# ----- batching --------------------------------------------------------------------------------
class DataLoader:
    """Batches of rows of one or more arrays with the same first dimension.

    Each batch is a tuple of Tensors, one per array (``x, y = batch``), holding
    copies of the selected rows in the arrays' dtypes (integer targets stay
    integer and go straight into ``cross_entropy``). Order: ``0..N-1``; with
    ``shuffle=True`` a fresh permutation per epoch drawn from minipar's
    generator (so ``minipar.manual_seed`` makes it reproducible); with
    ``sampler`` (e.g. a ``DistributedSampler``) the indices it yields.
    ``len(loader)`` is the number of batches: ``ceil(M / batch_size)``, or the
    floor with ``drop_last``, where M is the number of indices per epoch.
    """

    def __init__(self, *arrays: Any, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, sampler: Iterable[int] | None = None) -> None:
        if not arrays:
            raise ValueError("DataLoader needs at least one array, e.g. DataLoader(x, y, batch_size=32)")
        unwrapped = [a.array if isinstance(a, Tensor) else a for a in arrays]
        for position, array in enumerate(unwrapped):
            if not hasattr(array, "shape") or len(array.shape) == 0:
                raise TypeError(
                    f"DataLoader takes arrays with a first (sample) dimension; argument {position} "
                    f"is {type(array).__name__}" + (" of shape ()" if hasattr(array, "shape") else "")
                )
        lengths = [array.shape[0] for array in unwrapped]
        if len(set(lengths)) != 1:
            raise ValueError(f"DataLoader arrays must have the same first dimension, got lengths {lengths}")
        self.batch_size = _check_count(batch_size, "batch_size", 1)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle=True or a sampler, not both (the sampler orders)")
        self.arrays = unwrapped
        self.dataset_len = lengths[0]
        self.shuffle, self.drop_last, self.sampler = bool(shuffle), bool(drop_last), sampler
        sampler_len = getattr(sampler, "dataset_len", None)
        if sampler_len is not None and sampler_len != self.dataset_len:
            raise ValueError(
                f"sampler covers {sampler_len} items but the arrays have {self.dataset_len} rows"
            )

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the sampler (a DistributedSampler reshuffles); else nothing to do."""
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _index_stream(self) -> Iterator[int]:
        if self.sampler is not None:
            return iter(self.sampler)
        if self.shuffle:
            return iter(generator().permutation(self.dataset_len).tolist())
        return iter(range(self.dataset_len))

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        # Pull indices lazily, one batch at a time, so a sampler's "consumed" count
        # is exactly the number of indices in the batches handed out so far.
        stream = self._index_stream()
        while True:
            batch = list(itertools.islice(stream, self.batch_size))
            if not batch or (self.drop_last and len(batch) < self.batch_size):
                return
            index = np.asarray(batch, dtype=np.int64)
            yield tuple(Tensor(array[get_array_module(array).asarray(index)]) for array in self.arrays)

    def __len__(self) -> int:
        count = len(self.sampler) if self.sampler is not None else self.dataset_len  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)
