"""Mixed precision: GradScaler step for step against PyTorch's, fp16 compute with fp32 master weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import minipar
from minipar import amp, nn
from minipar.nn import functional as F
from minipar.optim import SGD

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(120)


def scripted_run(steps: int, overflow: dict[int, str], new_scale_at: dict[int, float] | None = None,
                 unscale_first_every: int = 7, **scaler_kwargs):
    """Train one 3-vector with both scalers; yield (step, ours, torch's) after every update.

    ``overflow[step]`` is "inf" or "nan": that step one gradient element is
    replaced by it after backward, as a too-large scale would make it.
    """
    grad_source = np.random.default_rng(0).standard_normal((steps, 3)).astype(np.float32)
    ours_param = minipar.tensor(np.array([0.5, -1.0, 2.0], dtype=np.float32), requires_grad=True)
    theirs_param = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float32, requires_grad=True)
    ours_opt, theirs_opt = SGD([ours_param], lr=0.01), torch.optim.SGD([theirs_param], lr=0.01)
    ours = amp.GradScaler(**scaler_kwargs)
    theirs = torch.amp.GradScaler("cpu", **scaler_kwargs)
    for step in range(steps):
        g = grad_source[step]
        ours_opt.zero_grad()
        theirs_opt.zero_grad()
        ours.scale((ours_param * minipar.tensor(g)).sum()).backward()
        theirs.scale((theirs_param * torch.from_numpy(g)).sum()).backward()
        if step in overflow:
            bad = np.inf if overflow[step] == "inf" else np.nan
            ours_param.grad[1] = bad
            with torch.no_grad():
                theirs_param.grad[1] = bad
        if step % unscale_first_every == 0:  # the "unscale_ then clip then step" path
            ours.unscale_(ours_opt)
            theirs.unscale_(theirs_opt)
        ours.step(ours_opt)
        theirs.step(theirs_opt)
        if new_scale_at and step in new_scale_at:
            ours.update(new_scale_at[step])
            theirs.update(new_scale_at[step])
        else:
            ours.update()
            theirs.update()
        yield step, (ours, ours_param), (theirs, theirs_param)


def assert_scalers_agree(run) -> list[float]:
    scales = []
    for step, (ours, ours_param), (theirs, theirs_param) in run:
        assert ours.get_scale() == theirs.get_scale(), f"scale differs after step {step}"
        assert ours.state_dict() == theirs.state_dict(), f"state differs after step {step}"
        np.testing.assert_allclose(ours_param.array, theirs_param.detach().numpy(), rtol=1e-6, atol=1e-7)
        scales.append(ours.get_scale())
    return scales


def test_default_scaler_scale_sequence_equals_torch_over_4500_steps_with_overflows():
    overflow = {0: "inf", 1: "inf", 5: "nan", 2500: "nan"}
    scales = assert_scalers_agree(scripted_run(4510, overflow))
    # the rules, spelled out: halve on each overflow, double after 2000 clean steps in a row
    assert scales[0] == 2.0**15 and scales[1] == 2.0**14 and scales[5] == 2.0**13
    assert scales[2004] == 2.0**13 and scales[2005] == 2.0**14
    assert scales[2500] == 2.0**13 and scales[4499] == 2.0**13 and scales[4500] == 2.0**14


def test_scale_sequence_equals_torch_with_odd_factors_and_random_overflows():
    pattern = np.random.default_rng(1).random(60)
    overflow = {i: ("inf" if r < 0.2 else "nan") for i, r in enumerate(pattern) if r < 0.3}
    scales = assert_scalers_agree(scripted_run(
        60, overflow, new_scale_at={40: 1000.0}, unscale_first_every=3,
        init_scale=8.0, growth_factor=1.5, backoff_factor=0.3, growth_interval=3))
    assert len(set(scales)) > 5  # the run really moved the scale both ways


def test_growth_that_would_overflow_float32_keeps_the_scale_as_torch_does():
    scales = assert_scalers_agree(scripted_run(4, {}, init_scale=2.0**127, growth_interval=1))
    assert scales == [2.0**127] * 4


def make_step_setup(scale: float = 4.0):
    param = minipar.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    optimizer = SGD([param], lr=0.5, momentum=0.9)
    scaler = amp.GradScaler(init_scale=scale)
    scaler.scale((param * minipar.tensor(np.array([3.0, -1.0], dtype=np.float32))).sum()).backward()
    return param, optimizer, scaler


def test_unscale_divides_gradients_by_the_scale_and_step_does_not_unscale_again():
    param, optimizer, scaler = make_step_setup(scale=4.0)
    np.testing.assert_array_equal(param.grad, [12.0, -4.0])
    scaler.unscale_(optimizer)
    np.testing.assert_array_equal(param.grad, [3.0, -1.0])
    scaler.step(optimizer)
    np.testing.assert_allclose(param.array, [1.0 - 0.5 * 3.0, 2.0 + 0.5 * 1.0])
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        scaler.step(optimizer)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(optimizer)
    scaler.update()
    assert scaler.get_scale() == 4.0


def test_unscale_twice_before_update_is_an_error():
    _, optimizer, scaler = make_step_setup()
    scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="already been called on this optimizer"):
        scaler.unscale_(optimizer)


def test_skipped_step_leaves_parameters_and_optimizer_state_untouched():
    param, optimizer, scaler = make_step_setup(scale=4.0)
    param.grad[0] = np.nan
    before = param.array.copy()
    assert scaler.step(optimizer) is None
    np.testing.assert_array_equal(param.array, before)
    assert optimizer.state == {}  # no momentum buffer was created
    scaler.update()
    assert scaler.get_scale() == 2.0


def test_update_before_any_step_and_methods_before_scale_are_errors():
    scaler = amp.GradScaler()
    assert scaler.get_scale() == 2.0**16  # init_scale until the first scale()
    with pytest.raises(RuntimeError, match="scale the loss first"):
        scaler.update()
    scaler.scale(minipar.tensor(1.0))
    with pytest.raises(RuntimeError, match="No inf checks"):
        scaler.update()


def test_unscaling_fp16_gradients_is_refused():
    param = minipar.tensor(np.ones(2, dtype=np.float16), requires_grad=True)
    optimizer = SGD([param], lr=0.1)
    scaler = amp.GradScaler(init_scale=2.0)
    scaler.scale(param.sum()).backward()
    with pytest.raises(ValueError, match="FP16 gradients"):
        scaler.step(optimizer)


def test_disabled_scaler_passes_everything_through():
    param = minipar.tensor(np.array([1.0], dtype=np.float32), requires_grad=True)
    optimizer = SGD([param], lr=1.0)
    scaler = amp.GradScaler(enabled=False)
    loss = (param * 3.0).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.step(optimizer)
    scaler.update()
    np.testing.assert_allclose(param.array, [-2.0])
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {}


def test_state_dict_round_trip_and_bad_arguments():
    ours = amp.GradScaler(init_scale=128.0, growth_interval=5)
    state = {"scale": 32.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7,
             "_growth_tracker": 4}
    ours.load_state_dict(state)
    assert ours.state_dict() == state
    with pytest.raises(RuntimeError, match="empty"):
        ours.load_state_dict({})
    with pytest.raises(ValueError, match="growth_factor"):
        amp.GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        amp.GradScaler(backoff_factor=1.0)
    with pytest.raises(TypeError, match="Tensor"):
        ours.scale(3.0)


# ----- autocast: fp16 compute, fp32 master weights -----------------------------------------------------
def small_model() -> nn.Sequential:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def test_autocast_forward_makes_fp16_activations_and_fp32_master_gradients():
    model = small_model()
    x = minipar.randn(8, 6)
    with amp.autocast():
        hidden = model[1](model[0](x))
        logits = model[2](hidden)
        product = x @ model[0].weight.T  # plain matmul is autocast too
    assert hidden.dtype == np.float16 and logits.dtype == np.float16 and product.dtype == np.float16
    assert all(p.dtype == np.float32 for p in model.parameters())
    F.cross_entropy(logits.float(), np.arange(8) % 3).backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    assert model(x).dtype == np.float32  # outside the block: fp32 again


def test_autocast_gradients_match_fp32_within_fp16_precision():
    model = small_model()
    x, y = minipar.randn(8, 6), np.arange(8) % 3
    F.cross_entropy(model(x), y).backward()
    expected = [p.grad.array.copy() for p in model.parameters()]
    model.zero_grad()
    with amp.autocast():
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    for got, want in zip((p.grad for p in model.parameters()), expected):
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3)


def test_autocast_nests_switches_off_and_is_per_thread():
    seen = {}
    with amp.autocast():
        assert amp.is_autocast_enabled()
        with amp.autocast(enabled=False):
            assert not amp.is_autocast_enabled()
        thread = threading.Thread(target=lambda: seen.setdefault("other", amp.is_autocast_enabled()))
        thread.start()
        thread.join()
        assert amp.is_autocast_enabled()
    assert not amp.is_autocast_enabled() and seen == {"other": False}
    with pytest.raises(TypeError, match="floating dtype"):
        with amp.autocast(dtype=np.int32):
            pass


def test_fp16_gradient_underflows_to_zero_without_scaling_and_survives_with_it():
    """A loss this small has gradients below half of fp16's smallest subnormal (6e-8 / 2)."""
    x = minipar.randn(4, 6)
    reference = small_model()
    (F.cross_entropy(reference(x), np.arange(4) % 3) * 1e-7).backward()
    expected = reference[0].weight.grad
    assert 1e-10 < np.abs(expected).max() < 1e-6

    def first_layer_grad(scaler: amp.GradScaler) -> np.ndarray:
        model = small_model()
        with amp.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), np.arange(4) % 3) * 1e-7
        scaler.scale(loss).backward()
        scaler.unscale_(SGD(model.parameters(), lr=0.0))
        return model[0].weight.grad

    unscaled = first_layer_grad(amp.GradScaler(enabled=False))
    assert np.count_nonzero(unscaled) == 0  # everything flushed to zero in fp16
    scaled = first_layer_grad(amp.GradScaler())  # S = 65536 lifts it into fp16's range
    assert np.count_nonzero(scaled) == scaled.numel()
    np.testing.assert_allclose(scaled, expected, rtol=5e-2, atol=np.abs(expected).max() * 2e-2)


@pytest.mark.skipif(not minipar.backend.cupy_available(), reason="needs CuPy and a GPU")
def test_autocast_and_scaler_on_gpu():
    model = small_model().to("cuda")
    x = minipar.randn(8, 6).to("cuda")
    scaler = amp.GradScaler(init_scale=8.0)
    with amp.autocast():
        logits = model(x)
    assert logits.dtype == np.float16
    loss = F.cross_entropy(logits.float(), np.arange(8) % 3)
    scaler.scale(loss).backward()
    grads = [minipar.backend.to_device(p.grad, "cpu").copy() for p in model.parameters()]
    optimizer = SGD(model.parameters(), lr=0.0)
    scaler.unscale_(optimizer)
    for p, g in zip(model.parameters(), grads):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(minipar.backend.to_device(p.grad, "cpu"), g / 8.0)
