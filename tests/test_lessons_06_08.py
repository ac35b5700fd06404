"""Lessons 06-08 run under mpiexec at the rank counts their docstrings name, and report what they check.

Timings printed by lesson 06 are not asserted (the machine is shared); the
equalities, message counts and stash counts are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


def launch_ranks(lesson: Path) -> int:
    """The -n of the launch line in the lesson's docstring."""
    pattern = r"mpiexec -n (\d+) python -m mpi4py lessons/" + re.escape(lesson.name)
    match = re.search(pattern, lesson.read_text())
    assert match, f"{lesson.name}: no launch line in its docstring"
    return int(match.group(1))


@requires_mpi
@pytest.mark.timeout(150)
def test_lesson_06_pipeline_equals_one_process_and_prints_bubble_and_stash_counts() -> None:
    lesson = LESSONS / "06_pipeline.py"
    p = launch_ranks(lesson)
    out = assert_ok(run_mpi(lesson, n=p, timeout=120))
    worst = float(re.search(r"largest difference\s+from one process \(losses and parameters\) is (\S+)",
                            out).group(1))
    assert worst < 1e-10
    for schedule, m in (("naive", 1), ("gpipe", 8), ("1f1b", 8)):
        block = out.split(f"   {schedule}: step")[1]
        formula = re.search(r"formula \(p-1\)/\(m\+p-1\) = \((\d)-1\)/\((\d+)\+\d-1\) = (\S+)", block)
        assert formula and int(formula.group(2)) == m
        assert float(formula.group(3)) == pytest.approx((p - 1) / (m + p - 1), abs=1e-3)
        measured = float(re.search(r"bubble measured (\S+)", block).group(1))
        assert 0.0 <= measured < 1.0
        peaks = re.search(r"peak micro-batches held per stage (\[.*?\])\s+formula (\[.*?\])", block)
        assert peaks.group(1) == peaks.group(2)
        assert block.count(" stage ") >= p  # a text timeline row per stage


@requires_mpi
@pytest.mark.timeout(120)
def test_lesson_07_tensor_parallel_counts_one_allreduce_each_way_and_equals_dense() -> None:
    lesson = LESSONS / "07_tensor_parallel.py"
    out = assert_ok(run_mpi(lesson, n=launch_ranks(lesson), timeout=90))
    assert "all-reduces per block: forward 1, backward 1" in out
    counted = r"(\d+) messages, ([\d,]+) bytes sent by rank 0 .*?= (\d+) messages, .*?([\d,]+) bytes"
    lines = re.findall(counted, out)
    assert len(lines) == 2  # forward and backward
    for line in lines:
        assert line[0] == line[2] and line[1] == line[3]
    assert out.count("equal within 1e-10: True") == 6
    assert float(re.search(r"weight difference from dense training is (\S+)", out).group(1)) < 1e-10


@requires_mpi
@pytest.mark.timeout(120)
def test_lesson_08_hybrid_dp_by_pp_equals_one_process_on_4_ranks() -> None:
    lesson = LESSONS / "08_hybrid.py"
    assert launch_ranks(lesson) == 4
    out = assert_ok(run_mpi(lesson, n=4, timeout=90))
    assert float(re.search(r"largest difference from one process .*?: (\S+)", out).group(1)) < 1e-10
    sent = re.search(r"rank 0 sent ([\d,]+) bytes per step; predicted ([\d,]+)", out)
    assert sent.group(1) == sent.group(2)
    assert re.search(r"\s+2\s+1\s+0\s+0\s+\[0, 2\]\s+\[2, 3\]", out)  # world rank 2: dp 1, pp 0
