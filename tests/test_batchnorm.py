"""BatchNorm1d/2d against PyTorch (float64: outputs, every gradient, running statistics over
several steps, eval mode, state dict), and SyncBatchNorm on p thread ranks against BatchNorm
on the concatenated batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from op_helper import FORWARD_ATOL, FORWARD_RTOL, GRAD_ATOL, GRAD_RTOL, assert_close

import minipar
from minipar import nn
from minipar.comm import run_local


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape) * 3 + 1


def run_steps(ours, theirs, shapes, steps=3):
    """Train-mode steps on fresh batches, comparing outputs, gradients and running stats each step."""
    ours.load_state_dict(theirs.state_dict())
    for step in range(steps):
        x = randn(*shapes, seed=step)
        x_ours, x_theirs = minipar.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        assert_close(y_ours, y_theirs, FORWARD_ATOL, FORWARD_RTOL, f"step {step} output")
        upstream = np.random.default_rng(100 + step).standard_normal(shapes)
        y_ours.backward(upstream)
        y_theirs.backward(torch.tensor(upstream))
        assert_close(x_ours.grad, x_theirs.grad, GRAD_ATOL, GRAD_RTOL, f"step {step} input gradient")
        theirs_params = dict(theirs.named_parameters())
        for name, param in ours.named_parameters():
            assert_close(param.grad, theirs_params[name].grad, GRAD_ATOL, GRAD_RTOL, f"step {step} {name}")
            param.grad = None
            theirs_params[name].grad = None
        theirs_state = theirs.state_dict()
        for name, value in ours.state_dict().items():
            assert_close(value, theirs_state[name], FORWARD_ATOL, FORWARD_RTOL, f"step {step} {name}")


@pytest.mark.parametrize("cls, kwargs, shape", [
    ("BatchNorm1d", {}, (8, 4)),
    ("BatchNorm1d", {"momentum": 0.3}, (5, 3, 6)),
    ("BatchNorm1d", {"momentum": None}, (6, 4)),
    ("BatchNorm2d", {}, (4, 3, 5, 5)),
    ("BatchNorm2d", {"affine": False, "eps": 1e-3}, (3, 2, 4, 6)),
    ("BatchNorm2d", {"track_running_stats": False}, (3, 2, 4, 4)),
])
def test_batchnorm_matches_torch_in_training_over_several_steps(cls, kwargs, shape):
    theirs = getattr(torch.nn, cls)(shape[1], **kwargs).double()
    if theirs.affine:
        with torch.no_grad():  # move weight and bias off (1, 0) so they matter
            theirs.weight.add_(torch.randn(shape[1], dtype=torch.float64))
            theirs.bias.add_(torch.randn(shape[1], dtype=torch.float64))
    ours = getattr(nn, cls)(shape[1], **kwargs).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    run_steps(ours, theirs, shape)
    ours.eval()
    theirs.eval()
    run_steps(ours, theirs, shape, steps=1)  # eval: running (or, untracked, batch) statistics


def test_batchnorm_state_dict_holds_num_batches_tracked_as_int64_as_torch():
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    assert list(ours.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked"] == list(theirs.state_dict())
    ours(minipar.tensor(randn(2, 3, 2, 2).astype(np.float32)))
    ours(minipar.tensor(randn(2, 3, 2, 2, seed=1).astype(np.float32)))
    tracked = ours.state_dict()["num_batches_tracked"]
    assert tracked.dtype == np.int64 and tracked.shape == () and int(tracked) == 2
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    assert theirs.num_batches_tracked.item() == 2
    ours.double()
    assert ours.state_dict()["num_batches_tracked"].dtype == np.int64  # casts touch floats only
    ours.eval()
    before = ours.state_dict()["running_mean"].copy()
    ours(minipar.tensor(randn(2, 3, 2, 2, seed=2)))
    np.testing.assert_array_equal(ours.state_dict()["running_mean"], before)
    assert int(ours.num_batches_tracked) == 2


def test_batchnorm_without_running_stats_has_none_buffers_and_an_affine_free_state():
    layer = nn.BatchNorm1d(4, affine=False, track_running_stats=False)
    assert layer.running_mean is None and list(layer.state_dict()) == []
    assert list(torch.nn.BatchNorm1d(4, affine=False, track_running_stats=False).state_dict()) == []


def test_batchnorm_rejects_one_value_per_channel_and_wrong_shapes_as_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(minipar.tensor(np.ones((1, 3))))
    with pytest.raises(ValueError, match=r"BatchNorm2d expected 4-d"):
        nn.BatchNorm2d(3)(minipar.tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"expected 3 channels"):
        nn.BatchNorm1d(3)(minipar.tensor(np.ones((2, 4))))


# ----- SyncBatchNorm ---------------------------------------------------------------------------------------


def shards(batch, world_size):
    return np.array_split(batch, world_size, axis=0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shape", [(7, 3, 4, 5), (8, 4)])
def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(world_size, shape):
    """Outputs, input gradients, running statistics equal; weight/bias gradients sum to the whole's."""
    channels, steps = shape[1], 2
    weight, bias = randn(channels, seed=50), randn(channels, seed=51)
    batches = [randn(*shape, seed=step) for step in range(steps)]
    upstreams = [np.random.default_rng(10 + step).standard_normal(shape) for step in range(steps)]
    whole = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(channels, momentum=0.2).double()
    whole.weight.array[...], whole.bias.array[...] = weight, bias
    expected = []
    for x, upstream in zip(batches, upstreams):
        x_t = minipar.tensor(x, requires_grad=True)
        y = whole(x_t)
        y.backward(upstream)
        expected.append((y.array, x_t.grad.array, whole.weight.grad.array.copy(),
                         whole.bias.grad.array.copy(), whole.running_mean.copy(), whole.running_var.copy()))
        whole.zero_grad()

    def rank_fn(comm):
        layer = nn.SyncBatchNorm(channels, momentum=0.2, process_group=comm).double()
        layer.weight.array[...], layer.bias.array[...] = weight, bias
        results = []
        for x, upstream in zip(batches, upstreams):
            x_t = minipar.tensor(shards(x, comm.size)[comm.rank], requires_grad=True)
            y = layer(x_t)
            y.backward(shards(upstream, comm.size)[comm.rank])
            grads = (x_t.grad.array, layer.weight.grad.array.copy(), layer.bias.grad.array.copy())
            results.append((y.array, *grads, layer.running_mean.copy(), layer.running_var.copy()))
            layer.zero_grad()
        return results

    per_rank = run_local(rank_fn, world_size)
    for step, (y, grad_x, grad_w, grad_b, running_mean, running_var) in enumerate(expected):
        got = [rank[step] for rank in per_rank]
        tol = {"rtol": 1e-12, "atol": 1e-12}
        np.testing.assert_allclose(np.concatenate([g[0] for g in got]), y, **tol, err_msg=f"{step} output")
        np.testing.assert_allclose(np.concatenate([g[1] for g in got]), grad_x, **tol, err_msg=f"{step} dx")
        np.testing.assert_allclose(sum(g[2] for g in got), grad_w, **tol, err_msg=f"{step} weight grad")
        np.testing.assert_allclose(sum(g[3] for g in got), grad_b, **tol, err_msg=f"{step} bias grad")
        for g in got:
            np.testing.assert_allclose(g[4], running_mean, **tol, err_msg=f"{step} running mean")
            np.testing.assert_allclose(g[5], running_var, **tol, err_msg=f"{step} running var")


@pytest.mark.timeout(60)
def test_convert_sync_batchnorm_swaps_layers_in_place_keeping_arrays_and_order():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(8))
    names_before = [name for name, _ in model.named_parameters()] + list(model.state_dict())
    weight = model[1].weight
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[4], nn.SyncBatchNorm)
    assert model[1].weight is weight
    assert [name for name, _ in model.named_parameters()] + list(model.state_dict()) == names_before
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
    assert type(theirs[0]).__name__ == type(nn.SyncBatchNorm.convert_sync_batchnorm(
        nn.Sequential(nn.BatchNorm1d(3)))[0]).__name__


def test_sync_batchnorm_on_one_rank_is_batchnorm():
    x = randn(6, 3)
    single = nn.SyncBatchNorm(3).double()(minipar.tensor(x))  # minipar.comm.world(): size 1 here
    np.testing.assert_allclose(single.array, nn.BatchNorm1d(3).double()(minipar.tensor(x)).array, rtol=1e-14)
