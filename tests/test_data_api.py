"""PyTorch's data API on minipar: datasets, samplers, collation and the DataLoader equal torch's.

The oracle is ``torch.utils.data`` with the same arguments; where a random order is
involved (torch draws from its own RNG) the structure is compared instead.
"""

from __future__ import annotations

import collections
import importlib
import threading

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import minipar
from minipar.utils import data
from minipar.utils.data import distributed_sampler


def plain(value):
    """A batch of either library as nested lists/dicts of (dtype name, values) for comparison."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype).removeprefix("torch."), value.tolist())
    if isinstance(value, minipar.Tensor):
        return ("tensor", str(value.array.dtype), value.array.tolist())
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, [plain(item) for item in value])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [plain(item) for item in value])
    return value


def both_loaders(make_dataset, **kwargs):
    return [plain(b) for b in data.DataLoader(make_dataset(minipar), **kwargs)], \
           [plain(b) for b in tud.DataLoader(make_dataset(torch), **kwargs)]


def tensors(lib, n=11):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64) % 4
    return lib.utils.data.TensorDataset(lib.from_numpy(x) if lib is torch else minipar.tensor(x),
                                        lib.from_numpy(y) if lib is torch else minipar.tensor(y))


@pytest.mark.parametrize("batch_size, drop_last",
                         [(1, False), (4, False), (4, True), (11, False), (20, True)])
def test_tensor_dataset_batches_equal_torchs_in_order(batch_size, drop_last):
    ours, theirs = both_loaders(tensors, batch_size=batch_size, drop_last=drop_last)
    assert ours == theirs
    assert len(data.DataLoader(tensors(minipar), batch_size=batch_size, drop_last=drop_last)) == \
        len(tud.DataLoader(tensors(torch), batch_size=batch_size, drop_last=drop_last))


Point = collections.namedtuple("Point", "x label")


class Records:
    """A map-style dataset (the same class for both libraries) with nested samples."""

    def __init__(self, lib):
        self.lib = lib

    def __len__(self):
        return 7

    def __getitem__(self, i):
        base = np.full(2, i, dtype=np.float64)
        return {"image": self.lib.from_numpy(base) if self.lib is torch else minipar.tensor(base),
                "pixels": np.arange(3, dtype=np.int32) + i, "scale": i / 2, "label": i, "flag": i % 2 == 0,
                "name": f"item{i}", "pair": (i, float(i)), "point": Point(np.float32(i), [i, i + 1])}


def as_dataset(lib):
    base = tud.Dataset if lib is torch else data.Dataset
    return type("RecordsDataset", (Records, base), {})(lib)


def test_default_collate_of_nested_samples_equals_torchs():
    ours, theirs = both_loaders(as_dataset, batch_size=3)
    assert ours == theirs and len(ours) == 3
    samples = [Records(minipar)[i] for i in range(2)]
    reference = tud.default_collate([Records(torch)[i] for i in range(2)])
    assert plain(data.default_collate(samples)) == plain(reference)


def test_batch_size_none_yields_converted_single_samples_like_torch():
    ours, theirs = both_loaders(as_dataset, batch_size=None)
    assert ours == theirs and len(ours) == 7


def test_default_collate_rejects_ragged_lists_and_unknown_types():
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        data.default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found object"):
        data.default_collate([object(), object()])


@pytest.mark.parametrize("n, batch_size, drop_last",
                         [(10, 3, False), (10, 3, True), (9, 3, True), (0, 2, False)])
def test_batch_sampler_lists_and_length_equal_torchs(n, batch_size, drop_last):
    ours = data.BatchSampler(data.SequentialSampler(range(n)), batch_size, drop_last)
    theirs = tud.BatchSampler(tud.SequentialSampler(range(n)), batch_size, drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_random_sampler_draws_permutations_or_with_replacement_from_the_given_generator():
    perm = list(data.RandomSampler(range(10), generator=np.random.default_rng(3)))
    assert sorted(perm) == list(range(10))
    assert perm == list(data.RandomSampler(range(10), generator=np.random.default_rng(3)))
    long = list(data.RandomSampler(range(4), num_samples=10, generator=np.random.default_rng(0)))
    assert len(long) == 10 and sorted(long[:4]) == sorted(long[4:8]) == [0, 1, 2, 3]
    assert len(set(long[8:])) == 2  # two permutations, then the first 2 of a third
    drawn = data.RandomSampler(range(5), replacement=True, num_samples=50, generator=np.random.default_rng(1))
    assert len(drawn) == len(list(drawn)) == 50 and set(drawn) <= set(range(5))
    holder = type("Holder", (), {"generator": np.random.default_rng(3)})()  # a torch-style Generator's hook
    assert list(data.RandomSampler(range(10), generator=holder)) == perm
    with pytest.raises(TypeError, match="numpy.random.Generator .* got int"):
        data.RandomSampler(range(3), generator=5)


def test_shuffled_loader_is_a_new_permutation_each_epoch_reproducible_by_seed_or_generator():
    dataset = data.TensorDataset(np.arange(30))

    def epochs(**kwargs):
        loader = data.DataLoader(dataset, batch_size=7, shuffle=True, **kwargs)
        return [np.concatenate([b[0].array for b in loader]).tolist() for _ in range(2)]

    minipar.manual_seed(5)
    first = epochs()
    minipar.manual_seed(5)
    assert epochs() == first and first[0] != first[1] and sorted(first[0]) == list(range(30))
    assert epochs(generator=np.random.default_rng(9)) == epochs(generator=np.random.default_rng(9))
    assert isinstance(data.DataLoader(dataset, shuffle=True).sampler, data.RandomSampler)


@pytest.mark.parametrize("n, lengths", [(10, [0.3, 0.7]), (11, [0.5, 0.5]), (10, [0.1, 0.2, 0.3, 0.4]),
                                        (7, [0.25, 0.25, 0.25, 0.25]), (9, [4, 5]), (5, [5, 0])])
def test_random_split_sizes_equal_torchs_and_partition_the_dataset(n, lengths):
    ours = data.random_split(range(n), lengths, generator=np.random.default_rng(0))
    theirs = tud.random_split(range(n), lengths, generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert sorted(i for s in ours for i in s) == list(range(n))
    assert all(isinstance(s, data.Subset) for s in ours)
    again = data.random_split(range(n), lengths, generator=np.random.default_rng(0))
    assert [s.indices for s in again] == [s.indices for s in ours]


def test_random_split_rejects_lengths_that_do_not_add_up():
    with pytest.raises(ValueError, match="the lengths sum to 9, the dataset has 10 samples"):
        data.random_split(range(10), [4, 5])
    with pytest.raises(ValueError, match="non-negative integers summing to 10 or fractions summing to 1"):
        data.random_split(range(10), [0.5, 0.6])


def test_subset_and_concat_index_like_torch():
    base = [10 * i for i in range(8)]
    assert [data.Subset(base, [5, 1, 7])[i] for i in range(3)] == [50, 10, 70]
    assert tud.Subset(base, [5, 1, 7])[0] == 50
    ours = data.ConcatDataset([base[:3], base[3:]])
    theirs = tud.ConcatDataset([base[:3], base[3:]])
    assert len(ours) == len(theirs) == 8
    assert [ours[i] for i in range(-8, 8)] == [theirs[i] for i in range(-8, 8)]
    assert len(data.TensorDataset(np.zeros(3)) + data.TensorDataset(np.ones(2))) == 5
    with pytest.raises(IndexError, match="index 8 is out of range"):
        ours[8]


class Countdown:
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n, 0, -1))

    def __len__(self):
        return self.n


@pytest.mark.parametrize("batch_size, drop_last", [(3, False), (3, True), (None, False)])
def test_iterable_dataset_batches_equal_torchs(batch_size, drop_last):
    def make(lib):
        base = data.IterableDataset if lib is minipar else tud.IterableDataset
        return type("Stream", (Countdown, base), {})(10)

    ours, theirs = both_loaders(make, batch_size=batch_size, drop_last=drop_last)
    assert ours == theirs
    assert len(data.DataLoader(make(minipar), batch_size=batch_size, drop_last=drop_last)) == \
        len(tud.DataLoader(make(torch), batch_size=batch_size, drop_last=drop_last))
    with pytest.raises(ValueError, match="IterableDataset: expected unspecified shuffle option"):
        data.DataLoader(make(minipar), shuffle=True)


def test_threaded_workers_give_the_same_batches_in_order_and_run_worker_init_fn():
    dataset = tensors(minipar, n=40)
    seen, lock = [], threading.Lock()

    def init(worker_id):
        with lock:
            seen.append((worker_id, threading.current_thread().name))

    serial = [plain(b) for b in data.DataLoader(dataset, batch_size=3)]
    loader = data.DataLoader(dataset, batch_size=3, num_workers=2, worker_init_fn=init, prefetch_factor=3,
                             pin_memory=True, persistent_workers=True)
    threaded = [plain(b) for b in loader]
    assert threaded == serial
    assert sorted(w for w, _ in seen) == [0, 1] and all(name.startswith("minipar-loader") for _, name in seen)


def test_a_batch_sampler_and_a_custom_collate_fn_are_used_as_given():
    dataset = tensors(minipar)
    batch_sampler = data.BatchSampler(data.SequentialSampler(dataset), 5, drop_last=True)
    loader = data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=lambda samples: len(samples))
    assert list(loader) == [5, 5] and loader.batch_sampler is batch_sampler and len(loader) == 2
    generic = data.DataLoader(dataset, batch_size=4, collate_fn=data.default_collate)  # no fast path
    assert [plain(b) for b in generic] == [plain(b) for b in data.DataLoader(dataset, batch_size=4)]


def test_loader_attributes_and_torchs_positional_order():
    dataset = tensors(minipar)
    sampler = data.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    loader = data.DataLoader(dataset, 2, sampler=sampler)
    assert loader.dataset is dataset and loader.sampler is sampler and loader.batch_size == 2
    assert len(loader) == 3 and isinstance(loader.batch_sampler, data.BatchSampler)
    assert isinstance(data.DataLoader(dataset, 4, True).sampler, data.RandomSampler)
    with pytest.raises(TypeError, match="multiple values for argument 'batch_size'"):
        data.DataLoader(dataset, 4, batch_size=8)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        data.DataLoader(dataset, batch_size=4, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="batch_size=None option disables auto-batching"):
        data.DataLoader(dataset, batch_size=None, drop_last=True)
    assert importlib.import_module("minipar.data") is data  # the short alias


@pytest.mark.parametrize("n, p, drop_last", [(10, 3, False), (10, 3, True), (2, 4, False), (16, 4, True)])
def test_len_of_a_distributed_sampler_over_a_dataset_equals_torchs(n, p, drop_last):
    for rank in range(p):
        ours = data.DistributedSampler(data.TensorDataset(np.zeros(n)), num_replicas=p, rank=rank,
                                       drop_last=drop_last, shuffle=False)
        theirs = tud.DistributedSampler(range(n), num_replicas=p, rank=rank, drop_last=drop_last,
                                        shuffle=False)
        assert len(ours) == len(theirs) and list(ours) == list(theirs)


def test_distributed_sampler_takes_rank_and_size_from_the_process_group(monkeypatch):
    alone = data.DistributedSampler(range(5))  # no mpiexec: the world is one process
    assert (alone.num_replicas, alone.rank, len(alone)) == (1, 0, 5)
    group = collections.namedtuple("Group", "rank size")(2, 3)
    monkeypatch.setattr(distributed_sampler, "default_process_group", lambda: group)
    joined = data.DistributedSampler(range(10), shuffle=False)
    assert (joined.num_replicas, joined.rank) == (3, 2) and list(joined) == [2, 5, 8, 1]
    assert data.DistributedSampler(range(10), rank=0).num_replicas == 3  # only the missing one is looked up
