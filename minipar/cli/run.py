"""``minipar run`` / ``minipar bench``: launch a lesson or benchmark under the venv's mpiexec."""


from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from minipar.cli import lessons
from minipar.cli.lessons import Script
from minipar.comm.errors import check_timeout


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


_FATAL_SIGNALS = (signal.SIGABRT, signal.SIGBUS, signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM)


def exit_reason(code: int) -> str:
    """Words for a job's exit code. A rank killed by signal N ends MPICH's mpiexec with code N
    (``EXIT CODE: 9`` for SIGKILL); a shell reports 128 + N; Python's subprocess -N."""
    if code == 124:
        return "it passed its deadline (exit code 124)"
    if code < 0:
        return f"it was killed by {_signal_name(-code)} (exit code {code})"
    number = code - 128 if code > 128 else code
    if number in _FATAL_SIGNALS:
        return f"exit code {code} ({_signal_name(number)} if a rank was killed by a signal)"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def execute_with_restarts(script: Script, ranks: int, args: list[str], timeout: float,
                          one_blas_thread: bool, max_restarts: int = 0,
                          restart_ranks: int | None = None, cluster: bool = False,
                          hostfile: str | None = None) -> int:
    """Run the job; while it fails, relaunch it (on ``restart_ranks`` ranks, if given) up to
    ``max_restarts`` times. Launch k sees ``MINIPAR_RESTART_COUNT=k``; the script resumes
    from its own snapshot (``minipar.elastic``). Returns the last launch's exit code."""
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"--max-restarts must be a non-negative integer, got {max_restarts!r}")
    if restart_ranks is not None and restart_ranks < 1:
        raise ValueError(f"--restart-ranks must be at least 1, got {restart_ranks}")
    code, before = 0, os.environ.get("MINIPAR_RESTART_COUNT")
    for attempt in range(max_restarts + 1):
        os.environ["MINIPAR_RESTART_COUNT"] = str(attempt)  # launch_command copies os.environ
        try:
            code = _execute(script, ranks, args, timeout, one_blas_thread, cluster, hostfile)
        finally:
            if before is None:
                del os.environ["MINIPAR_RESTART_COUNT"]
            else:
                os.environ["MINIPAR_RESTART_COUNT"] = before
        if code == 0 or attempt == max_restarts:
            break
        previous, ranks = ranks, restart_ranks or ranks
        print(f"minipar: restart {attempt + 1} of {max_restarts}: the job on {previous} ranks failed, "
              f"{exit_reason(code)}; relaunching on {ranks} ranks", file=sys.stderr, flush=True)
    if code != 0 and max_restarts:
        print(f"minipar: giving up after {max_restarts} restarts: {exit_reason(code)}", file=sys.stderr)
    return code


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
        deadline = float(env["MPIEXEC_TIMEOUT"]) + 30 if env.get("MPIEXEC_TIMEOUT") else None
        return subprocess.run(command, env=env, cwd=lessons.REPO, timeout=deadline).returncode
    except subprocess.TimeoutExpired:
        print(f"minipar: {script.path.name} passed its deadline and was stopped", file=sys.stderr)
        return 124


