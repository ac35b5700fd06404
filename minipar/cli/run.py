"""``minipar run`` / ``minipar bench``: launch a lesson or benchmark under the venv's mpiexec."""


from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from minipar.cli import lessons
from minipar.cli.lessons import Script


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


def launch_command(script: Path, ranks: int, args: list[str], timeout: float, one_blas_thread: bool = False,
                   cluster: bool = False, hostfile: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment ``run`` uses for ``script`` on ``ranks`` ranks.

    ``OMP_NUM_THREADS=1`` (unless set) for several ranks, and for benchmarks (``one_blas_thread``).
    ``cluster``: spread the ranks over the emulated hosts that are up (``minipar.cluster``);
    ``hostfile``: real hosts, ``mpiexec -f hostfile``. Either way even one rank goes through mpiexec.
    """
    if ranks < 1:
        raise ValueError(f"the number of ranks must be at least 1, got {ranks}")
    env = dict(os.environ)
    env.setdefault("MPIEXEC_TIMEOUT", str(int(timeout)))
    if ranks > 1 or one_blas_thread:
        env.setdefault("OMP_NUM_THREADS", "1")
    if cluster and hostfile:
        raise ValueError(f"--cluster and --hostfile {hostfile} exclude each other: choose one")
    if cluster:
        from minipar import cluster as emulated

        command = emulated.mpiexec_command(ranks, [sys.executable, "-m", "mpi4py", str(script), *args])
        return command, emulated.rank_env(ranks, env)
    if hostfile is not None and not Path(hostfile).is_file():
        raise FileNotFoundError(f"no hostfile {hostfile} (one host a line, 'host:ranks' allowed)")
    if ranks == 1 and hostfile is None:
        return [sys.executable, str(script), *args], env
    if ranks > (os.cpu_count() or 1):
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    hosts = ["-f", str(Path(hostfile).resolve())] if hostfile is not None else []
    command = [str(mpiexec_path()), *hosts, "-n", str(ranks),
               sys.executable, "-m", "mpi4py", str(script), *args]
    return command, env


def _execute(script: Script, ranks: int, args: list[str], timeout: float, one_blas_thread: bool,
             cluster: bool = False, hostfile: str | None = None) -> int:
    command, env = launch_command(script.path, ranks, args, timeout, one_blas_thread, cluster, hostfile)
    shown = " ".join(command).replace(sys.executable, "python").replace(str(lessons.REPO) + os.sep, "")
    shown_env = ("OMP_NUM_THREADS", "MPIEXEC_TIMEOUT", "MPIR_CVAR_ENABLE_HEAVY_YIELD") + (
        ("UCX_TLS", "MPIR_CVAR_NOLOCAL") if cluster else ())
    extra = [f"{k}={env[k]}" for k in shown_env if k in env]
    print(f"$ {' '.join(extra)} {shown}", file=sys.stderr, flush=True)
    try:
        # mpiexec enforces MPIEXEC_TIMEOUT itself; the subprocess deadline backs it up
        return subprocess.run(command, env=env, cwd=lessons.REPO, timeout=float(env["MPIEXEC_TIMEOUT"]) + 30
                              ).returncode
    except subprocess.TimeoutExpired:
        print(f"minipar: {script.path.name} passed its deadline and was stopped", file=sys.stderr)
        return 124


