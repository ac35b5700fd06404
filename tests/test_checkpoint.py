"""Gradient checkpointing: same values and gradients as plain backprop, far fewer stored arrays."""

from __future__ import annotations

import numpy as np
import pytest

import minipar
from minipar import autograd, nn
from minipar.checkpoint import checkpoint, checkpoint_sequential, checkpoint_stage
from minipar.observe.memory import graph_bytes

pytestmark = pytest.mark.timeout(120)


def mlp(blocks: int, width: int = 8, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers).double()


def grads_of(model: nn.Module, run, x: minipar.Tensor) -> tuple[float, list[np.ndarray], np.ndarray | None]:
    """Loss value, every parameter gradient and x's gradient after one backward of ``run``."""
    model.zero_grad()
    x.grad = None
    loss = (run(x) ** 2).sum()
    loss.backward()
    return loss.item(), [p.grad.array.copy() for p in model.parameters()], x.grad


def assert_same(plain, checkpointed) -> None:
    assert checkpointed[0] == pytest.approx(plain[0], rel=1e-12)
    for a, b in zip(plain[1], checkpointed[1]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    if plain[2] is not None:
        np.testing.assert_allclose(checkpointed[2], plain[2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("segments", [1, 2, 3, 4, 12])
def test_checkpoint_sequential_mlp_gradients_equal_plain_float64(segments):
    minipar.manual_seed(0)
    model = mlp(6)  # 12 layers
    x = minipar.randn(5, 8, dtype=np.float64, requires_grad=True)
    plain = grads_of(model, model, x)
    ckpt = grads_of(model, lambda t: checkpoint_sequential(model, segments, t), x)
    assert_same(plain, ckpt)


def test_checkpoint_of_each_block_equals_plain_float64():
    minipar.manual_seed(1)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(4)]).double()
    x = minipar.randn(3, 8, dtype=np.float64, requires_grad=True)

    def every_block(t):
        for block in model:
            t = checkpoint(block, t)
        return t

    assert_same(grads_of(model, model, x), grads_of(model, every_block, x))


def test_checkpoint_sequential_conv_net_gradients_equal_plain_float64():
    minipar.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).double()
    x = minipar.randn(2, 2, 7, 7, dtype=np.float64, requires_grad=True)
    assert_same(grads_of(model, model, x), grads_of(model, lambda t: checkpoint_sequential(model, 3, t), x))


def test_dropout_inside_checkpoint_replays_the_same_masks():
    minipar.manual_seed(3)
    model = mlp(4, dropout=0.5)
    x = minipar.randn(6, 8, dtype=np.float64, requires_grad=True)
    minipar.manual_seed(10)
    plain = grads_of(model, model, x)
    after_plain = minipar.get_rng_state()
    minipar.manual_seed(10)
    ckpt = grads_of(model, lambda t: checkpoint_sequential(model, 4, t), x)
    assert_same(plain, ckpt)
    assert minipar.get_rng_state() == after_plain  # recomputation consumed no extra draws


def test_without_preserved_rng_state_dropout_masks_differ():
    minipar.manual_seed(3)
    model = mlp(2, dropout=0.5)
    x = minipar.randn(6, 8, dtype=np.float64, requires_grad=True)
    minipar.manual_seed(10)
    plain = grads_of(model, model, x)
    minipar.manual_seed(10)
    ckpt = grads_of(model, lambda t: checkpoint_sequential(model, 2, t, preserve_rng_state=False), x)
    assert not all(np.allclose(a, b) for a, b in zip(plain[1], ckpt[1]))


def test_backward_leaves_the_rng_state_as_it_found_it():
    minipar.manual_seed(4)
    block = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3)).double()
    x = minipar.randn(4, 8, dtype=np.float64, requires_grad=True)
    loss = checkpoint(block, x).sum()
    minipar.randn(5)  # the program goes on drawing between forward and backward
    before = minipar.get_rng_state()
    loss.backward()
    assert minipar.get_rng_state() == before


def test_several_inputs_non_tensor_args_and_inputs_without_grad():
    minipar.manual_seed(5)
    a = minipar.randn(3, 4, dtype=np.float64, requires_grad=True)
    b = minipar.randn(4, 2, dtype=np.float64, requires_grad=True)
    c = minipar.randn(3, 2, dtype=np.float64)  # needs no gradient
    targets = np.array([0, 1, 1])  # a plain array passed through

    def fn(a, b, scale, c, targets):
        logits = (a @ b).tanh() * scale + c
        return minipar.nn.functional.cross_entropy(logits, targets)

    fn(a, b, 2.5, c, targets).backward()
    expected = a.grad.array.copy(), b.grad.array.copy()
    a.grad = b.grad = None
    checkpoint(fn, a, b, 2.5, c, targets).backward()
    np.testing.assert_allclose(a.grad, expected[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.grad, expected[1], rtol=0, atol=1e-12)
    assert c.grad is None


def test_parameters_captured_by_a_closure_get_gradients_even_when_no_input_requires_grad():
    minipar.manual_seed(6)
    weight = minipar.randn(4, 4, dtype=np.float64, requires_grad=True)
    x = minipar.randn(3, 4, dtype=np.float64)  # data: no gradient wanted

    def block(t):
        return (t @ weight).tanh() @ weight

    (block(x) ** 2).sum().backward()
    expected = weight.grad.array.copy()
    weight.grad = None
    out = checkpoint(block, x)
    assert out.requires_grad
    (out ** 2).sum().backward()
    np.testing.assert_allclose(weight.grad, expected, rtol=0, atol=1e-12)
    assert x.grad is None


def test_captured_parameter_gradient_is_accumulated_exactly_once_per_backward():
    minipar.manual_seed(7)
    model = mlp(2)
    x = minipar.randn(3, 8, dtype=np.float64)
    calls = {id(p): 0 for p in model.parameters()}
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda t: calls.__setitem__(id(t), calls[id(t)] + 1))
    (model(x) ** 2).sum().backward()
    once = [p.grad.array.copy() for p in model.parameters()]
    model.zero_grad()
    for _ in range(2):  # two backwards accumulate: twice the gradient
        (checkpoint_sequential(model, 2, x) ** 2).sum().backward()
    for p, g in zip(model.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=0, atol=1e-12)
    assert set(calls.values()) == {3}  # one plain backward + two checkpointed, one call each


def test_end_of_backward_callbacks_queued_inside_a_recompute_wait_for_the_outer_backward():
    if not hasattr(autograd, "queue_callback"):
        pytest.skip("this engine has no end-of-backward callbacks")
    minipar.manual_seed(8)
    block = mlp(1)
    gate = minipar.tensor(np.full((1, 8), 2.0), requires_grad=True)  # used before the checkpoint
    seen = []
    block[0].weight.register_post_accumulate_grad_hook(
        lambda t: autograd.queue_callback(lambda: seen.append(gate.grad is not None)))
    x = minipar.randn(3, 8, dtype=np.float64)
    checkpoint(block, x * gate).sum().backward()
    assert seen == [True]  # ran after the whole backward, when gate's gradient existed


def test_nested_checkpoints_equal_plain():
    minipar.manual_seed(9)
    model = mlp(4)
    x = minipar.randn(3, 8, dtype=np.float64, requires_grad=True)

    def nested(t):
        return checkpoint(lambda u: checkpoint_sequential(model, 4, u), t)

    assert_same(grads_of(model, model, x), grads_of(model, nested, x))


def test_checkpoint_stage_is_the_pipeline_hook_keeping_only_the_input():
    minipar.manual_seed(10)
    stage = mlp(3)
    x = minipar.randn(4, 8, dtype=np.float64, requires_grad=True)  # received from the previous stage
    grad_from_next = minipar.randn(4, 8, dtype=np.float64).array
    stage(x).backward(grad_from_next)
    expected = [p.grad.array.copy() for p in stage.parameters()], x.grad.array.copy()
    stage.zero_grad()
    x.grad = None
    out = checkpoint_stage(stage, x)
    assert graph_bytes(out) == 0  # only x (a leaf) is kept
    out.backward(grad_from_next)
    for p, g in zip(stage.parameters(), expected[0]):
        np.testing.assert_allclose(p.grad, g, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x.grad, expected[1], rtol=0, atol=1e-12)


def test_graph_holds_boundaries_plus_one_segment_instead_of_every_activation():
    minipar.manual_seed(11)
    n, k, batch, width = 64, 8, 32, 16
    model = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(n)]).double()
    x = minipar.randn(batch, width, dtype=np.float64)
    per_block = graph_bytes(model[0](x).sum())  # what one block keeps for backward
    boundary = batch * width * 8  # one float64 activation
    plain = graph_bytes(model(x).sum())
    ckpt = graph_bytes(checkpoint_sequential(model, k, x).sum())
    assert per_block >= boundary
    assert plain == n * per_block
    assert ckpt == (k - 1) * boundary + (n // k) * per_block  # k-1 boundaries + the last segment
    assert plain / ckpt >= 4  # O(n) against O(k + n/k), k = sqrt(n)


def test_checkpoint_under_no_grad_is_a_plain_call():
    block = mlp(1)
    x = minipar.randn(2, 8, dtype=np.float64, requires_grad=True)
    with minipar.no_grad():
        out = checkpoint(block, x)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.array, block(x).array)


def test_bad_arguments_raise_clear_errors():
    model = mlp(2)
    x = minipar.randn(2, 8, dtype=np.float64, requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        checkpoint(lambda t: (t, t), x)
    with pytest.raises(TypeError, match="callable"):
        checkpoint(3, x)
    with pytest.raises(ValueError, match="between 1 and the number of layers"):
        checkpoint_sequential(model, 0, x)
    with pytest.raises(ValueError, match=r"\(4\), got 5"):
        checkpoint_sequential(model, 5, x)


@pytest.mark.skipif(not minipar.backend.cupy_available(), reason="needs CuPy and a GPU")
def test_checkpoint_sequential_on_gpu_equals_cpu():
    minipar.manual_seed(12)
    model = mlp(4, dropout=0.2)
    x = minipar.randn(5, 8, dtype=np.float64, requires_grad=True)
    minipar.manual_seed(13)
    cpu = grads_of(model, lambda t: checkpoint_sequential(model, 2, t), x)
    model.to("cuda")
    x_gpu = x.detach().to("cuda").requires_grad_()
    minipar.manual_seed(13)
    gpu = grads_of(model, lambda t: checkpoint_sequential(model, 2, t), x_gpu)
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-12)
    for a, b in zip(cpu[1], gpu[1]):
        np.testing.assert_allclose(minipar.backend.to_device(b, "cpu"), a, atol=1e-12)
