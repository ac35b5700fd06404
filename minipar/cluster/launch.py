"""Run N MPI ranks across the emulated hosts: mpiexec with a launcher that enters a namespace.

    minipar cluster run -n 4 -- python -m mpi4py lessons/03_ring_allreduce.py
    # = UCX_TLS=tcp mpiexec -launcher ssh -launcher-exec /run/minipar-cluster/enter.sh \\
    #     -localhost 10.213.0.254 -hosts minipar-node0,minipar-node1 -ppn 2 -n 4 python -m mpi4py ...

On a real cluster ``mpiexec`` (MPICH's hydra) starts one proxy per host with
``ssh HOST hydra_pmi_proxy ...``; the proxy connects back to mpiexec and starts
that host's ranks. Here ``-launcher-exec`` replaces ssh by ``enter.sh``
(written by ``up``), which runs the proxy inside the host's namespace under its
own hostname, and ``-localhost`` tells the proxies where mpiexec listens: the
bridge's address, the one address every host can reach.

Ranks are placed in blocks of ``ppn`` per host, host after host (hydra's
``-ppn``): at 2 hosts and ``ppn=2``, ranks 0, 1 on node0 and 2, 3 on node1.

One variable makes the bytes travel over the emulated link. MPICH's UCX
netmod would otherwise notice that every "host" is this one machine and move
bytes through shared memory, never touching the link (a 16 MiB all-reduce then
shows a few KB on the qdisc's counter):

- ``UCX_TLS=tcp``: UCX may use TCP sockets only (no shared memory, no CMA).

Ranks on the same host still talk through MPICH's own shared memory, as on a real
cluster (NVLink or memory inside a node, the network between), and
``Split_type(COMM_TYPE_SHARED)`` groups a host's ranks, so ``allreduce(...,
algorithm="hierarchical")`` can share a window inside the host. Measured, 16 MiB
all-reduce: the qdisc counts the same bytes per host link with or without
``MPIR_CVAR_NOLOCAL=1`` (1.05 N at p = 2 x 1, 1.57 N for the flat ring at 2 x 2,
N and 4.7 % headers), but with it every intra-host message crosses TCP loopback
(~30 ms per 8 MiB stage here) and every rank is its own node. Pass
``env={"MPIR_CVAR_NOLOCAL": "1"}`` to ``run`` to measure that case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from minipar.cluster import hosts as cluster_hosts

LINK_ENV = {"UCX_TLS": "tcp"}
#: MPICH waits that sleep after every poll instead of spinning: a rank's communication thread
#: then leaves its core to compute and to the kernel's TCP work (lesson 18, benchmarks/cluster_ddp.py)
POLITE_WAITS = {"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1", "MPIR_CVAR_POLLS_BEFORE_YIELD": "1"}


def find_mpiexec() -> Path:
    """The ``mpiexec`` beside this Python (the venv's MPICH), else the first on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(f"no mpiexec at {beside} nor on PATH: pip install -e \".[mpi]\"")
    return Path(found)


def rank_env(n: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus what forces TCP over the links.

    Also ``OMP_NUM_THREADS=1`` unless set: every emulated host shares this machine's
    cores, so a BLAS pool per rank as wide as the machine oversubscribes them (the
    lessons' MLP step measured 17x slower with the default pools, 2 ranks on 2 cores);
    and ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` when the ``n`` ranks outnumber the cores
    (MPICH would busy-poll).
    """
    env = dict(os.environ if base is None else base)
    env.update(LINK_ENV)
    env.setdefault("OMP_NUM_THREADS", "1")
    if n > (os.cpu_count() or 1):
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    return env


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def mpiexec_command(n: int, command: list[str], ppn: int | None = None,
                    hosts: list[str] | None = None) -> list[str]:
    """The mpiexec line that runs ``command`` as ``n`` ranks over the hosts that are up.

    ``ppn`` ranks per host (default: ``ceil(n / hosts)``, so the ranks spread
    evenly); ``hosts``: namespaces to use (default: all that are up).
    """
    n = _count("n", n)
    if not command or not all(isinstance(word, str) for word in command):
        raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
    if hosts is None:
        hosts = cluster_hosts.namespaces()
    if not hosts:
        raise RuntimeError("no emulated cluster is up: run `minipar cluster up --hosts 2` first (as root)")
    enter = cluster_hosts.STATE_DIR / "enter.sh"
    if not enter.exists():
        raise RuntimeError(f"{enter} is missing (the cluster was not made by `minipar cluster up`): "
                           "run `minipar cluster up` again")
    ppn = -(-n // len(hosts)) if ppn is None else _count("ppn", ppn)
    return [str(find_mpiexec()), "-launcher", "ssh", "-launcher-exec", str(enter),
            "-localhost", cluster_hosts.BRIDGE_ADDRESS, "-hosts", ",".join(hosts),
            "-ppn", str(ppn), "-n", str(n), *command]


def run(n: int, command: list[str], ppn: int | None = None, env: dict[str, str] | None = None,
        timeout: float = 600.0, capture_output: bool = False, cwd: str | os.PathLike[str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``n`` MPI ranks on the cluster; the finished process (never hangs).

    ``timeout`` seconds become ``MPIEXEC_TIMEOUT`` (mpiexec kills the job), and the
    process itself is killed 15 s later should mpiexec not exit. ``env`` entries
    override the launch environment (``rank_env``).
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    launch = mpiexec_command(n, command, ppn)
    launch_env = rank_env(n)
    launch_env["MPIEXEC_TIMEOUT"] = str(max(1, round(timeout)))
    launch_env.update(env or {})
    return subprocess.run(launch, env=launch_env, capture_output=capture_output, text=True,
                          timeout=timeout + 15, cwd=cwd)
