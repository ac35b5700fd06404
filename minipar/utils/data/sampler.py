"""``DistributedSampler``: this rank's share of every epoch, as PyTorch computes it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np


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

