"""``minipar cluster``: hosts on this machine (network namespaces) joined by rate-limited links.

    minipar cluster up --hosts 2 --gbit 2        # node0, node1; 2 Gbit/s each way (root)
    minipar cluster status                       # hosts, addresses, rates, bytes each link carried
    minipar cluster run -n 4 -- python -m mpi4py lessons/03_ring_allreduce.py   # 2 ranks per host
    minipar cluster down                         # remove it all (safe to repeat)

Needs root and ``ip``, ``tc`` (iproute2) and ``unshare`` (util-linux); without
them every subcommand says what is missing and exits with code 2.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from minipar import cluster


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``cluster up|status|down|run`` on the ``minipar`` parser's subcommands."""
    parser = commands.add_parser("cluster", help="emulated hosts with rate-limited links (root)")
    actions = parser.add_subparsers(dest="action", required=True)
    start = actions.add_parser("up", help="create the hosts (tears down any leftovers first)")
    start.add_argument("--hosts", type=int, required=True, help="number of hosts")
    start.add_argument("--gbit", type=float, default=None,
                       help="link rate, Gbit/s each way (default: unlimited)")
    start.add_argument("--latency-us", type=float, default=None,
                       help="added latency per packet, microseconds (needs netem in the kernel)")
    actions.add_parser("status", help="hosts, addresses, rates and the bytes each link carried")
    actions.add_parser("down", help="remove the hosts, links and files that up made")
    launch = actions.add_parser("run", help="run a command (after --) as N MPI ranks over the hosts")
    launch.add_argument("-n", type=int, required=True, help="number of ranks")
    launch.add_argument("--ppn", type=int, default=None,
                        help="ranks per host, in blocks host after host (default: ceil(n / hosts))")
    launch.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before the job is killed (MPIEXEC_TIMEOUT), default 600")


def run_cluster(options: argparse.Namespace, passthrough: list[str]) -> int:
    """Carry out ``minipar cluster ACTION``; the exit code (2: cannot, with the reason on stderr)."""
    try:
        if options.action == "up":
            found = cluster.up(options.hosts, gbit=options.gbit, latency_us=options.latency_us)
            print(found.table())
            return 0
        if options.action == "down":
            removed = cluster.down()
            print("removed " + ", ".join(removed) if removed else "nothing to remove: no cluster is up")
            return 0
        if options.action == "status":
            found = cluster.status()
            print(found.table() if found else "no cluster is up (minipar cluster up --hosts 2)")
            return 0
        if not passthrough:
            print("minipar: cluster run needs a command after --, e.g. "
                  "minipar cluster run -n 4 -- python -m mpi4py script.py", file=sys.stderr)
            return 2
        cluster.require_tools()
        command = cluster.mpiexec_command(options.n, passthrough, options.ppn)
        shown = " ".join(f"{name}={value}" for name, value in cluster.LINK_ENV.items())
        print(f"$ {shown} {shlex.join(command)}", file=sys.stderr, flush=True)
        return cluster.run(options.n, passthrough, options.ppn, timeout=options.timeout).returncode
    except (cluster.ClusterUnavailable, RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"minipar: {error}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired:
        print(f"minipar: the job passed its {options.timeout:g} s deadline and was stopped", file=sys.stderr)
        return 124
