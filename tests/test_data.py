"""minipar.utils.data: the digits split, DataLoader batching and shuffling, DistributedSampler.

(PyTorch's dataset, sampler and collate API is specified in ``test_data_api.py``.)

The sampler's oracle is ``torch.utils.data.DistributedSampler``: index lists are
compared exactly for shuffle=False; for shuffle=True (torch draws its permutation
from its own RNG) both are checked to have the same structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits
from torch.utils.data import DistributedSampler as TorchDistributedSampler

import minipar
from minipar.nn import functional as F
from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits


@dataclass
class RankInfo:
    """All a DistributedSampler reads from a communicator (given as ``comm=``)."""

    rank: int
    size: int


def minipar_lists(n: int, p: int, **kwargs: object) -> list[list[int]]:
    return [list(DistributedSampler(n, num_replicas=p, rank=r, **kwargs)) for r in range(p)]


def torch_lists(n: int, p: int, **kwargs: object) -> list[list[int]]:
    return [list(TorchDistributedSampler(range(n), num_replicas=p, rank=r, **kwargs)) for r in range(p)]


def interleave(rank_lists: list[list[int]]) -> list[int]:
    """Undo rank::p striding: position i of the global list is rank i % p's item i // p."""
    p = len(rank_lists)
    return [rank_lists[i % p][i // p] for i in range(sum(len(lst) for lst in rank_lists))]


def assert_sampler_structure(rank_lists: list[list[int]], n: int, drop_last: bool) -> None:
    """Equal shares; the global list is a permutation of 0..n-1 wrapped round (or cut)."""
    p = len(rank_lists)
    share = n // p if drop_last else math.ceil(n / p)
    assert [len(lst) for lst in rank_lists] == [share] * p
    order = interleave(rank_lists)
    if drop_last:
        assert len(set(order)) == len(order) == p * share  # distinct indices, tail dropped
        assert set(order) <= set(range(n))
    else:
        assert sorted(order[:n]) == list(range(n))  # first n: a permutation
        assert order[n:] == (order[:n] * p)[: p * share - n]  # then wrap around to its start


# ----- digits -----------------------------------------------------------------------------------
def test_load_digits_is_a_stratified_split_of_all_1797_digits_scaled_to_unit_range() -> None:
    digits = load_digits()
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and x_test.max() <= 1.0
    assert digits.train_images.shape == (1438, 1, 8, 8) and digits.test_images.shape == (359, 1, 8, 8)
    np.testing.assert_array_equal(digits.train_images[5, 0], x_train[5].reshape(8, 8))

    source = sklearn_digits()
    class_counts = np.bincount(source.target)
    np.testing.assert_array_equal(np.bincount(y_test), [round(0.2 * c) for c in class_counts])
    np.testing.assert_array_equal(np.bincount(y_train) + np.bincount(y_test), class_counts)
    # every source digit appears exactly once, in one of the two sets, with its own label
    rows = {(tuple(row), label) for row, label in zip(source.data / 16, source.target)}
    ours = [(tuple(row.astype(np.float64)), int(label)) for row, label in
            zip(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]))]
    assert len(ours) == 1797 and set(ours) == rows


def test_load_digits_split_depends_only_on_seed_and_dtype_is_honoured() -> None:
    first, again, other = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)
    wide = load_digits(dtype=np.float64, test_fraction=0.5)
    assert wide.x_train.dtype == np.float64 and abs(len(wide.y_test) - 1797 / 2) <= 5


@pytest.mark.parametrize("kwargs", [{"test_fraction": 0}, {"test_fraction": 1.5}, {"seed": -1},
                                    {"dtype": np.int32}])
def test_load_digits_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError), match="test_fraction|seed|dtype"):
        load_digits(**kwargs)


# ----- DataLoader ---------------------------------------------------------------------------------
def test_dataloader_yields_tensor_batches_in_order_covering_each_row_once() -> None:
    x = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    y = np.arange(23, dtype=np.int64)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    assert all(isinstance(t, minipar.Tensor) for batch in batches for t in batch)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[0].array for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1].array for b in batches]), y)
    batches[0][0].array[...] = -1  # a batch is a copy: writing into it leaves the dataset alone
    assert x.min() == 0


def test_dataloader_drop_last_drops_the_partial_batch() -> None:
    loader = DataLoader(TensorDataset(np.zeros((23, 2))), batch_size=5, drop_last=True)
    assert len(loader) == 4 and [b[0].shape for b in loader] == [(5, 2)] * 4


def test_dataloader_shuffle_is_a_permutation_per_epoch_reproducible_under_manual_seed() -> None:
    y = np.arange(50, dtype=np.int64)

    def two_epochs(seed: int) -> list[np.ndarray]:
        minipar.manual_seed(seed)
        loader = DataLoader(TensorDataset(y), batch_size=8, shuffle=True)
        return [np.concatenate([b[0].array for b in loader]) for _ in range(2)]

    first, again, other = two_epochs(7), two_epochs(7), two_epochs(8)
    for epoch in first:
        np.testing.assert_array_equal(np.sort(epoch), y)
    assert not np.array_equal(first[0], y)  # actually shuffled
    assert not np.array_equal(first[0], first[1])  # a new order each epoch
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_dataloader_targets_feed_cross_entropy() -> None:
    digits = load_digits()
    x, y = next(iter(DataLoader(TensorDataset(digits.x_train, digits.y_train), batch_size=16)))
    logits = minipar.tensor(np.zeros((16, 10), dtype=np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, y)
    assert loss.item() == pytest.approx(math.log(10), rel=1e-6)
    assert x.shape == (16, 64) and y.shape == (16,)


def test_dataloader_rejects_bad_input_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="at least one tensor"):
        TensorDataset()
    with pytest.raises(ValueError, match=r"same first dimension.*\[4, 5\]"):
        DataLoader(TensorDataset(np.zeros((4, 2)), np.zeros(5)), batch_size=2)
    with pytest.raises(ValueError, match=r"same first dimension.*\[4, 5\]"):  # the first round's form
        DataLoader(np.zeros((4, 2)), np.zeros(5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        DataLoader(TensorDataset(np.zeros(4)), batch_size=0)
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(TensorDataset(np.zeros(4)), batch_size=2, shuffle=True,
                   sampler=DistributedSampler(4, num_replicas=1, rank=0))
    with pytest.raises(ValueError, match="sampler covers 5 samples but the dataset has 4"):
        DataLoader(TensorDataset(np.zeros(4)), batch_size=2,
                   sampler=DistributedSampler(5, num_replicas=1, rank=0))
    with pytest.raises(TypeError, match="TensorDataset takes Tensors or arrays; argument 0 is list"):
        TensorDataset([1, 2, 3])


# ----- DistributedSampler ---------------------------------------------------------------------------
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_index_lists_equal_pytorch_without_shuffle(drop_last: bool) -> None:
    for n in [0, 1, 2, 3, 5, 7, 10, 16, 17, 31]:
        for p in [1, 2, 3, 4, 5, 8]:
            ours = minipar_lists(n, p, shuffle=False, drop_last=drop_last)
            assert ours == torch_lists(n, p, shuffle=False, drop_last=drop_last), (n, p)
            assert_sampler_structure(ours, n, drop_last)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_with_shuffle_has_pytorchs_structure(drop_last: bool) -> None:
    for n, p in [(10, 3), (17, 4), (3, 5), (32, 4), (1, 2)]:
        torch_ranks = torch_lists(n, p, shuffle=True, seed=3, drop_last=drop_last)
        ours = minipar_lists(n, p, shuffle=True, seed=3, drop_last=drop_last)
        assert_sampler_structure(torch_ranks, n, drop_last)  # the checker holds for the oracle
        assert_sampler_structure(ours, n, drop_last)
        assert [len(lst) for lst in ours] == [len(lst) for lst in torch_ranks]


def test_sampler_union_over_ranks_covers_every_index_with_equal_shares() -> None:
    for n, p in [(100, 3), (7, 7), (5, 8), (64, 4)]:
        ranks = minipar_lists(n, p, seed=11)
        assert len({len(lst) for lst in ranks}) == 1
        assert set().union(*map(set, ranks)) == set(range(n))


def test_set_epoch_reshuffles_identically_on_every_rank_and_ignores_the_global_rng() -> None:
    n, p = 37, 4
    samplers = [DistributedSampler(n, comm=RankInfo(r, p), seed=5) for r in range(p)]

    def epoch_order(epoch: int) -> list[int]:
        for sampler in samplers:
            sampler.set_epoch(epoch)
        minipar.manual_seed(epoch * 1000 + 1)  # the global generator must not matter
        return interleave([list(sampler) for sampler in samplers])

    epoch0, epoch1 = epoch_order(0), epoch_order(1)
    assert epoch0 != epoch1 and sorted(epoch0[:n]) == sorted(epoch1[:n]) == list(range(n))
    assert epoch_order(1) == epoch1  # same epoch, same order
    for sampler in samplers:  # each rank's own view of the global list is the same one
        np.testing.assert_array_equal(sampler.global_indices(), samplers[0].global_indices())
    seeded = [DistributedSampler(n, comm=RankInfo(r, p), seed=6) for r in range(p)]
    assert interleave([list(s) for s in seeded]) != epoch_order(0)  # another seed, another order


def test_sampler_drop_last_gives_floor_shares_of_distinct_indices() -> None:
    ranks = minipar_lists(10, 4, drop_last=True, seed=2)
    assert [len(lst) for lst in ranks] == [2, 2, 2, 2]
    flat = [i for lst in ranks for i in lst]
    assert len(set(flat)) == 8
    assert minipar_lists(3, 4, drop_last=True) == [[], [], [], []]


def test_dataloader_over_a_sampler_resumes_mid_epoch_from_its_state_dict() -> None:
    x = TensorDataset(np.arange(50, dtype=np.float32)[:, None])
    sampler = DistributedSampler(x, num_replicas=3, rank=1, seed=4)
    loader = DataLoader(x, batch_size=4, sampler=sampler)
    loader.set_epoch(2)
    uninterrupted = [b[0].array.ravel().tolist() for b in loader]
    assert len(loader) == len(uninterrupted) == 5 and sum(map(len, uninterrupted)) == 17

    loader.set_epoch(3)
    loader.set_epoch(2)
    batches = iter(loader)
    seen = [next(batches)[0].array.ravel().tolist() for _ in range(2)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 8

    resumed_sampler = DistributedSampler(x, num_replicas=3, rank=1, seed=4)
    resumed_sampler.load_state_dict(state)
    resumed = DataLoader(x, batch_size=4, sampler=resumed_sampler)
    resumed.set_epoch(2)  # the same epoch keeps the position
    assert len(resumed) == 3
    rest = [b[0].array.ravel().tolist() for b in resumed]
    assert seen + rest == uninterrupted
    assert resumed_sampler.state_dict()["consumed"] == 17 and len(resumed_sampler) == 17


def test_sampler_rejects_bad_arguments_and_states() -> None:
    with pytest.raises(TypeError, match="communicator with integer .rank and .size, got object"):
        DistributedSampler(10, comm=object())
    with pytest.raises(ValueError, match=r"Invalid rank 4, rank should be in the interval \[0, 3\]"):
        DistributedSampler(10, comm=RankInfo(4, 4))
    with pytest.raises(ValueError, match=r"Invalid rank -1"):
        DistributedSampler(10, num_replicas=2, rank=-1)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1, got 0"):
        DistributedSampler(10, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="dataset length must be an integer >= 0, got -1"):
        DistributedSampler(-1, num_replicas=1, rank=0)
    with pytest.raises(TypeError, match="a dataset with a length, or the length itself; got object"):
        DistributedSampler(object(), num_replicas=1, rank=0)
    sampler = DistributedSampler(10, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        sampler.set_epoch(-1)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="dataset of 10 items, this sampler has 11"):
        DistributedSampler(11, num_replicas=2, rank=0).load_state_dict(state)
    with pytest.raises(ValueError, match="mid-epoch on 3 ranks from a state saved on 2"):
        DistributedSampler(10, num_replicas=3, rank=0).load_state_dict({**state, "consumed": 2})
    with pytest.raises(KeyError, match="missing"):
        sampler.load_state_dict({"epoch": 1})


@pytest.mark.timeout(60)
def test_sampler_with_a_real_communicator_shares_a_dataloader_epoch_across_3_ranks() -> None:
    from minipar.comm import run_local

    y = TensorDataset(np.arange(20, dtype=np.int64))

    def rank_epoch(comm: object) -> list[int]:
        sampler = DistributedSampler(y, comm=comm, seed=9)
        loader = DataLoader(y, batch_size=3, sampler=sampler)
        sampler.set_epoch(1)
        return [int(i) for batch in loader for i in batch[0].array]

    per_rank = run_local(rank_epoch, 3)
    assert [len(ids) for ids in per_rank] == [7, 7, 7]
    assert set().union(*map(set, per_rank)) == set(range(20))
    expected = []
    for rank in range(3):  # the same sampler computed here with a stand-in communicator
        sampler = DistributedSampler(20, num_replicas=3, rank=rank, seed=9)
        sampler.set_epoch(1)
        expected.append(list(sampler))
    assert per_rank == expected


def test_dataloader_batches_of_cupy_arrays_stay_on_the_gpu() -> None:
    pytest.importorskip("cupy")
    from minipar.backend import cupy_available, to_device

    if not cupy_available():
        pytest.skip("CuPy is installed but no GPU is visible")
    x = to_device(np.arange(12, dtype=np.float32).reshape(6, 2), "cuda")
    y = to_device(np.arange(6, dtype=np.int64), "cuda")
    minipar.manual_seed(0)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True))
    assert [b[0].device for b in batches] == ["cuda:0", "cuda:0"]
    order = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(order), np.arange(6))


def test_the_first_rounds_call_forms_still_work() -> None:
    """``DataLoader(x, y, ...)`` means a TensorDataset; ``DistributedSampler(n, comm)`` a comm=."""
    x, y = np.arange(10.0)[:, None], np.arange(10)
    old = [[b.array.tolist() for b in batch] for batch in DataLoader(x, y, batch_size=4)]
    new = [[b.array.tolist() for b in batch] for batch in DataLoader(TensorDataset(x, y), batch_size=4)]
    assert old == new and len(old) == 3
    assert list(DistributedSampler(10, RankInfo(1, 3), seed=2)) == list(
        DistributedSampler(10, comm=RankInfo(1, 3), seed=2)) == list(
        DistributedSampler(10, num_replicas=3, rank=1, seed=2))
