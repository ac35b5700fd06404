"""Lessons 04 (data parallel) and 05 (ZeRO) run under mpiexec at 4 ranks, as their docstrings say."""

from __future__ import annotations

import os
import re

import pytest
from mpirun import REPO, assert_ok, requires_mpi, run_mpi


@requires_mpi
@pytest.mark.timeout(150)
def test_lesson_04_data_parallel_loss_curve_equals_one_process_and_shows_overlap() -> None:
    out = assert_ok(run_mpi(REPO / "lessons" / "04_data_parallel.py", n=4, timeout=120))
    assert "the curves are equal" in out
    gap = float(re.search(r"max \|weight difference\| after training: (\S+)", out).group(1))
    assert gap < 1e-9
    pattern = r"bytes sent by rank 0 per step: ([\d,]+);.*exactly 2N - c_0 - c_1 = ([\d,]+)"
    measured, exact = re.search(pattern, out).groups()
    assert measured == exact
    assert len(re.findall(r"allreduce bucket \d+ +ddp-comm-rank0", out)) >= 3
    assert "of the all-reduce time ran while backward was still computing" in out
    # on one host it says why the step times are not the link's (lesson 18 for the cluster)
    assert "why these timings differ from the formula here (every rank on one host)" in out
    assert f"cores vs ranks: p = 4 ranks on {os.cpu_count()} cores" in out
    assert re.search(rf"load average at start: \d+\.\d\d over the last minute on {os.cpu_count()} cores", out)


@requires_mpi
@pytest.mark.timeout(150)
def test_lesson_05_zero_memory_is_one_pth_and_training_matches_adam() -> None:
    out = assert_ok(run_mpi(REPO / "lessons" / "05_zero.py", n=4, timeout=120))
    rows = re.findall(r"^ ?([124]) +([\d,]+) +([\d,]+) +([\d.]+) ", out, flags=re.MULTILINE)
    assert [row[0] for row in rows] == ["1", "2", "4"]
    for _, _, _, ratio in rows:  # measured state per rank / (plain Adam's / p)
        assert abs(float(ratio) - 1) < 0.01
    gap = float(re.search(r"max \|weights - plain Adam on 1 process\| = (\S+);", out).group(1))
    assert gap < 1e-9
