"""Lessons 09 (checkpointing) and 10 (mixed precision) run as their docstrings say and report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


def run_lesson(name: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(LESSONS / name)], capture_output=True, text=True,
                            timeout=150, cwd=LESSONS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.timeout(180)
def test_lesson_09_stored_activations_follow_the_formula_and_sqrt_n_segments_win() -> None:
    result = run_lesson("09_checkpointing.py")
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+) MiB \(\s*(\d+)\)\s+(\d+)\s+([\d.]+) MiB", result.stdout, re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8, 16, 32, 64], result.stdout
    for k, _, stored, formula, _ in rows:
        assert stored == formula, f"k={k}: measured {stored} activations, formula {formula}"
    peaks = {int(k): float(peak) for k, _, _, _, peak in rows}
    assert min(peaks, key=peaks.get) == 8  # k = sqrt(64)
    assert peaks[1] / peaks[8] > 3
    assert "smallest step peak at k = 8" in result.stdout
    assert re.search(r"max \|gradient difference\| plain vs k = 8 checkpointed: 0\.0e\+00", result.stdout)
    assert "timing rounds: 100%" in result.stderr


@pytest.mark.timeout(120)
def test_lesson_10_fp16_gradient_vanishes_unscaled_survives_scaled_and_the_scale_moves() -> None:
    result = run_lesson("10_mixed_precision.py")
    out = result.stdout
    table = dict(re.findall(r"^  (fp32|fp16|fp16 \+ scaling)\s+(\d+)/1024", out, re.M))
    assert table == {"fp32": "0", "fp16": "1024", "fp16 + scaling": table["fp16 + scaling"]}
    assert int(table["fp16 + scaling"]) < 10
    scaled_error = float(re.search(r"fp16 \+ scaling\s+\d+/1024\s+\S+\s+(\S+)", out).group(1))
    assert scaled_error < 1e-2
    steps = re.findall(r"^\s+(\d+)\s+(\d+)\s+[\d.]+  (.*)$", out, re.M)
    assert len(steps) == 16
    assert "skipped" in steps[0][2] and int(steps[1][1]) == int(steps[0][1]) // 2  # 2^24 overflows
    assert any("doubles" in s[2] for s in steps)
    assert "steps: 100%" in result.stderr
