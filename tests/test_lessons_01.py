"""lessons/01_autograd.py runs as its docstring says (``python lessons/01_autograd.py``) and reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

LESSON = Path(__file__).resolve().parents[1] / "lessons" / "01_autograd.py"


@pytest.mark.timeout(120)
def test_lesson_01_walks_backward_passes_gradcheck_and_prints_held_out_accuracy() -> None:
    result = subprocess.run([sys.executable, str(LESSON)], capture_output=True, text=True, timeout=100,
                            cwd=LESSON.parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "loss   = Sum(sq) -> shape ()" in out  # the graph is printed
    visits = re.findall(r"visit \d+: (\w+)", out)
    assert visits[0] == "loss" and sorted(visits) == sorted(["loss", "sq", "y", "z", "h", "b", "W", "x"])
    assert visits.index("y") < visits.index("z") < visits.index("h") < visits.index("W")
    worst = float(re.search(r"max \|autograd - central differences\| = (\S+)", out).group(1))
    assert worst < 1e-7
    accuracy = re.search(r"held-out accuracy: (\d+\.\d)% \((\d+)/(\d+) test digits\)", out)
    assert accuracy is not None, out[-2000:]
    assert float(accuracy.group(1)) > 90.0 and accuracy.group(3) == "359"
    assert "epochs: 100%" in result.stderr  # the tqdm bar ran over every epoch
