"""The package's layout: one file per name, old import paths are aliases of the one file."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import minipar  # noqa: F401  (registers the aliases)
from minipar import _aliases

PACKAGE = Path(__file__).resolve().parent.parent / "minipar"

FIRST_ROUND_PATHS = {  # the import paths of the first round's flat layout, each now an alias
    "minipar.trace", "minipar.plot", "minipar.memory", "minipar.cost", "minipar.data", "minipar.fault",
    "minipar.parallel.data", "minipar.parallel.buckets", "minipar.parallel.tensor",
    "minipar.parallel.pipeline_schedules", "minipar.parallel.pipeline_comm", "minipar.parallel.snapshot",
}
OLD_PATHS = dict(_aliases._TARGETS)


def test_every_first_round_path_still_imports() -> None:
    assert FIRST_ROUND_PATHS <= set(OLD_PATHS)


def test_no_two_files_in_the_package_share_a_name() -> None:
    names = Counter(path.name for path in PACKAGE.rglob("*.py")
                    if path.name not in ("__init__.py", "__main__.py"))
    assert [name for name, count in names.items() if count > 1] == []


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_an_old_import_path_is_the_same_module_object_under_its_own_name(old: str, new: str) -> None:
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # it still names its own file


def test_from_imports_through_an_old_path_work_in_a_fresh_interpreter() -> None:
    code = ("from minipar import trace, data\n"
            "from minipar.parallel.tensor import ColumnParallelLinear\n"
            "import minipar.observe.trace, minipar.parallel.tensor_parallel as tp\n"
            "assert trace is minipar.observe.trace and ColumnParallelLinear is tp.ColumnParallelLinear\n"
            "assert data.DataLoader.__module__ == 'minipar.utils.data.dataloader'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_import_contracts_in_pyproject_hold() -> None:
    """Layers (data flows down), comm independent of the core and of observe, no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([str(lint)], capture_output=True, text=True, timeout=120,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_is_clean_on_the_whole_repository() -> None:
    """The style every file keeps (pyproject's [tool.ruff]): package, tests, lessons, benchmarks."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = subprocess.run([str(ruff), "check", "."], capture_output=True, text=True, timeout=120,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]


def test_nothing_in_the_package_imports_the_lessons_or_the_benchmarks() -> None:
    offenders = [str(path) for path in PACKAGE.rglob("*.py")
                 if any(line.lstrip().startswith(("import lessons", "from lessons", "import benchmarks",
                                                  "from benchmarks"))
                        for line in path.read_text(encoding="utf-8").splitlines())]
    assert offenders == []
