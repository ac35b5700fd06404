"""The ``minipar`` command: list and run the lessons, describe the install, run benchmarks.

    minipar lessons                     # number, name, ranks, what each lesson shows
    minipar run 3                       # = mpiexec -n 4 python -m mpi4py lessons/03_ring_allreduce.py
    minipar run ring_allreduce -n 2 -- --size 1000000    # after --: the lesson's own arguments
    minipar info                        # minipar, NumPy, mpi4py, MPI library, CuPy/GPU
    minipar bench autograd_step         # python benchmarks/autograd_step.py

``run`` launches the ``mpiexec`` installed next to this Python (the venv's
MPICH) with ``python -m mpi4py``, so an exception on any rank ends them all;
it sets ``MPIEXEC_TIMEOUT`` (a deadline: ``--timeout``, default 600 s, unless
already set), ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` when there are more ranks
than cores (MPICH otherwise busy-polls and oversubscribed ranks starve each
other) and ``OMP_NUM_THREADS=1`` unless set (several ranks, or a benchmark).
One rank runs as plain ``python``.
It prints the command it runs, so you can copy it.

Lessons and benchmarks live in the repository, not in the package: the
command finds them beside the ``minipar/`` folder (an editable install,
``pip install -e .``) and says so when they are not there.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LESSON_FILE = re.compile(r"^(\d+)_(\w+)\.py$")
_MPI_LAUNCH = re.compile(r"mpiexec\s+(?:-n|-np)\s+(\d+)\s+[^\n]*?python")
_PLAIN_LAUNCH = re.compile(r"(?:^|[\s/])python3?\s+(?!-m\s+mpi4py)\S*\.py")
_LAUNCH_START = re.compile(r"\s(?:[A-Z_]+=\S+\s+)*\S*(?:mpiexec|python3?)\s")  # where a launch line begins


@dataclass(frozen=True)
class Script:
    """A lesson or benchmark file and what its docstring says about it."""

    number: int | None  # lessons only
    name: str  # "ring_allreduce" for lessons/03_ring_allreduce.py
    path: Path
    summary: str  # the docstring's first line
    ranks: int | None  # from the launch line; None when the docstring has none
    launch: str | None  # the launch line itself


def parse_ranks(docstring: str, filename: str = "") -> tuple[int | None, str | None]:
    """(ranks, launch line) from the docstring's first launch line: ``mpiexec -n N ... python``
    gives N, a plain ``python x.py`` gives 1. Lines naming ``filename`` come first."""
    lines = [line.strip() for line in docstring.splitlines()]
    for line in [line for line in lines if filename and filename in line] + lines:
        match = _MPI_LAUNCH.search(line)
        if match or _PLAIN_LAUNCH.search(line):
            start = _LAUNCH_START.search(" " + line)  # drop text before the command, and # comments
            command = line[start.start():] if start else line
            return (int(match.group(1)) if match else 1), command.split("  #")[0].strip()
    return None, None


def _describe(path: Path, number: int | None, name: str) -> Script:
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except SyntaxError as error:
        docstring = f"(does not parse: {error})"
    summary = docstring.strip().splitlines()[0] if docstring.strip() else "(no docstring)"
    summary = _LAUNCH_START.split(summary, maxsplit=1)[0].strip()  # "Ring all-reduce.  mpiexec ..."
    ranks, launch = parse_ranks(docstring, f"{path.parent.name}/{path.name}")
    return Script(number, name, path, summary, ranks, launch)


def _folder(kind: str, root: Path | None) -> Path:
    folder = (root or REPO) / kind
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no {kind}/ folder at {folder}: {kind} live in the minipar repository, not in the "
            "installed package. Clone the repository and install it editable (pip install -e .), "
            "then run minipar from there."
        )
    return folder


def discover_lessons(root: Path | None = None) -> list[Script]:
    """Every ``lessons/NN_name.py``, in number order."""
    found = []
    for path in _folder("lessons", root).glob("*.py"):
        match = _LESSON_FILE.match(path.name)
        if match:
            found.append(_describe(path, int(match.group(1)), match.group(2)))
    return sorted(found, key=lambda s: (s.number, s.name))


def discover_benchmarks(root: Path | None = None) -> list[Script]:
    """Every ``benchmarks/NAME.py`` (helpers starting with ``_`` excluded), by name."""
    paths = sorted(p for p in _folder("benchmarks", root).glob("*.py") if not p.name.startswith("_"))
    return [_describe(path, None, path.stem) for path in paths]


def find_lesson(key: str, lessons: list[Script]) -> Script | None:
    """A lesson by number (``3``, ``03``), name (``ring_allreduce``) or file name."""
    key = key.removeprefix("lessons/").removesuffix(".py")
    for lesson in lessons:
        if key.isdigit() and int(key) == lesson.number:
            return lesson
        if key in (lesson.name, lesson.path.stem):
            return lesson
    return None


def format_table(scripts: list[Script]) -> str:
    """One line each: number, name, ranks, summary."""
    width = max([len(s.name) for s in scripts] + [4])
    lines = [f"{'#':>3}  {'name':<{width}}  ranks  what it shows"]
    for s in scripts:
        number = f"{s.number:02d}" if s.number is not None else "--"
        ranks = str(s.ranks) if s.ranks is not None else "?"
        lines.append(f"{number:>3}  {s.name:<{width}}  {ranks:>5}  {s.summary}")
    return "\n".join(lines)


def mpiexec_path() -> Path:
    """The ``mpiexec`` beside this Python (the venv's), else the first one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return beside
    on_path = shutil.which("mpiexec")
    if on_path is None:
        raise FileNotFoundError(
            f"no mpiexec at {beside} nor on PATH: install MPI with pip install -e \".[mpi]\" "
            "(the mpich wheel) or a system MPI (see README.md, 'Use a system MPI')"
        )
    return Path(on_path)


def launch_command(script: Path, ranks: int, args: list[str], timeout: float, one_blas_thread: bool = False
                   ) -> tuple[list[str], dict[str, str]]:
    """The command and environment ``run`` uses for ``script`` on ``ranks`` ranks.

    ``OMP_NUM_THREADS=1`` (unless set) for several ranks, and for benchmarks (``one_blas_thread``).
    """
    if ranks < 1:
        raise ValueError(f"the number of ranks must be at least 1, got {ranks}")
    env = dict(os.environ)
    env.setdefault("MPIEXEC_TIMEOUT", str(int(timeout)))
    if ranks > 1 or one_blas_thread:
        env.setdefault("OMP_NUM_THREADS", "1")
    if ranks == 1:
        return [sys.executable, str(script), *args], env
    if ranks > (os.cpu_count() or 1):
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    command = [str(mpiexec_path()), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(script), *args]
    return command, env


def _execute(script: Script, ranks: int, args: list[str], timeout: float, one_blas_thread: bool) -> int:
    command, env = launch_command(script.path, ranks, args, timeout, one_blas_thread)
    shown = " ".join(command).replace(sys.executable, "python").replace(str(REPO) + os.sep, "")
    shown_env = ("OMP_NUM_THREADS", "MPIEXEC_TIMEOUT", "MPIR_CVAR_ENABLE_HEAVY_YIELD")
    extra = [f"{k}={env[k]}" for k in shown_env if k in env]
    print(f"$ {' '.join(extra)} {shown}", file=sys.stderr, flush=True)
    try:
        # mpiexec enforces MPIEXEC_TIMEOUT itself; the subprocess deadline backs it up
        return subprocess.run(command, env=env, cwd=REPO, timeout=float(env["MPIEXEC_TIMEOUT"]) + 30
                              ).returncode
    except subprocess.TimeoutExpired:
        print(f"minipar: {script.path.name} passed its deadline and was stopped", file=sys.stderr)
        return 124


def _info() -> str:
    import numpy

    import minipar
    from minipar.backend import cupy_available

    rows = [("minipar", f"{minipar.__version__}  ({Path(minipar.__file__).parent})"),
            ("Python", f"{sys.version.split()[0]}  ({sys.executable})"),
            ("NumPy", numpy.__version__)]
    try:
        import mpi4py

        rows.append(("mpi4py", mpi4py.__version__))
        from mpi4py import MPI

        library = MPI.Get_library_version().strip().splitlines()[0]
        standard = ".".join(map(str, MPI.Get_version()))
        rows.append(("MPI", f"{' '.join(library.split())} (MPI standard {standard})"))
    except ImportError:
        rows.append(("mpi4py", 'not installed (pip install -e ".[mpi]"); run_local (threads) still works'))
    try:
        rows.append(("mpiexec", str(mpiexec_path())))
    except FileNotFoundError:
        rows.append(("mpiexec", "not found"))
    if cupy_available():
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        rows.append(("CuPy", f"{cupy.__version__}, {count} GPU(s)"))
    else:
        try:
            import cupy  # noqa: F401

            rows.append(("CuPy", "installed, but no GPU is visible (CPU only)"))
        except ImportError:
            rows.append(("CuPy", 'not installed: CPU only (pip install -e ".[gpu]" on a CUDA machine)'))
    rows.append(("cores", str(os.cpu_count())))
    if (REPO / "lessons").is_dir():
        rows.append(("repository", f"{REPO} ({len(discover_lessons())} lessons)"))
    else:
        rows.append(("repository", "not found: lessons and benchmarks need a clone (pip install -e .)"))
    return "\n".join(f"{name:<11} {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minipar`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="minipar", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("lessons", help="list the lessons")
    commands.add_parser("info", help="versions of minipar, NumPy, MPI; GPU availability")
    for name, what in (("run", "lesson"), ("bench", "benchmark")):
        sub = commands.add_parser(name, help=f"run a {what} (its arguments after --)")
        sub.add_argument(what, help="number or name" if what == "lesson" else "file name without .py")
        sub.add_argument("-n", type=int, default=None, help="ranks (default: what its docstring says)")
        sub.add_argument("--timeout", type=float, default=600.0,
                         help="seconds before the job is killed (MPIEXEC_TIMEOUT), default 600")
    options = parser.parse_args(argv)
    try:
        if options.command == "info":
            print(_info())
            return 0
        if options.command == "lessons":
            print(format_table(discover_lessons()))
            return 0
        if options.command == "run":
            lessons = discover_lessons()
            script = find_lesson(options.lesson, lessons)
            if script is None:
                print(f"minipar: no lesson {options.lesson!r}; the lessons are:\n{format_table(lessons)}",
                      file=sys.stderr)
                return 2
        else:
            benchmarks = discover_benchmarks()
            key = options.benchmark.removeprefix("benchmarks/").removesuffix(".py")
            script = next((b for b in benchmarks if b.name == key), None)
            if script is None:
                names = ", ".join(b.name for b in benchmarks) or "(none)"
                print(f"minipar: no benchmark {options.benchmark!r}; the benchmarks are: {names}",
                      file=sys.stderr)
                return 2
        ranks = options.n if options.n is not None else (script.ranks or 1)
        return _execute(script, ranks, passthrough, options.timeout, options.command == "bench")
    except (FileNotFoundError, ValueError) as error:
        print(f"minipar: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
