"""``DataLoader``: batches from a dataset, in order, shuffled or from a sampler, as in PyTorch.

    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    for xb, yb in loader:                   # xb: (64, ...) Tensor, yb: (64,) Tensor
        ...

What happens per batch: the batch sampler yields a list of indices, the dataset gives
the samples at them, ``collate_fn`` makes one batch of them (``collate.py``).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from minipar.utils.data.collate import _is_array, default_collate, default_convert
from minipar.utils.data.dataset import IterableDataset, TensorDataset
from minipar.utils.data.sampler import BatchSampler, RandomSampler, SequentialSampler, _check_count

# PyTorch's positional order after ``dataset`` (DataLoader(dataset, 64, True) works as in torch).
_POSITIONAL = ("batch_size", "shuffle", "sampler", "batch_sampler", "num_workers", "collate_fn",
               "pin_memory", "drop_last", "timeout", "worker_init_fn", "multiprocessing_context", "generator")
_DEFAULTS: dict[str, Any] = dict(batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                                 worker_init_fn=None, multiprocessing_context=None, generator=None)


class DataLoader:
    """Iterate over ``dataset`` in batches, PyTorch's ``DataLoader``.

    Order: ``sampler`` if given, else a ``RandomSampler`` (``shuffle=True``: a new
    permutation per epoch from ``generator``, by default minipar's, so
    ``minipar.manual_seed`` makes it reproducible) or a ``SequentialSampler``; grouped
    into lists of ``batch_size`` by a ``BatchSampler`` (or ``batch_sampler`` itself).
    ``batch_size=None`` turns batching off: each sample is converted (``default_convert``)
    and yielded alone. An ``IterableDataset`` is read in its own order and cut into batches.
    ``len(loader)`` is the number of batches; ``.dataset``, ``.sampler`` and
    ``.batch_sampler`` are as in PyTorch.

    ``num_workers > 0`` uses **threads**, not processes: a pool of ``num_workers``
    threads fetches and collates up to ``prefetch_factor`` (default 2) batches per worker
    ahead, and batches come out in order. NumPy releases the GIL in copies, so this
    overlaps loading with training; Python-heavy ``__getitem__`` gains little. Each thread
    calls ``worker_init_fn(worker_id)`` first. An ``IterableDataset`` is always read in
    the calling thread. (Fetching ahead moves a ``DistributedSampler``'s resume position
    ahead too: snapshot mid-epoch with ``num_workers=0``, or at an epoch boundary.)
    ``pin_memory``, ``multiprocessing_context``, ``persistent_workers``, ``pin_memory_device``
    and ``in_order`` are accepted and have no effect (no pinned memory, no processes; order
    is always kept).

    The first round's form ``DataLoader(x, y, batch_size=32)`` (arrays or Tensors after
    one another) is kept: it means ``DataLoader(TensorDataset(x, y), batch_size=32)``.
    """

    def __init__(self, dataset: Any, *args: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Any = None, batch_sampler: Any = None, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable[[int], None] | None = None, multiprocessing_context: Any = None,
                 generator: Any = None, prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True) -> None:
        if args and _is_array_like(dataset) and all(_is_array_like(a) for a in args):
            dataset, args = TensorDataset(dataset, *args), ()  # DataLoader(x, y, ...)
        elif _is_array_like(dataset) and not args:
            dataset = TensorDataset(dataset)  # DataLoader(x, ...): batches are 1-element lists
        options = dict(batch_size=batch_size, shuffle=shuffle, sampler=sampler, batch_sampler=batch_sampler,
                       num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                       drop_last=drop_last, timeout=timeout, worker_init_fn=worker_init_fn,
                       multiprocessing_context=multiprocessing_context, generator=generator)
        if len(args) > len(_POSITIONAL):
            raise TypeError(f"DataLoader takes at most {len(_POSITIONAL) + 1} positional arguments")
        for name, value in zip(_POSITIONAL, args):
            if options[name] is not _DEFAULTS[name]:
                raise TypeError(f"DataLoader got multiple values for argument {name!r}")
            options[name] = value
        self.dataset = dataset
        self.num_workers = _check_count(options["num_workers"], "num_workers", 0)
        self.prefetch_factor = (2 if prefetch_factor is None
                                else _check_count(prefetch_factor, "prefetch_factor", 1))
        self.timeout = options["timeout"]
        self.worker_init_fn = options["worker_init_fn"]
        self.pin_memory, self.generator = bool(options["pin_memory"]), options["generator"]
        self.drop_last = bool(options["drop_last"])
        self._setup_order(options)

    def _setup_order(self, options: dict[str, Any]) -> None:
        """Samplers and collate function from the options, with PyTorch's exclusivity rules."""
        batch_size, shuffle, sampler = options["batch_size"], options["shuffle"], options["sampler"]
        batch_sampler, collate_fn = options["batch_sampler"], options["collate_fn"]
        if isinstance(self.dataset, IterableDataset):
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} "
                                     f"option, but got {name}={value!r}")
        elif not hasattr(self.dataset, "__getitem__"):
            raise TypeError(f"DataLoader takes a Dataset (with __getitem__) or an IterableDataset, "
                            f"got {type(self.dataset).__name__}")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or self.drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, "
                                 "sampler, and drop_last")
            batch_size = None
        elif batch_size is None and self.drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive "
                             "with drop_last")
        elif batch_size is not None:
            batch_size = _check_count(batch_size, "batch_size", 1)
        if isinstance(self.dataset, IterableDataset):
            self.sampler = None
        elif sampler is None:
            sampler = (RandomSampler(self.dataset, generator=self.generator) if shuffle
                       else SequentialSampler(self.dataset))
        else:
            covered = getattr(sampler, "dataset_len", None)
            if covered is not None and hasattr(self.dataset, "__len__") and covered != len(self.dataset):
                raise ValueError(f"sampler covers {covered} samples but the dataset has {len(self.dataset)}")
        self.sampler = sampler
        if batch_size is not None and sampler is not None:
            batch_sampler = BatchSampler(sampler, batch_size, self.drop_last)
        self.batch_size, self.batch_sampler = batch_size, batch_sampler
        self._auto_collation = batch_sampler is not None or (isinstance(self.dataset, IterableDataset)
                                                              and batch_size is not None)
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the sampler (a DistributedSampler reshuffles); minipar's convenience."""
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    # ----- fetching ----------------------------------------------------------------------------
    def _fetch(self, indices: Any) -> Any:
        """One batch (a list of indices) or one sample (an index, batching off)."""
        if not self._auto_collation:
            return self.collate_fn(self.dataset[indices])
        if self.collate_fn is default_collate and type(self.dataset) is TensorDataset:
            return self.dataset.batch(indices)  # = default_collate of the rows, one fancy index per tensor
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return self.collate_fn(samples)

    def _iterable_batches(self) -> Iterator[Any]:
        stream = iter(self.dataset)
        if self.batch_size is None:
            yield from (self.collate_fn(sample) for sample in stream)
            return
        while True:
            samples = list(itertools.islice(stream, self.batch_size))
            if not samples or (self.drop_last and len(samples) < self.batch_size):
                return
            yield self.collate_fn(samples)

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset):
            return self._iterable_batches()
        keys = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if self.num_workers == 0:
            return (self._fetch(key) for key in keys)
        return self._threaded(iter(keys))

    def _threaded(self, keys: Iterator[Any]) -> Iterator[Any]:
        """Fetch ahead on ``num_workers`` threads; results come back in the sampler's order."""
        worker_ids = itertools.count()

        def start_worker() -> None:
            if self.worker_init_fn is not None:
                self.worker_init_fn(next(worker_ids))

        in_flight: collections.deque[Any] = collections.deque()
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="minipar-loader",
                                initializer=start_worker) as pool:
            for key in itertools.islice(keys, self.num_workers * self.prefetch_factor):
                in_flight.append(pool.submit(self._fetch, key))
            while in_flight:
                batch = in_flight.popleft().result(timeout=self.timeout or None)
                for key in itertools.islice(keys, 1):
                    in_flight.append(pool.submit(self._fetch, key))
                yield batch

    def __len__(self) -> int:
        if isinstance(self.dataset, IterableDataset):
            if not hasattr(self.dataset, "__len__"):
                raise TypeError(f"{type(self.dataset).__name__} has no len(), so neither has its DataLoader")
            count = len(self.dataset)
            if self.batch_size is None:
                return count
            return count // self.batch_size if self.drop_last else -(-count // self.batch_size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)


def _is_array_like(value: Any) -> bool:
    """An array or a Tensor with a first dimension: the first round's ``DataLoader(x, y)`` form."""
    from minipar.tensor import Tensor

    return (isinstance(value, Tensor) or _is_array(value)) and len(value.shape) > 0
