"""``minipar lessons``: find the lessons and benchmarks beside the package and describe them."""


from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
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

