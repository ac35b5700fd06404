"""minipar.profiler records every op's forward and backward and every collective; bottleneck names
the ops a script runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minipar
from minipar import nn, profiler
from minipar.autograd import function
from minipar.comm import allreduce, run_local
from minipar.nn import functional as F


def step(model: nn.Module) -> None:
    x = minipar.tensor(np.random.default_rng(0).random((8, 4)))
    F.cross_entropy(model(x), np.array([0, 1, 2, 0, 1, 2, 0, 1])).backward()


def model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16, dtype=np.float64), nn.Tanh(), nn.Linear(16, 3, dtype=np.float64))


def test_every_forward_and_backward_is_counted_once_per_call() -> None:
    net = model()
    with profiler.profile() as prof:
        for _ in range(3):
            step(net)
    counts = {a.key: a.count for a in prof.key_averages()}
    assert counts == {"LinearFunction": 6, "LinearFunctionBackward": 6, "Tanh": 3, "TanhBackward": 3,
                      "CrossEntropyFunction": 3, "CrossEntropyFunctionBackward": 3}
    assert function.profiler is None  # off again after the block


def test_self_times_exclude_nested_events_and_add_up_to_the_total() -> None:
    net = model()
    with profiler.profile() as prof:
        with profiler.record_function("my step"):
            step(net)
    averages = {a.key: a for a in prof.key_averages()}
    outer = averages["my step"]
    inner = sum(a.cpu_time_total for key, a in averages.items() if key != "my step")
    assert outer.self_cpu_time_total == pytest.approx(outer.cpu_time_total - inner, abs=1e-9)
    assert sum(a.self_cpu_time_total for a in averages.values()) == pytest.approx(outer.cpu_time_total)


def test_the_table_is_pytorchs_sorted_and_limited() -> None:
    net = model()
    with profiler.profile(record_shapes=True, profile_memory=True) as prof:
        step(net)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=2)
    lines = table.splitlines()
    assert "Self CPU %" in lines[1] and "CPU Mem" in lines[1] and "# of Calls" in lines[1]
    assert len(lines) == 3 + 2 + 2  # header block, two rows, rule and the total
    assert lines[-1].startswith("Self CPU time total: ")
    first, second = (sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[i].key for i in (0, 1))
    assert first in lines[3] and second in lines[4]
    memory = {a.key: a.self_cpu_memory_usage for a in prof.key_averages()}
    assert memory["Tanh"] == 8 * 16 * 8 * 1  # one (8, 16) float64 output per call
    shapes = {a.key: a.shapes for a in prof.key_averages(group_by_input_shape=True)}
    assert shapes["Tanh"] == ((8, 16),)
    with pytest.raises(ValueError, match="sort_by"):
        prof.key_averages().table(sort_by="speed")


@pytest.mark.timeout(60)
def test_collectives_are_recorded_from_the_comm_event_stream() -> None:
    with profiler.profile() as prof:
        run_local(lambda comm: allreduce(comm, np.ones(1000), algorithm="ring"), 2)
    counts = {a.key: a.count for a in prof.key_averages()}
    assert counts.get("allreduce") == 2  # one per rank


def test_chrome_trace_export_has_one_span_per_event(tmp_path: Path) -> None:
    net = model()
    with profiler.profile() as prof:
        step(net)
    prof.export_chrome_trace(str(tmp_path / "trace.json"))
    document = json.loads((tmp_path / "trace.json").read_text())
    spans = [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["name"] for e in spans) == sorted(e.name for e in prof.events())


def test_profiles_do_not_nest() -> None:
    with profiler.profile(), pytest.raises(RuntimeError, match="already active"):
        with profiler.profile():
            pass


@pytest.mark.timeout(120)
def test_bottleneck_runs_a_script_twice_and_names_its_ops(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import minipar
        from minipar import nn
        from minipar.nn import functional as F
        model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))
        x = minipar.tensor(np.ones((32, 16), dtype=np.float32))
        for _ in range(int(sys.argv[1])):
            F.mse_loss(model(x), minipar.tensor(np.zeros((32, 4), dtype=np.float32))).backward()
        print("script ran with", sys.argv[1:])
    """))
    result = subprocess.run([sys.executable, "-m", "minipar.bottleneck", str(script), "2"],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("script ran with ['2']") == 2  # once under cProfile, once under the profiler
    for section in ("Environment summary", "cProfile output", "minipar.profiler output"):
        assert section in out
    for op in ("LinearFunction", "LinearFunctionBackward", "Tanh", "TanhBackward"):
        assert op in out
    assert "The op that dominates: " in out
