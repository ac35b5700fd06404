"""Lesson 11 (fault tolerance) runs as its docstring says: it conducts three 4-rank mpiexec jobs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from mpirun import REPO, requires_mpi


@requires_mpi
@pytest.mark.timeout(400)
def test_lesson_11_crash_is_named_and_the_restart_matches_bit_for_bit() -> None:
    result = subprocess.run([sys.executable, str(REPO / "lessons" / "11_fault_tolerance.py")],
                            capture_output=True, text=True, timeout=380, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"the job ended with exit code [1-9]\d*, [\d.]+ s after the fault", out)
    assert "uncaught InjectedFault in the main thread of rank 2 of 4" in out
    assert "last committed snapshot: step 20; steps to redo: 3 (at most N - 1 = 9)" in out
    assert "resumed at step 20, ran to step 30" in out
    assert "max |resumed - uninterrupted| = 0.0e+00; bit for bit: True" in out
    measured, theory = re.search(r"snapshot file: ([\d,]+) bytes; .* = ([\d,]+) bytes", out).groups()
    assert 0 < int(measured.replace(",", "")) - int(theory.replace(",", "")) < 20_000  # RNG, sampler, JSON
