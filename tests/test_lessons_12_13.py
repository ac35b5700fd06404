"""lessons/12_tracing.py and lessons/13_scale_model.py run at their docstrings' rank counts and
print figures that agree with their formulas (counts exactly; no timing is asserted)."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from emulated_cluster import requires_cluster
from mpirun import REPO, assert_ok, requires_mpi, run_mpi

from minipar import cluster
from minipar.cli import discover_lessons

LESSONS = {lesson.name: lesson for lesson in discover_lessons(REPO)}


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@requires_mpi
@pytest.mark.timeout(300)
def test_lesson_12_counts_bucket_spans_and_bytes_and_writes_a_trace_per_run(tmp_path) -> None:
    lesson = LESSONS["tracing"]
    out_path = tmp_path / "trace.json"
    out = assert_ok(run_mpi(lesson.path, n=lesson.ranks, timeout=240,
                            args=["--steps", "3", "--out", str(out_path)]))
    spans = re.findall(r"bucket spans: (\d+) \(theory .* = (\d+)\)", out)
    moved = re.findall(r"bytes all-reduced per rank and step: ([\d,]+) \(theory .* = ([\d,]+)\)", out)
    assert len(spans) == len(moved) == 2, out  # one report per run: overlap off, then on
    assert all(measured == theory for measured, theory in spans), spans
    assert all(_number(measured) == _number(theory) for measured, theory in moved), moved
    without_overlap = out.split("overlap=True")[0]
    shares = re.findall(r"of which (\d+)% ran while", without_overlap)
    assert shares == ["0"] * lesson.ranks, without_overlap  # the main thread pauses for each bucket
    assert "step time:" in out
    for overlap in ("false", "true"):
        document = json.loads((tmp_path / f"trace_overlap_{overlap}.json").read_text())
        events = document["traceEvents"]
        assert {e["pid"] for e in events if e["ph"] == "X"} == set(range(lesson.ranks))
        threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
        assert any(name.startswith("ddp-comm") for name in threads) == (overlap == "true"), threads
        names = {e["name"] for e in events if e["ph"] == "X"}
        assert {"forward", "backward", "optimizer step", "allreduce"} <= names, names


@requires_mpi
@pytest.mark.timeout(300)
def test_lesson_13_checks_the_model_with_its_overhead_at_p2_and_p4_and_predicts_8_to_4096_ranks() -> None:
    lesson = LESSONS["scale_model"]
    out = assert_ok(run_mpi(lesson.path, n=lesson.ranks, timeout=240, args=["--megabytes", "4"]))
    load = re.search(r"load average at start ([\d.]+) ([\d.]+) ([\d.]+)", out)
    assert load is not None and "one host" in out, out
    overhead_us = float(re.search(r"per-call overhead o = ([\d.]+) us", out).group(1))
    ms = r"([\d.]+)ms\s+"
    checks = re.findall(rf"^\s*(\d+)\s+([\d,]+)\s+{ms}{ms}{ms}([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [(p, size) for p, size, *_ in checks] == [
        (p, size) for p in ("2", "4") for size in ("4,096", "65,536", "1,048,576", "4,194,304")], out
    for _, _, without, with_o, measured, ratio_without, ratio_with in checks:
        without, with_o, measured = float(without), float(with_o), float(measured)
        assert 0 < without <= with_o and measured > 0
        assert with_o - without == pytest.approx(overhead_us / 1e3, abs=2e-3)  # o, paid once per call
        assert float(ratio_without) == pytest.approx(measured / without, rel=0.02, abs=0.01)
        assert float(ratio_with) == pytest.approx(measured / with_o, rel=0.02, abs=0.01)
    # on one host the lesson says why its numbers differ: memcpy transfers, cores vs ranks
    assert "memcpy" in out and (lesson.ranks <= (os.cpu_count() or 1) or "ranks take turns" in out), out
    seconds, number = r"[\d.]+s\s+", r"([\d.]+)"
    row = rf"^\s*(\d+)\s+{seconds}{number}\s+{seconds}{number}\s+{number}\s+{seconds}{number}$"
    steps = re.findall(row, out, re.M)
    assert [int(p) for p, *_ in steps] == [8, 16, 64, 256, 1024, 4096], out
    for p, ddp_eff, pipe_eff, bubble, tp_eff in steps:
        assert all(0 <= float(e) <= 1 for e in (ddp_eff, pipe_eff, tp_eff))
        m = 4 * int(p)  # the lesson's pipeline runs 4p microbatches
        assert float(bubble) == pytest.approx((int(p) - 1) / (m + int(p) - 1), abs=5e-4)


@requires_cluster
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("emulated_cluster")
def test_lesson_13_on_the_cluster_fits_the_link_between_hosts_and_checks_across_them() -> None:
    lesson = LESSONS["scale_model"]
    done = cluster.run(4, [sys.executable, "-m", "mpi4py", str(lesson.path), "--megabytes", "1"],
                       timeout=240, capture_output=True, cwd=REPO)
    out = assert_ok(done)
    assert "on a cluster of 2 hosts" in out and "fitted inter-host" in out, out
    rows = re.findall(r"^\s*(\d+)\s+([\d,]+)\s+[\d.]+ms", out, re.M)
    assert [p for p, _ in rows] == ["2"] * 3 + ["4"] * 3, out
    assert "memcpy" not in out  # that explanation is for one host
