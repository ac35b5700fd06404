"""PipelineParallel: every schedule trains exactly like one process, and counts what theory says.

Oracle: the same float64 model trained on one process with the full batch. Ranks
run as threads (``run_local``) except one real ``mpiexec`` launch at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.observe import trace
from minipar.optim import SGD
from minipar.parallel.pipeline import PipelineParallel, balance_by_parameters
from minipar.parallel.pipeline.schedules import (
    SCHEDULES,
    bubble_formula,
    gpipe_schedule,
    naive_schedule,
    one_f_one_b_schedule,
    peak_in_flight,
    peak_stash_formula,
    simulate,
)

TOL = 1e-10
TESTS = Path(__file__).resolve().parent
STEPS, BATCH, MICROBATCHES = 8, 12, 4


def build_model(seed: int = 0) -> nn.Sequential:
    """7 layers (4 Linear + 3 ReLU), float64: splits into 2, 3 or 4 stages."""
    minipar.manual_seed(seed)
    d = np.float64
    return nn.Sequential(nn.Linear(6, 10, dtype=d), nn.ReLU(), nn.Linear(10, 10, dtype=d), nn.ReLU(),
                         nn.Linear(10, 8, dtype=d), nn.ReLU(), nn.Linear(8, 3, dtype=d))


def batches(steps: int = STEPS, batch: int = BATCH, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, batch, 6)), rng.normal(size=(steps, batch, 3))


def train_one_process(xs: np.ndarray, ys: np.ndarray, lr: float = 0.1) -> tuple[list[float], nn.Sequential]:
    model = build_model()
    optimizer = SGD(model.parameters(), lr=lr)
    losses = []
    for x, y in zip(xs, ys):
        loss = F.mse_loss(model(minipar.tensor(x)), minipar.tensor(y))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, model


def train_pipeline(comm, schedule: str, xs: np.ndarray, ys: np.ndarray, microbatches: int = MICROBATCHES,
                   checkpoint: bool = False) -> dict:
    pipe = PipelineParallel(build_model(), comm, microbatches, schedule=schedule, checkpoint=checkpoint)
    optimizer = SGD(pipe.stage_module.parameters(), lr=0.1)
    losses = []
    for x, y in zip(xs, ys):
        # only the first stage needs x and only the last needs y
        losses.append(pipe.train_step(x if pipe.is_first_stage else None,
                                      minipar.tensor(y) if pipe.is_last_stage else None, F.mse_loss))
        optimizer.step()
        optimizer.zero_grad()
    return {"losses": losses, "layers": list(pipe.layer_range), "peak": pipe.stats.peak_stashed,
            "params": [p.array.copy() for p in pipe.stage_module.parameters()]}


def full_model_params(model: nn.Sequential, layers: list[int]) -> list[np.ndarray]:
    return [p.array for index in layers for p in model[index].parameters()]


# ----- schedules as plain lists -----------------------------------------------------------------
def test_schedules_run_each_microbatch_forward_then_backward_exactly_once() -> None:
    for stages in (1, 2, 3, 4):
        for m in (1, 2, 5, 8):
            for stage in range(stages):
                for name, schedule in SCHEDULES.items():
                    count = 1 if name == "naive" else m
                    order = schedule(stage, stages, count)
                    assert sorted(order) == sorted([("forward", i) for i in range(count)]
                                                   + [("backward", i) for i in range(count)])
                    assert all(order.index(("forward", i)) < order.index(("backward", i))
                               for i in range(count))
                    assert peak_in_flight(order) == peak_stash_formula(name, stage, stages, count)


def test_one_f_one_b_warms_up_with_p_minus_s_minus_1_forwards_then_alternates() -> None:
    assert one_f_one_b_schedule(0, 2, 3) == [("forward", 0), ("forward", 1), ("backward", 0),
                                             ("forward", 2), ("backward", 1), ("backward", 2)]
    assert one_f_one_b_schedule(3, 4, 3) == [("forward", 0), ("backward", 0), ("forward", 1),
                                             ("backward", 1), ("forward", 2), ("backward", 2)]
    assert gpipe_schedule(1, 4, 2) == [("forward", 0), ("forward", 1), ("backward", 0), ("backward", 1)]
    assert naive_schedule(2, 4) == [("forward", 0), ("backward", 0)]
    assert bubble_formula(2, 4) == pytest.approx(1 / 5)
    assert bubble_formula(4, 1) == pytest.approx(3 / 4)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_replayed_schedules_have_bubble_p_minus_1_over_m_plus_p_minus_1_on_every_stage(schedule: str) -> None:
    for stages in (2, 3, 4):
        for m in (1, 2, 4, 8, 16):
            spans = simulate(schedule, stages, m, forward_time=1.0, backward_time=2.0)
            total = max(end for stage in spans for *_, end in stage)
            assert total == pytest.approx((m + stages - 1) * 3.0)
            for stage in spans:
                busy = sum(end - start for *_, start, end in stage)
                assert 1 - busy / total == pytest.approx(bubble_formula(stages, m))


def test_replaying_naive_runs_one_stage_at_a_time() -> None:
    spans = simulate("naive", 4, 1, forward_time=1.0, backward_time=2.0)
    assert [stage[0][2] for stage in spans] == [0.0, 1.0, 2.0, 3.0]  # forwards one after another
    assert [stage[1][2] for stage in spans] == [10.0, 8.0, 6.0, 4.0]  # backwards in reverse


# ----- equivalence with one process ---------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("schedule", ["naive", "gpipe", "1f1b"])
def test_every_schedule_matches_single_process_after_8_sgd_steps(schedule: str, stages: int) -> None:
    xs, ys = batches()
    reference_losses, reference = train_one_process(xs, ys)
    results = run_local(lambda comm: train_pipeline(comm, schedule, xs, ys), stages)
    assert sorted(index for r in results for index in r["layers"]) == list(range(len(reference)))
    for result in results:
        np.testing.assert_allclose(result["losses"], reference_losses, rtol=0, atol=TOL)
        expected = full_model_params(reference, result["layers"])
        assert len(result["params"]) == len(expected)
        for got, want in zip(result["params"], expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_gradients_after_one_step_equal_full_batch_gradients_including_the_inputs() -> None:
    xs, ys = batches(steps=1, batch=16)
    reference = build_model()
    x = minipar.tensor(xs[0], requires_grad=True)
    full_loss = F.mse_loss(reference(x), minipar.tensor(ys[0]))
    full_loss.backward()

    def step(comm):
        pipe = PipelineParallel(build_model(), comm, microbatches=8, schedule="1f1b")
        x_stage = minipar.tensor(xs[0], requires_grad=True)
        loss = pipe.train_step(x_stage, ys[0], F.mse_loss)  # every rank passes both: allowed
        return loss, list(pipe.layer_range), [p.grad for p in pipe.stage_module.parameters()], x_stage.grad

    for rank, (loss, layers, grads, x_grad) in enumerate(run_local(step, 3)):
        assert abs(loss - full_loss.item()) < TOL
        if rank == 0:  # the first stage hands back d loss / d x, as one process does
            np.testing.assert_allclose(x_grad, x.grad, rtol=0, atol=TOL)
        want = [p.grad for index in layers for p in reference[index].parameters()]
        for got, expected in zip(grads, want):
            np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_cross_entropy_with_integer_targets_and_3d_activations_match_one_process() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 6))
    targets = rng.integers(0, 3, size=8)
    reference = build_model()
    loss = F.cross_entropy(reference(minipar.tensor(x)), targets)
    loss.backward()
    results = run_local(lambda comm: _one_step_cross_entropy(comm, x, targets), 4)
    for value, layers, grads in results:
        assert abs(value - loss.item()) < TOL
        for got, want in zip(grads, [p.grad for i in layers for p in reference[i].parameters()]):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    # activations of any rank travel: a (batch, seq, features) input through 2 stages
    x3 = rng.normal(size=(4, 5, 6))
    outputs = run_local(lambda comm: PipelineParallel(build_model(), comm, 2).predict(x3).array, 2)
    with minipar.no_grad():
        expected = build_model()(minipar.tensor(x3)).array
    for output in outputs:
        assert output.shape == (4, 5, 3)
        np.testing.assert_allclose(output, expected, rtol=0, atol=TOL)


def _one_step_cross_entropy(comm, x: np.ndarray, targets: np.ndarray) -> tuple:
    pipe = PipelineParallel(build_model(), comm, microbatches=4, schedule="gpipe")
    value = pipe.train_step(x, targets, F.cross_entropy)
    return value, list(pipe.layer_range), [p.grad for p in pipe.stage_module.parameters()]


@pytest.mark.timeout(60)
def test_checkpointed_stages_give_the_same_losses_and_parameters() -> None:
    xs, ys = batches(steps=3)
    plain = run_local(lambda comm: train_pipeline(comm, "1f1b", xs, ys), 3)
    checkpointed = run_local(lambda comm: train_pipeline(comm, "1f1b", xs, ys, checkpoint=True), 3)
    for a, b in zip(plain, checkpointed):
        np.testing.assert_allclose(a["losses"], b["losses"], rtol=0, atol=TOL)
        for got, want in zip(b["params"], a["params"]):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_predict_returns_the_full_model_output_on_every_rank() -> None:
    x = np.random.default_rng(3).normal(size=(12, 6))
    with minipar.no_grad():
        expected = build_model()(minipar.tensor(x)).array
    for schedule in ("naive", "1f1b"):
        outputs = run_local(lambda comm, s=schedule: PipelineParallel(build_model(), comm, 3, s)(x).array, 4)
        for output in outputs:
            np.testing.assert_allclose(output, expected, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_float32_activations_travel_as_float32_and_match_one_process() -> None:
    xs, ys = batches(steps=1)
    reference = build_model().float()
    x32, y32 = xs[0].astype(np.float32), ys[0].astype(np.float32)
    loss = F.mse_loss(reference(minipar.tensor(x32)), minipar.tensor(y32))

    def step(comm):
        pipe = PipelineParallel(build_model().float(), comm, 4)
        value = pipe.train_step(x32, minipar.tensor(y32), F.mse_loss)
        return value, {p.grad.dtype for p in pipe.stage_module.parameters()}

    for value, dtypes in run_local(step, 3):
        assert abs(value - loss.item()) < 1e-6 and dtypes == {np.dtype(np.float32)}


# ----- counters -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_peak_stash_is_m_for_gpipe_and_at_most_p_minus_stage_for_1f1b() -> None:
    xs, ys = batches(steps=1, batch=12)
    for schedule in ("naive", "gpipe", "1f1b"):
        results = run_local(lambda comm, s=schedule: train_pipeline(comm, s, xs, ys, microbatches=6), 4)
        peaks = [r["peak"] for r in results]
        if schedule == "gpipe":
            assert peaks == [6, 6, 6, 6]
        elif schedule == "1f1b":
            assert peaks == [4, 3, 2, 1]  # p - stage
        else:
            assert peaks == [1, 1, 1, 1]


@pytest.mark.timeout(60)
def test_stats_and_trace_hold_one_forward_and_one_backward_span_per_microbatch() -> None:
    xs, ys = batches(steps=1, batch=8)

    def step(comm):
        pipe = PipelineParallel(build_model(), comm, 4, "1f1b")
        pipe.train_step(xs[0], ys[0], F.mse_loss, synchronize=True)
        return pipe.stats

    trace.enable()
    try:
        all_stats = run_local(step, 2)
        names = [event["name"] for event in trace.events()]
    finally:
        trace.disable()
        trace.clear()
    for stage, stats in enumerate(all_stats):
        compute = [(kind, i) for kind, i, _, _ in stats.timeline if kind in ("forward", "backward")]
        assert compute == one_f_one_b_schedule(stage, 2, 4)
        spans = [(start, end) for kind, _, start, end in stats.timeline if kind in ("forward", "backward")]
        assert all(start <= end for start, end in spans)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert 0 < stats.busy_seconds <= stats.step_seconds
        assert stats.idle_seconds == pytest.approx(stats.step_seconds - stats.busy_seconds)
        assert 0 <= stats.bubble < 1
        assert {kind for kind, *_ in stats.timeline} == {"forward", "backward", "send", "recv"}
    for i in range(4):
        assert names.count(f"forward mb{i}") == 2 and names.count(f"backward mb{i}") == 2


# ----- partitioning and bad input ---------------------------------------------------------------
def test_layers_are_balanced_by_parameter_count_and_relu_stays_with_its_linear() -> None:
    model = build_model()  # parameters per layer: 70, 0, 110, 0, 88, 0, 27
    assert balance_by_parameters(list(model), 2) == [4, 3]
    assert balance_by_parameters(list(model), 4) == [2, 2, 2, 1]
    assert balance_by_parameters([nn.ReLU() for _ in range(5)], 2) == [3, 2]
    [pipe] = run_local(lambda comm: PipelineParallel(model, comm, 2), 1)
    assert list(pipe.layer_range) == list(range(7)) and pipe.is_first_stage and pipe.is_last_stage
    layouts = run_local(lambda comm: _layout(PipelineParallel(build_model(), comm, 2, balance=[1, 5, 1])), 3)
    assert layouts == [[0], [1, 2, 3, 4, 5], [6]]


def _layout(pipe: PipelineParallel) -> list[int]:
    assert len(pipe.stage_module) == len(pipe.layer_range)
    return list(pipe.layer_range)


def test_stage_module_shares_the_full_models_layer_objects() -> None:
    model = build_model()
    [pipe, _] = run_local(lambda comm: PipelineParallel(model, comm, 2), 2)
    assert all(a is b for a, b in zip(pipe.stage_module, list(model)[:4]))


@pytest.mark.timeout(60)
def test_bad_input_raises_value_errors_that_say_what_was_expected() -> None:
    model = build_model()
    with pytest.raises(ValueError, match="8 pipeline stages but the Sequential has only 7 layers"):
        run_local(lambda comm: PipelineParallel(model, comm, 2), 8)
    with pytest.raises(ValueError, match="balance must list 2 positive layer counts summing to 7"):
        run_local(lambda comm: PipelineParallel(model, comm, 2, balance=[3, 3]), 2)
    with pytest.raises(ValueError, match="schedule must be one of"):
        run_local(lambda comm: PipelineParallel(model, comm, 2, schedule="zero-bubble"), 2)
    with pytest.raises(ValueError, match="microbatches must be a positive int"):
        run_local(lambda comm: PipelineParallel(model, comm, 0), 2)
    with pytest.raises(TypeError, match="needs an nn.Sequential"):
        run_local(lambda comm: PipelineParallel(nn.Linear(2, 2), comm, 2), 2)
    xs, ys = batches(steps=1, batch=10)
    with pytest.raises(ValueError, match="a batch of 10 rows .* does not split into 4 equal micro-batches"):
        run_local(lambda comm: PipelineParallel(build_model(), comm, 4).train_step(xs[0], ys[0],
                                                                                   F.mse_loss), 2)
    with pytest.raises(ValueError, match="first stage and needs x, got None"):
        run_local(lambda comm: PipelineParallel(build_model(), comm, 2).train_step(None, ys[0],
                                                                                   F.mse_loss), 2)


# ----- one real launch -------------------------------------------------------------------------
@requires_mpi
@pytest.mark.timeout(90)
def test_gpipe_and_1f1b_under_mpiexec_match_single_process_on_3_ranks() -> None:
    result = run_mpi("""
        import numpy as np
        import test_pipeline as t
        from minipar.comm import world
        comm = world()
        xs, ys = t.batches()
        reference_losses, reference = t.train_one_process(xs, ys)
        from minipar.comm import allgather, allreduce
        for schedule in ("naive", "gpipe", "1f1b"):
            r = t.train_pipeline(comm, schedule, xs, ys)
            error = np.abs(np.array(r["losses"]) - reference_losses).max()
            for got, want in zip(r["params"], t.full_model_params(reference, r["layers"])):
                error = max(error, np.abs(got - want).max())
            worst = allreduce(comm, np.array([error]), op="max")[0]
            peaks = allgather(comm, np.array([r["peak"]]))
            if comm.rank == 0:  # one line per schedule, from rank 0 only
                print(schedule, "error", worst, "peaks", *peaks, flush=True)
    """, n=3, timeout=60, env={"PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}"})
    out = assert_ok(result)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if " error " in line}
    for schedule, peaks in (("naive", [1, 1, 1]), ("gpipe", [MICROBATCHES] * 3), ("1f1b", [3, 2, 1])):
        assert float(lines[schedule][2]) < TOL, out
        assert [int(n) for n in lines[schedule][4:]] == peaks, out


@pytest.mark.timeout(60)
def test_pipeline_on_cupy_gives_the_numpy_loss_and_gradients() -> None:
    cupy = pytest.importorskip("cupy")
    from minipar.backend import cupy_available, to_device

    if not cupy_available():
        pytest.skip("CuPy is installed but no GPU is visible")
    xs, ys = batches(steps=1)

    def step(comm, device: str):
        pipe = PipelineParallel(build_model().to(device), comm, 4)
        x, y = (cupy.asarray(xs[0]), cupy.asarray(ys[0])) if device == "cuda" else (xs[0], ys[0])
        loss = pipe.train_step(x, minipar.tensor(y), F.mse_loss)
        return loss, [to_device(p.grad, "cpu") for p in pipe.stage_module.parameters()]

    on_gpu = run_local(lambda comm: step(comm, "cuda"), 2)
    on_cpu = run_local(lambda comm: step(comm, "cpu"), 2)
    for (gpu_loss, gpu_grads), (cpu_loss, cpu_grads) in zip(on_gpu, on_cpu):
        assert abs(gpu_loss - cpu_loss) < 1e-8
        for a, b in zip(gpu_grads, cpu_grads):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)


@pytest.mark.parametrize("stages, microbatches", [(2, 8), (4, 4), (4, 2), (3, 5)])
def test_1f1b_phases_are_warm_up_steady_and_cool_down_of_the_right_lengths(stages, microbatches):
    from minipar.parallel.pipeline.schedules import one_f_one_b_phases, one_f_one_b_schedule

    for stage in range(stages):
        phases = one_f_one_b_phases(stage, stages, microbatches)
        warmup = min(stages - stage - 1, microbatches)
        assert [kind for kind, _ in phases["warm-up"]] == ["forward"] * warmup
        assert [kind for kind, _ in phases["cool-down"]] == ["backward"] * warmup
        assert [kind for kind, _ in phases["steady"]] == ["forward", "backward"] * (microbatches - warmup)
        assert phases["warm-up"] + phases["steady"] + phases["cool-down"] == \
            one_f_one_b_schedule(stage, stages, microbatches)
