"""``DistributedSampler``: this rank's share of every epoch, as PyTorch computes it.

    sampler = DistributedSampler(dataset, shuffle=True, seed=0)   # rank and size: the process group
    loader = DataLoader(dataset, batch_size=16, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                                  # same new permutation on every rank

PyTorch's rules: with ``n`` indices and ``p`` ranks every rank gets ``ceil(n / p)`` of
them (``floor(n / p)`` with ``drop_last``): the (shuffled) list ``0..n-1`` is padded by
wrapping around to its start until its length is ``p * ceil(n / p)`` (or cut to
``p * floor(n / p)``), and rank ``r`` takes positions ``r, r + p, r + 2p, ...``. The
permutation of epoch ``e`` is minipar's own: ``numpy.random.Generator(PCG64(seed + e))``,
so every rank computes the same one without talking, and the global RNG is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from minipar.utils.data.sampler import Sampler, _check_count


def default_process_group() -> Any:
    """The communicator a DistributedSampler reads ``rank`` and ``size`` from when given none.

    This is the one place the initialised process group is looked up: the group of
    ``minipar.distributed.init_process_group`` (a spawned thread rank's own, or MPI's world),
    else ``minipar.comm.world()`` (MPI's world under ``mpiexec``, a size-1 world otherwise).
    Imported lazily: the data package needs no communicator until a sampler asks for one.
    """
    from minipar import distributed

    group = distributed.default_group()
    return group if group is not None else distributed._comm.world()


def _is_communicator(value: Any) -> bool:
    return hasattr(value, "rank") and hasattr(value, "size") and not isinstance(value, (int, np.integer))


class DistributedSampler(Sampler):
    """This rank's indices of ``dataset`` (a Dataset or its length), as PyTorch computes them.

    ``num_replicas`` and ``rank`` default to the communicator's ``size`` and ``rank``: that
    of ``comm`` when given, else of the process group (``default_process_group``). Only
    those two numbers are read: the sampler sends no messages. (For the first round's call
    ``DistributedSampler(n, comm)`` a communicator in ``num_replicas``' place is taken as ``comm``.)

    ``len(sampler)`` is ``ceil(n / p)`` (``floor(n / p)`` with ``drop_last``) on every
    rank, so every rank runs the same number of steps and no collective waits for a rank
    that has run out.

    Resuming (minipar's addition): ``state_dict()`` records the epoch and how many of this
    epoch's indices have been handed out; after ``load_state_dict`` the next iteration
    starts where that one stopped (``set_epoch`` with the same epoch keeps the position,
    another epoch starts from its beginning).
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, *, comm: Any = None) -> None:
        if _is_communicator(num_replicas) and comm is None:  # the first round's (n, comm) form
            num_replicas, comm = None, num_replicas
        if not isinstance(dataset, (int, np.integer)) and not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler takes a dataset with a length, or the length itself; "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset
        self.dataset_len = _check_count(dataset if isinstance(dataset, (int, np.integer)) else len(dataset),
                                        "dataset length", 0)
        if num_replicas is None or rank is None:
            group = comm if comm is not None else default_process_group()
            group_rank, group_size = getattr(group, "rank", None), getattr(group, "size", None)
            if not (isinstance(group_rank, (int, np.integer)) and isinstance(group_size, (int, np.integer))):
                raise TypeError("DistributedSampler needs a communicator with integer .rank and .size, "
                                f"got {type(group).__name__}")
            num_replicas = group_size if num_replicas is None else num_replicas
            rank = group_rank if rank is None else rank
        self.num_replicas = _check_count(num_replicas, "num_replicas", 1)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise ValueError(f"rank must be an integer, got {rank!r}")
        if not 0 <= rank < self.num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {self.num_replicas - 1}]")
        self.rank = int(rank)
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
