"""``minipar run`` / ``minipar bench``: launch a lesson or benchmark under the venv's mpiexec."""


from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from minipar.cli import lessons
from minipar.cli.lessons import Script
from minipar.comm.communicator import check_timeout


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
    ``timeout`` 0 or inf: no deadline (``MPIEXEC_TIMEOUT`` left unset); negative: ValueError.
    """
    if ranks < 1:
        raise ValueError(f"the number of ranks must be at least 1, got {ranks}")
    seconds = check_timeout(timeout, "--timeout")
    env = dict(os.environ)
    if seconds is not None:
        env.setdefault("MPIEXEC_TIMEOUT", str(max(1, round(seconds))))
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
    shown = " ".join(command).replace(sys.executable, "python").replace(str(lessons.REPO) + os.sep, "")
    shown_env = ("OMP_NUM_THREADS", "MPIEXEC_TIMEOUT", "MPIR_CVAR_ENABLE_HEAVY_YIELD")
    extra = [f"{k}={env[k]}" for k in shown_env if k in env]
    print(f"$ {' '.join(extra)} {shown}", file=sys.stderr, flush=True)
    try:
        # mpiexec enforces MPIEXEC_TIMEOUT itself; the subprocess deadline backs it up
        deadline = float(env["MPIEXEC_TIMEOUT"]) + 30 if env.get("MPIEXEC_TIMEOUT") else None
        return subprocess.run(command, env=env, cwd=lessons.REPO, timeout=deadline).returncode
    except subprocess.TimeoutExpired:
        print(f"minipar: {script.path.name} passed its deadline and was stopped", file=sys.stderr)
        return 124


