"""Tensor parallelism: sharded layers compute the dense layer, slice for slice, with one all-reduce.

Oracles: the dense minipar block on one process (weights copied into the
shards), PyTorch float64 for the same block, and closed forms for f and g.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn
from minipar.comm import run_local
from minipar.optim import SGD
from minipar.parallel import tensor_parallel as tp
from minipar.parallel.tensor_parallel import (
    ColumnParallelLinear,
    CopyToTensorParallelRegion,
    ReduceFromTensorParallelRegion,
    RowParallelLinear,
)

TOL = 1e-10
D_IN, HIDDEN = 5, 7  # 7 hidden features: uneven array_split blocks for p = 2, 3, 4
TESTS = Path(__file__).resolve().parent


def dense_block(seed: int = 0) -> nn.Sequential:
    minipar.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN, dtype=np.float64), nn.ReLU(),
                         nn.Linear(HIDDEN, D_IN, dtype=np.float64))


def parallel_block(dense: nn.Sequential, comm) -> nn.Sequential:
    """Megatron's MLP: column-parallel (no gather), ReLU on the slice, row-parallel (input parallel)."""
    return nn.Sequential(ColumnParallelLinear.from_dense(dense[0], comm), nn.ReLU(),
                         RowParallelLinear.from_dense(dense[2], comm))


def inputs(seed: int = 0, batch: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, D_IN))


def run_block(comm, dense: nn.Sequential, x_array: np.ndarray) -> dict:
    block = parallel_block(dense, comm)
    x = minipar.tensor(x_array, requires_grad=True)
    y = block(x)
    (y * y).sum().backward()
    return {"y": y.array, "x_grad": x.grad, "grads": [p.grad for p in block.parameters()]}


# ----- f and g --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_f_is_identity_forward_and_sum_backward_and_g_is_its_conjugate() -> None:
    def body(comm):
        x = minipar.tensor(np.arange(4.0) + comm.rank, requires_grad=True)
        f_out = CopyToTensorParallelRegion.apply(x, comm)
        g_out = ReduceFromTensorParallelRegion.apply(x, comm)
        seed = np.array([1.0, -2.0, 3.0, 0.5]) * (comm.rank + 1)  # a different gradient per rank
        f_out.backward(seed)
        f_grad = x.grad.array.copy()
        x.grad = None
        g_out.backward(seed)
        return f_out.array, f_grad, g_out.array, x.grad

    p = 3
    ranks_sum = sum(range(p))
    for rank, (f_value, f_grad, g_value, g_grad) in enumerate(run_local(body, p)):
        base = np.array([1.0, -2.0, 3.0, 0.5])
        np.testing.assert_array_equal(f_value, np.arange(4.0) + rank)  # f forward: identity
        np.testing.assert_allclose(f_grad, base * sum(r + 1 for r in range(p)))  # f backward: sum
        np.testing.assert_allclose(g_value, p * np.arange(4.0) + ranks_sum)  # g forward: sum
        np.testing.assert_array_equal(g_grad, base * (rank + 1))  # g backward: identity


# ----- the MLP block equals the dense block ---------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("p", [2, 3, 4])
def test_column_row_mlp_output_and_every_gradient_slice_equal_the_dense_block(p: int) -> None:
    dense = dense_block()
    x = minipar.tensor(inputs(), requires_grad=True)
    y = dense(x)
    (y * y).sum().backward()
    rows = np.array_split(np.arange(HIDDEN), p)
    for rank, result in enumerate(run_local(lambda comm: run_block(comm, dense, inputs()), p)):
        w1, b1, w2, b2 = result["grads"]
        np.testing.assert_allclose(result["y"], y.array, rtol=0, atol=TOL)
        np.testing.assert_allclose(result["x_grad"], x.grad, rtol=0, atol=TOL)
        np.testing.assert_allclose(w1, dense[0].weight.grad[rows[rank]], rtol=0, atol=TOL)
        np.testing.assert_allclose(b1, dense[0].bias.grad[rows[rank]], rtol=0, atol=TOL)
        np.testing.assert_allclose(w2, dense[2].weight.grad[:, rows[rank]], rtol=0, atol=TOL)
        np.testing.assert_allclose(b2, dense[2].bias.grad, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_mlp_block_matches_pytorch_float64() -> None:
    import torch  # here, not at the top: the mpiexec launch below imports this file on every rank

    dense = dense_block()
    torch_block = torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(),
                                      torch.nn.Linear(HIDDEN, D_IN)).double()
    torch_block.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in dense.state_dict().items()})
    x = torch.tensor(inputs(), requires_grad=True)
    y = torch_block(x)
    (y * y).sum().backward()
    rows = np.array_split(np.arange(HIDDEN), 2)
    for rank, result in enumerate(run_local(lambda comm: run_block(comm, dense, inputs()), 2)):
        np.testing.assert_allclose(result["y"], y.detach().numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(result["x_grad"], x.grad.numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(result["grads"][0], torch_block[0].weight.grad.numpy()[rows[rank]],
                                   rtol=0, atol=TOL)
        np.testing.assert_allclose(result["grads"][2], torch_block[2].weight.grad.numpy()[:, rows[rank]],
                                   rtol=0, atol=TOL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("p", [2, 3, 4])
def test_mlp_block_does_exactly_one_allreduce_forward_and_one_backward(p: int, monkeypatch) -> None:
    calls: dict[tuple[int, str], int] = {}
    lock = threading.Lock()
    real = tp._allreduce_sum
    phase = threading.local()

    def counting(comm, array):
        with lock:
            key = (comm.rank, phase.name)
            calls[key] = calls.get(key, 0) + 1
        return real(comm, array)

    monkeypatch.setattr(tp, "_allreduce_sum", counting)
    dense = dense_block()

    def body(comm):
        block = parallel_block(dense, comm)
        x = minipar.tensor(inputs(batch=2 * p), requires_grad=True)
        comm.reset_counters()
        phase.name = "forward"
        y = block(x)
        forward_messages = comm.messages_sent
        phase.name = "backward"
        (y * y).sum().backward()
        return forward_messages, comm.messages_sent - forward_messages, comm.bytes_sent

    for rank, (forward_messages, backward_messages, nbytes) in enumerate(run_local(body, p)):
        assert calls[(rank, "forward")] == 1 and calls[(rank, "backward")] == 1
        # one ring all-reduce = p - 1 reduce-scatter + p - 1 all-gather messages
        assert forward_messages == backward_messages == 2 * (p - 1)
        # each all-reduces a (2p, D_IN) float64 array, N divisible by p: 2(p-1)/p * N * 8 bytes
        assert nbytes == 2 * (2 * (p - 1) * (2 * p * D_IN) // p * 8)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("p", [2, 3, 4])
def test_gather_output_and_unsplit_input_give_the_dense_layers_and_their_gradients(p: int) -> None:
    dense = dense_block()
    x = minipar.tensor(inputs(), requires_grad=True)
    hidden = dense[0](x)
    y = dense[2](hidden.relu())
    (y * y).sum().backward()

    def body(comm):
        column = ColumnParallelLinear.from_dense(dense[0], comm, gather_output=True)
        row = RowParallelLinear.from_dense(dense[2], comm, input_is_parallel=False)
        xx = minipar.tensor(inputs(), requires_grad=True)
        h = column(xx)  # full (batch, hidden) on every rank
        out = row(h.relu())  # row cuts its own input slice
        (out * out).sum().backward()
        return h.array, out.array, xx.grad, column.weight.grad, row.weight.grad

    rows = np.array_split(np.arange(HIDDEN), p)
    for rank, (h, out, x_grad, w1_grad, w2_grad) in enumerate(run_local(body, p)):
        np.testing.assert_allclose(h, hidden.array, rtol=0, atol=TOL)
        np.testing.assert_allclose(out, y.array, rtol=0, atol=TOL)
        np.testing.assert_allclose(x_grad, x.grad, rtol=0, atol=TOL)
        np.testing.assert_allclose(w1_grad, dense[0].weight.grad[rows[rank]], rtol=0, atol=TOL)
        np.testing.assert_allclose(w2_grad, dense[2].weight.grad[:, rows[rank]], rtol=0, atol=TOL)


def test_layers_built_after_a_seed_are_the_shards_of_linear_built_after_it() -> None:
    def body(comm):
        minipar.manual_seed(3)
        column = ColumnParallelLinear(D_IN, HIDDEN, comm, dtype=np.float64)
        minipar.manual_seed(3)
        row = RowParallelLinear(D_IN, HIDDEN, comm, dtype=np.float64)
        return column.weight.array, column.bias.array, row.weight.array, row.bias.array

    minipar.manual_seed(3)
    linear = nn.Linear(D_IN, HIDDEN, dtype=np.float64)
    rows = np.array_split(np.arange(HIDDEN), 3)
    cols = np.array_split(np.arange(D_IN), 3)
    for rank, (cw, cb, rw, rb) in enumerate(run_local(body, 3)):
        np.testing.assert_array_equal(cw, linear.weight.array[rows[rank]])
        np.testing.assert_array_equal(cb, linear.bias.array[rows[rank]])
        np.testing.assert_array_equal(rw, linear.weight.array[:, cols[rank]])
        np.testing.assert_array_equal(rb, linear.bias.array)  # row-parallel: the whole bias


@pytest.mark.timeout(60)
def test_tensor_parallel_mlp_trains_like_the_dense_mlp_for_8_sgd_steps() -> None:
    rng = np.random.default_rng(4)
    xs, ys = rng.normal(size=(8, 6, D_IN)), rng.normal(size=(8, 6, D_IN))

    def train(block):
        optimizer = SGD(block.parameters(), lr=0.05)
        losses = []
        for x, y in zip(xs, ys):
            loss = ((block(minipar.tensor(x)) - minipar.tensor(y)) ** 2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses, block

    reference_losses, reference = train(dense_block())
    results = run_local(lambda comm: train(parallel_block(dense_block(), comm)), 3)
    rows = np.array_split(np.arange(HIDDEN), 3)
    for rank, (losses, block) in enumerate(results):
        np.testing.assert_allclose(losses, reference_losses, rtol=0, atol=TOL)
        np.testing.assert_allclose(block[0].weight.array, reference[0].weight.array[rows[rank]], atol=TOL)
        np.testing.assert_allclose(block[2].weight.array, reference[2].weight.array[:, rows[rank]], atol=TOL)
        np.testing.assert_allclose(block[2].bias.array, reference[2].bias.array, rtol=0, atol=TOL)


def test_bad_shapes_raise_value_errors_naming_expected_and_got() -> None:
    def wrong_width(comm):
        ColumnParallelLinear(4, 6, comm)(minipar.tensor(np.zeros((2, 5))))

    with pytest.raises(ValueError, match=r"last dimension is 4, got shape \(2, 5\)"):
        run_local(wrong_width, 2)
    with pytest.raises(ValueError, match="3 features cannot be split over 4 ranks"):
        run_local(lambda comm: ColumnParallelLinear(8, 3, comm), 4)
    with pytest.raises(ValueError, match="RowParallelLinear expected input whose last dimension is 3"):
        run_local(lambda comm: RowParallelLinear(6, 2, comm)(minipar.tensor(np.zeros((2, 6)))), 2)


# ----- one real launch ------------------------------------------------------------------------------
@requires_mpi
@pytest.mark.timeout(90)
def test_mlp_block_under_mpiexec_equals_dense_block_on_3_ranks() -> None:
    result = run_mpi("""
        import numpy as np
        import minipar
        import test_tensor_parallel as t
        from minipar.comm import world
        comm = world()
        dense = t.dense_block()
        x = minipar.tensor(t.inputs(), requires_grad=True)
        y = dense(x)
        (y * y).sum().backward()
        r = t.run_block(comm, dense, t.inputs())
        rows = np.array_split(np.arange(t.HIDDEN), comm.size)[comm.rank]
        from minipar.comm import allreduce
        error = max(np.abs(r["y"] - y.array).max(), np.abs(r["x_grad"] - x.grad).max(),
                    np.abs(r["grads"][0] - dense[0].weight.grad[rows]).max(),
                    np.abs(r["grads"][2] - dense[2].weight.grad[:, rows]).max())
        worst = allreduce(comm, np.array([error]), op="max")[0]
        if comm.rank == 0:
            print("ranks", comm.size, "worst error", worst, flush=True)
    """, n=3, timeout=60, env={"PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}"})
    words = assert_ok(result).split()
    assert words[:2] == ["ranks", "3"] and float(words[-1]) < TOL, words


@pytest.mark.timeout(60)
def test_mlp_block_on_cupy_equals_the_numpy_block() -> None:
    cupy = pytest.importorskip("cupy")
    from minipar.backend import cupy_available, to_device

    if not cupy_available():
        pytest.skip("CuPy is installed but no GPU is visible")
    dense = dense_block()
    on_cpu = run_local(lambda comm: run_block(comm, dense, inputs()), 2)

    def on_device(comm):
        block = parallel_block(dense, comm).to("cuda")
        x = minipar.tensor(cupy.asarray(inputs()), requires_grad=True)
        y = block(x)
        (y * y).sum().backward()
        return to_device(y.array, "cpu"), [to_device(p.grad, "cpu") for p in block.parameters()]

    for (y, grads), expected in zip(run_local(on_device, 2), on_cpu):
        np.testing.assert_allclose(y, expected["y"], rtol=0, atol=1e-8)
        for got, want in zip(grads, expected["grads"]):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
