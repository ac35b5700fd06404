"""Launch a script or a snippet of Python under ``mpiexec`` from tests, never hanging.

    from mpirun import assert_ok, requires_mpi, run_mpi   # pytest puts tests/ on sys.path

    @requires_mpi
    def test_two_ranks_agree():
        result = run_mpi('''
            from minipar.comm import world
            print("OK", world().size)
        ''', n=2)
        assert "OK 2" in assert_ok(result)

What ``run_mpi`` sets up, so that nothing ever hangs or crawls on a small machine:

- ``mpiexec`` is the one next to this Python (the venv's MPICH), and the
  script runs as ``python -m mpi4py script.py`` (an exception on one rank
  aborts them all even without minipar's own hook; pass ``module=False`` to
  test plain ``python script.py``).
- ``MPIEXEC_TIMEOUT`` kills the job after ``timeout`` seconds, and the
  subprocess itself is killed ``GRACE`` seconds later if mpiexec does not exit.
- ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` when there are more ranks than cores
  (MPICH otherwise busy-polls and the ranks starve each other), and
  ``OMP_NUM_THREADS=1`` so NumPy does not oversubscribe the cores.
- The repository root is put on ``PYTHONPATH``.

A string containing a newline (or not naming an existing file) is treated as
code: it is dedented and written to a temporary file first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).with_name("mpiexec")
GRACE = 15.0  # seconds the subprocess may outlive MPIEXEC_TIMEOUT before we kill it


def _has_mpi() -> bool:
    if not MPIEXEC.exists():
        return False
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


HAS_MPI = _has_mpi()

#: Skips a test when mpiexec or mpi4py is missing from this Python's environment.
requires_mpi = pytest.mark.skipif(not HAS_MPI, reason=f"needs mpi4py and {MPIEXEC}")


def mpi_env(n: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``run_mpi`` gives its ranks (``env`` entries override)."""
    merged = dict(os.environ)
    merged["OMP_NUM_THREADS"] = "1"
    merged["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([merged["PYTHONPATH"]] if merged.get("PYTHONPATH") else [])
    )
    if n > (os.cpu_count() or 1):
        merged["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    for name in ("MINIPAR_COMM_TIMEOUT", "MINIPAR_DEBUG"):  # tests opt in explicitly
        merged.pop(name, None)
    merged.update(env or {})
    return merged


def run_mpi(
    script_or_code: str | os.PathLike[str],
    n: int,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    module: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``mpiexec -n n python [-m mpi4py] script [args]``; returns the finished process.

    ``timeout`` becomes ``MPIEXEC_TIMEOUT`` (the job is killed after it, with a
    non-zero exit code); stdout and stderr are captured as text. Never raises
    for a failing job: assert on ``returncode``, ``stdout``, ``stderr``.
    """
    if not HAS_MPI:
        pytest.skip(f"needs mpi4py and {MPIEXEC}")
    text = os.fspath(script_or_code)
    temporary = None
    if "\n" in text or not Path(text).is_file():
        temporary = tempfile.NamedTemporaryFile("w", suffix=".py", prefix="mpirun_", delete=False)
        temporary.write(textwrap.dedent(text))
        temporary.close()
        script = temporary.name
    else:
        script = text
    launch_env = mpi_env(n, env)
    launch_env["MPIEXEC_TIMEOUT"] = str(max(1, int(round(timeout))))
    command = [str(MPIEXEC), "-n", str(n), sys.executable]
    command += ["-m", "mpi4py", script] if module else [script]
    command += list(args or [])
    try:
        return subprocess.run(
            command, env=launch_env, capture_output=True, text=True,
            timeout=timeout + GRACE, cwd=cwd or REPO,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or ""
        err = expired.stderr or ""
        return subprocess.CompletedProcess(
            command, -9,
            out if isinstance(out, str) else out.decode(errors="replace"),
            (err if isinstance(err, str) else err.decode(errors="replace"))
            + f"\n[run_mpi] killed after {timeout + GRACE:.0f} s",
        )
    finally:
        if temporary is not None:
            os.unlink(temporary.name)


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the job succeeded; return its stdout (stderr shown on failure)."""
    assert result.returncode == 0, (
        f"exit code {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}"
        f"\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result.stdout
