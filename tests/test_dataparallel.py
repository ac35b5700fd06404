"""nn.DataParallel equals the plain module: forward and every gradient, 1-4 replicas, uneven batches."""

from __future__ import annotations

import numpy as np
import pytest

import minipar
from minipar import nn
from minipar.nn import functional as F


def make_model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32, dtype=np.float64), nn.Tanh(), nn.Linear(32, 32, dtype=np.float64),
                         nn.ReLU(), nn.Linear(32, 4, dtype=np.float64))


def forward_backward(model: nn.Module, rows: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(rows)
    x = minipar.tensor(rng.standard_normal((rows, 6)), requires_grad=True)
    y = rng.integers(0, 4, rows)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out.array.copy(), [p.grad.array.copy() for p in model.parameters()], x.grad.array.copy()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [12, 10, 3])  # even, uneven last chunk, fewer rows than replicas
def test_dataparallel_equals_the_plain_module_forward_and_every_gradient(replicas: int, rows: int) -> None:
    plain = forward_backward(make_model(), rows)
    wrapped = nn.DataParallel(make_model(), device_ids=list(range(replicas)))
    parallel = forward_backward(wrapped, rows)
    np.testing.assert_allclose(parallel[0], plain[0], rtol=1e-12, atol=1e-12)
    for got, want in zip(parallel[1], plain[1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parallel[2], plain[2], rtol=1e-12, atol=1e-12)  # the input's gradient too
    assert [p.grad is not None for p in wrapped.module.parameters()] == [True] * 6  # into the original


@pytest.mark.timeout(60)
def test_training_with_dataparallel_follows_the_plain_trajectory() -> None:
    models = [make_model(), nn.DataParallel(make_model(), device_ids=[0, 1, 2])]
    optimizers = [minipar.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, y = rng.standard_normal((9, 6)), rng.integers(0, 4, 9)
        for model, opt in zip(models, optimizers):
            opt.zero_grad()
            F.cross_entropy(model(minipar.tensor(x)), y).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].module.parameters()):
        np.testing.assert_allclose(a.array, b.array, rtol=1e-12, atol=1e-12)


def test_replicas_inherit_grad_mode_and_draw_deterministically() -> None:
    dropout = nn.DataParallel(nn.Sequential(nn.Dropout(0.5)), device_ids=[0, 1])
    x = minipar.tensor(np.ones((8, 5)), requires_grad=True)
    with minipar.no_grad():
        assert not dropout(x).requires_grad
    minipar.manual_seed(3)
    first = dropout(x).array.copy()
    minipar.manual_seed(3)
    np.testing.assert_array_equal(dropout(x).array, first)


@pytest.mark.parametrize("device_ids, message", [
    ([], "device_ids is empty"),
    ([0, 0], "must be distinct"),
    ([-1], "non-negative integers, got -1"),
    ("0", "a list of device indices"),
    ([0.5], "non-negative integers, got 0.5"),
])
def test_bad_device_ids_are_clear_errors(device_ids, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        nn.DataParallel(make_model(), device_ids=device_ids)


def test_an_exception_in_a_replica_names_it() -> None:
    class Fails(nn.Module):
        def forward(self, x):
            if x.shape[0] < 3:
                raise RuntimeError("boom")
            return x

    with pytest.raises(RuntimeError, match="boom") as info:
        nn.DataParallel(Fails(), device_ids=[0, 1])(minipar.tensor(np.ones((5, 2))))
    assert "DataParallel replica 1" in "".join(getattr(info.value, "__notes__", []))
