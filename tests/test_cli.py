"""The minipar command: lists lessons from their docstrings, runs them under the venv's mpiexec
with a deadline (heavy yield when oversubscribed), describes the install, runs benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mpirun import requires_mpi

from minipar import cli

HELLO = '''"""Hello from every rank: shows what minipar run sets up.

    mpiexec -n 2 python -m mpi4py lessons/01_hello.py
"""
import os, sys
from minipar.comm import world
comm = world()
heavy = os.environ.get("MPIR_CVAR_ENABLE_HEAVY_YIELD")
sys.stdout.write(f"rank {comm.rank} of {comm.size} heavy_yield={heavy} "
                 f"timeout={os.environ.get('MPIEXEC_TIMEOUT')} args={sys.argv[1:]};\\n")
'''

SOLO = '''"""One process, no MPI.

    python lessons/02_solo.py
"""
import sys
print("solo", sys.argv[1:])
sys.exit(3 if "--fail" in sys.argv else 0)
'''

BENCH = '''"""Counts to three.

    OMP_NUM_THREADS=1 python benchmarks/count.py
"""
print("bench", 1, 2, 3)
'''


@pytest.fixture
def fake_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with two lessons and a benchmark; cli.REPO points at it."""
    (tmp_path / "lessons").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "lessons" / "01_hello.py").write_text(HELLO)
    (tmp_path / "lessons" / "02_solo.py").write_text(SOLO)
    (tmp_path / "lessons" / "notes.py").write_text("'''not a lesson: no number'''\n")
    (tmp_path / "benchmarks" / "count.py").write_text(BENCH)
    (tmp_path / "benchmarks" / "_helpers.py").write_text("'''shared code, not a benchmark'''\n")
    monkeypatch.setattr(cli.lessons, "REPO", tmp_path)
    monkeypatch.delenv("MPIEXEC_TIMEOUT", raising=False)
    monkeypatch.delenv("MPIR_CVAR_ENABLE_HEAVY_YIELD", raising=False)
    return tmp_path


@pytest.mark.parametrize("docstring, expected", [
    ("Shows X.\n\n    mpiexec -n 4 python -m mpi4py lessons/04_data_parallel.py\n", 4),
    ("Shows X.\n\n    MPIEXEC_TIMEOUT=60 mpiexec -np 8 python -m mpi4py lessons/x.py --steps 3\n", 8),
    ("Shows X.\n\n    python lessons/01_autograd.py\n", 1),
    ("Shows X.\n\n    OMP_NUM_THREADS=1 python3 benchmarks/b.py [--reps 300]\n", 1),
    ("Shows X, but says nothing about how to run it.", None),
])
def test_parse_ranks_reads_the_launch_line(docstring: str, expected: int | None) -> None:
    assert cli.parse_ranks(docstring)[0] == expected


def test_parse_ranks_prefers_the_line_naming_the_file_itself() -> None:
    docstring = ("Pipeline.\n\n    mpiexec -n 2 python -m mpi4py lessons/06_other.py\n"
                 "    mpiexec -n 4 python -m mpi4py lessons/07_pipeline.py\n")
    assert cli.parse_ranks(docstring, "lessons/07_pipeline.py") == (
        4, "mpiexec -n 4 python -m mpi4py lessons/07_pipeline.py")


def test_lessons_are_found_by_number_name_or_file_and_listed_one_line_each(fake_repo: Path,
                                                                           capsys) -> None:
    lessons = cli.discover_lessons()
    assert [(s.number, s.name, s.ranks) for s in lessons] == [(1, "hello", 2), (2, "solo", 1)]
    assert lessons[0].summary == "Hello from every rank: shows what minipar run sets up."
    for key in ("1", "01", "hello", "01_hello", "lessons/01_hello.py"):
        assert cli.find_lesson(key, lessons) is lessons[0]
    assert cli.find_lesson("7", lessons) is None
    assert cli.main(["lessons"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["01", "hello", "2", "Hello", "from", "every", "rank:", "shows", "what",
                                "minipar", "run", "sets", "up."]
    assert lines[2].split()[:3] == ["02", "solo", "1"] and len(lines) == 3


def test_unknown_lesson_lists_the_valid_ones_and_fails(fake_repo: Path, capsys) -> None:
    assert cli.main(["run", "ring_allreduce"]) == 2
    err = capsys.readouterr().err
    assert "no lesson 'ring_allreduce'" in err and "hello" in err and "solo" in err


def test_one_rank_lesson_runs_as_plain_python_with_its_arguments_and_exit_code(fake_repo: Path,
                                                                                capfd) -> None:
    assert cli.main(["run", "solo", "--", "--steps", "2"]) == 0
    assert "solo ['--steps', '2']" in capfd.readouterr().out
    assert cli.main(["run", "2", "--", "--fail"]) == 3


def test_launch_command_uses_the_venv_mpiexec_a_deadline_and_heavy_yield_only_when_oversubscribed(
        fake_repo: Path) -> None:
    script = fake_repo / "lessons" / "01_hello.py"
    cores = os.cpu_count() or 1
    command, env = cli.launch_command(script, cores, ["-x"], timeout=42)
    assert command == [str(Path(sys.executable).with_name("mpiexec")), "-n", str(cores), sys.executable,
                       "-m", "mpi4py", str(script), "-x"]
    assert env["MPIEXEC_TIMEOUT"] == "42" and "MPIR_CVAR_ENABLE_HEAVY_YIELD" not in env
    _, env = cli.launch_command(script, cores + 1, [], timeout=42)
    assert env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] == "1" and env["OMP_NUM_THREADS"]
    with pytest.raises(ValueError, match="at least 1"):
        cli.launch_command(script, 0, [], timeout=42)


@requires_mpi
@pytest.mark.timeout(120)
def test_run_launches_every_rank_under_mpiexec(fake_repo: Path, capfd) -> None:
    ranks = (os.cpu_count() or 1) + 1  # oversubscribed: heavy yield must be on
    assert cli.main(["run", "hello", "-n", str(ranks), "--timeout", "90", "--", "--flag"]) == 0
    captured = capfd.readouterr()
    reports = sorted(re.findall(r"rank \d+ of \d+ [^;]*;", captured.out))  # ranks' lines may interleave
    assert reports == [f"rank {r} of {ranks} heavy_yield=1 timeout=90 args=['--flag'];" for r in range(ranks)]
    assert f"-n {ranks}" in captured.err  # the command is shown


def test_bench_runs_a_benchmark_by_name_and_lists_them_when_unknown(fake_repo: Path, capfd) -> None:
    assert cli.main(["bench", "count"]) == 0
    assert "bench 1 2 3" in capfd.readouterr().out
    assert cli.main(["bench", "nope"]) == 2
    err = capfd.readouterr().err
    assert "the benchmarks are: count" in err and "_helpers" not in err


def test_without_the_repository_the_commands_say_where_lessons_live(tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    monkeypatch.setattr(cli.lessons, "REPO", tmp_path)  # as if minipar were installed without its repository
    assert cli.main(["lessons"]) == 2
    assert "not in the installed package" in capsys.readouterr().err
    assert cli.main(["bench", "allreduce"]) == 2
    assert "pip install -e ." in capsys.readouterr().err


def test_info_names_every_component() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("minipar")), "info"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["minipar", "Python", "NumPy", "mpi4py", "MPI", "mpiexec", "CuPy", "cores", "repository"]
    assert "lessons" in result.stdout.splitlines()[-1]


def test_the_real_lessons_all_state_what_they_show_and_how_to_launch_them() -> None:
    lessons = cli.discover_lessons()
    assert lessons, "no lessons found in the repository"
    for lesson in lessons:
        assert lesson.summary != "(no docstring)", lesson.path.name
        assert lesson.ranks is not None, f"{lesson.path.name}: no launch line in the docstring"
        assert f"lessons/{lesson.path.name}" in lesson.launch, lesson.launch
