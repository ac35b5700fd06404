"""Data: the 8x8 digits, a ``DataLoader`` over arrays, and a ``DistributedSampler``.

    digits = load_digits()                       # 1438 train / 359 test, pixels in [0, 1]
    loader = DataLoader(digits.x_train, digits.y_train, batch_size=64, shuffle=True)
    for x, y in loader:                          # x: Tensor (64, 64) float32, y: Tensor (64,) int64
        loss = F.cross_entropy(model(x), y)

Data parallel training gives each rank its own share of every epoch:

    sampler = DistributedSampler(len(digits.y_train), comm, shuffle=True, seed=0)
    loader = DataLoader(digits.x_train, digits.y_train, batch_size=16, sampler=sampler)
    for epoch in range(epochs):
        loader.set_epoch(epoch)                  # same new permutation on every rank

``DistributedSampler`` follows PyTorch's rules exactly. With ``n`` indices and
``p`` ranks every rank gets ``ceil(n / p)`` of them (``floor(n / p)`` with
``drop_last``): the (shuffled) list ``0..n-1`` is padded by wrapping around to
its start until its length is ``p * ceil(n / p)`` (or cut to ``p * floor(n / p)``),
and rank ``r`` takes positions ``r, r + p, r + 2p, ...``. The permutation of
epoch ``e`` comes from a generator seeded with ``seed + e`` alone, so every rank
computes the same one without talking, and the global RNG is left untouched.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.random import generator
from minipar.tensor import Tensor

__all__ = ["DataLoader", "Digits", "DistributedSampler", "load_digits"]


# ----- the digits ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class Digits:
    """Train and test split of scikit-learn's 8x8 handwritten digits (10 classes).

    x_*: (N, 64) floats in [0, 1] (row-major 8x8 pixels); y_*: (N,) int64 in 0..9.
    Unpacks as a tuple: ``x_train, y_train, x_test, y_test = load_digits()``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def train_images(self) -> np.ndarray:
        """x_train as (N, 1, 8, 8) images (channels first) for a CNN; a view, not a copy."""
        return self.x_train.reshape(-1, 1, 8, 8)

    @property
    def test_images(self) -> np.ndarray:
        """x_test as (N, 1, 8, 8) images."""
        return self.x_test.reshape(-1, 1, 8, 8)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))


def load_digits(test_fraction: float = 0.2, seed: int = 0, dtype: Any = np.float32) -> Digits:
    """The 1797 digits bundled with scikit-learn (no download), split train/test.

    Pixels (0..16 in the source) are divided by 16. The split is stratified and
    deterministic: the indices of each class are permuted by
    ``numpy.random.default_rng(seed)`` (classes in order 0..9) and the first
    ``round(test_fraction * class_count)`` of them go to the test set; both sets
    are then sorted back into the original order. The default gives 1438 train
    and 359 test digits. The global minipar RNG is not used.
    """
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    from sklearn.datasets import load_digits as sklearn_digits  # bundled csv, ~0.1 s

    bunch = sklearn_digits()
    pixels = (bunch.data / 16.0).astype(dtype)  # (1797, 64)
    labels = bunch.target.astype(np.int64)  # (1797,)
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_parts.append(members[: round(test_fraction * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    return Digits(pixels[~is_test], labels[~is_test], pixels[is_test], labels[is_test])


# ----- sampling -------------------------------------------------------------------------------
def _check_count(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class DistributedSampler:
    """This rank's indices of a dataset of ``dataset_len`` items, as PyTorch computes them.

    ``len(sampler)`` is ``ceil(n / p)`` (``floor(n / p)`` with ``drop_last``) on
    every rank, so every rank runs the same number of steps and no collective
    waits for a rank that has run out. Only ``comm.rank`` and ``comm.size`` are
    read: the sampler sends no messages.

    Resuming: ``state_dict()`` records the epoch and how many of this epoch's
    indices have been handed out; after ``load_state_dict`` the next iteration
    starts where that one stopped (``set_epoch`` with the same epoch keeps the
    position, another epoch starts from its beginning).
    """

    def __init__(self, dataset_len: int, comm: Any, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        self.dataset_len = _check_count(dataset_len, "dataset_len", 0)
        rank, size = getattr(comm, "rank", None), getattr(comm, "size", None)
        if not (isinstance(rank, (int, np.integer)) and isinstance(size, (int, np.integer))
                and 0 <= rank < size):
            raise TypeError(
                "DistributedSampler needs a communicator with integer .rank and .size "
                f"(0 <= rank < size), got {type(comm).__name__}"
                + (f" with rank={rank!r}, size={size!r}" if rank is not None or size is not None else "")
            )
        self.rank, self.num_replicas = int(rank), int(size)
        self.shuffle = bool(shuffle)
        self.seed = _check_count(seed, "seed", 0)
        self.drop_last = bool(drop_last)
        p = self.num_replicas
        self.num_samples = self.dataset_len // p if drop_last else math.ceil(self.dataset_len / p)
        self.total_size = self.num_samples * p
        self.epoch = 0
        self.consumed = 0  # indices of this epoch handed out so far (by the last __iter__)
        self._start = 0  # where the next __iter__ begins (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutation next (same on every rank for the same seed)."""
        epoch = _check_count(epoch, "epoch", 0)
        if epoch != self.epoch:
            self._start = 0
            self.consumed = 0
        self.epoch = epoch

    def global_indices(self) -> np.ndarray:
        """The padded (or cut) index list of this epoch, before it is split over ranks."""
        n = self.dataset_len
        if self.shuffle:  # independent of minipar's global generator: same on every rank
            order = np.random.Generator(np.random.PCG64(self.seed + self.epoch)).permutation(n)
        else:
            order = np.arange(n)
        if self.drop_last:
            return order[: self.total_size]
        # wrap-around padding: repeat from the start (several times if n < p)
        return np.resize(order, self.total_size) if n else order

    def indices(self) -> np.ndarray:
        """All of this rank's indices for the current epoch: positions rank, rank+p, ..."""
        return self.global_indices()[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        mine = self.indices()
        start, self._start = self._start, 0
        self.consumed = start
        for index in mine[start:]:
            self.consumed += 1
            yield int(index)

    def __len__(self) -> int:
        """How many indices the next iteration yields (``num_samples`` unless resuming)."""
        return self.num_samples - self._start

    def state_dict(self) -> dict[str, int]:
        """Position for a snapshot: plain ints, so it saves without pickling."""
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "dataset_len": self.dataset_len, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the indices not yet consumed."""
        missing = [k for k in ("epoch", "consumed", "seed", "dataset_len", "num_replicas")
                   if k not in state]
        if missing:
            raise KeyError(f"sampler state is missing {missing}; expected DistributedSampler.state_dict()")
        if int(state["dataset_len"]) != self.dataset_len:
            raise ValueError(
                f"sampler state is for a dataset of {int(state['dataset_len'])} items, "
                f"this sampler has {self.dataset_len}"
            )
        consumed = _check_count(state["consumed"], "consumed", 0)
        if consumed > self.num_samples:
            raise ValueError(f"consumed {consumed} exceeds this rank's {self.num_samples} indices")
        if int(state["num_replicas"]) != self.num_replicas and consumed != 0:
            raise ValueError(
                f"cannot resume mid-epoch on {self.num_replicas} ranks from a state saved on "
                f"{int(state['num_replicas'])} (consumed {consumed}); snapshot at an epoch boundary"
            )
        self.seed = _check_count(state["seed"], "seed", 0)
        self.epoch = _check_count(state["epoch"], "epoch", 0)
        self.consumed = self._start = consumed


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
        unwrapped = [a.data if isinstance(a, Tensor) else a for a in arrays]
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
