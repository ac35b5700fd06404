"""Every lesson runs, at the rank count its docstring's launch line names, and exits cleanly.

Lessons are discovered (``lessons/NN_name.py``), so a new lesson is tested as
soon as it exists. The launch line is parsed by the same code ``minipar
lessons`` uses: ``mpiexec -n N ... python -m mpi4py lessons/NN_name.py`` runs
under the venv's mpiexec with N ranks (``tests/mpirun.py``: MPIEXEC_TIMEOUT,
heavy yield when N exceeds the cores, one BLAS thread), a plain
``python lessons/NN_name.py`` as one process.

A lesson whose file name appears in a ``test_lessons_*.py`` file beside this
one is run there, at the same rank count, with assertions on what it prints;
this test skips it rather than run it twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpirun import REPO, run_mpi

from minipar.cli import discover_lessons

LESSONS = discover_lessons(REPO)
DEADLINE = 240  # seconds: lessons aim for well under a minute, oversubscribed ranks are slower


def dedicated_test(lesson) -> str | None:
    """The ``test_lessons_*.py`` file that runs this lesson and checks its output, if any."""
    for path in sorted(Path(__file__).parent.glob("test_lessons_*.py")):
        if lesson.path.name in path.read_text(encoding="utf-8"):
            return path.name
    return None


@pytest.mark.timeout(DEADLINE + 60)
@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.path.stem for lesson in LESSONS])
def test_lesson_runs_at_the_rank_count_its_docstring_names(lesson) -> None:
    assert lesson.ranks is not None, f"{lesson.path.name}: the docstring has no launch line"
    covered = dedicated_test(lesson)
    if covered:
        pytest.skip(f"run with output checks by {covered}")
    if lesson.ranks == 1:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            result = subprocess.run([sys.executable, str(lesson.path)], capture_output=True, text=True,
                                    cwd=REPO, env=env, timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{lesson.path.name} ran past its {DEADLINE} s deadline")
    else:
        result = run_mpi(lesson.path, n=lesson.ranks, timeout=DEADLINE)
    assert result.returncode == 0, (
        f"{lesson.launch} exited with {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}"
        f"\n--- stderr ---\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip(), f"{lesson.path.name} printed nothing"
