"""The ``minipar`` command: list and run the lessons, describe the install, run benchmarks.

    minipar lessons                     # number, name, ranks, what each lesson shows
    minipar run 3                       # = mpiexec -n 4 python -m mpi4py lessons/03_ring_allreduce.py
    minipar run ring_allreduce -n 2 -- --size 1000000    # after --: the lesson's own arguments
    minipar run train.py -n 3 --max-restarts 2 -- DIR    # a script; relaunched when it fails
    minipar info                        # minipar, NumPy, mpi4py, MPI library, CuPy/GPU
    minipar bench autograd_step         # python benchmarks/autograd_step.py
    minipar cluster up --hosts 2 --gbit 2   # emulated hosts (root); then run ... --cluster
    minipar run 3 -n 4 --cluster        # the lesson's ranks spread over those hosts
    minipar run 3 -n 8 --hostfile hosts # real machines: mpiexec -f hosts
    minipar cost fit [--cluster]        # fit the cost model that all-reduce "auto" reads

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
import sys
from pathlib import Path

from minipar.cli.cluster import add_parser as add_cluster_parser
from minipar.cli.cluster import run_cluster
from minipar.cli.cost import add_parser as add_cost_parser
from minipar.cli.cost import run_cost
from minipar.cli.info import _info
from minipar.cli.lessons import (
    Script,
    _describe,
    discover_benchmarks,
    discover_lessons,
    find_lesson,
    format_table,
    parse_ranks,
)
from minipar.cli.run import execute_with_restarts, launch_command, mpiexec_path

__all__ = ["Script", "discover_benchmarks", "discover_lessons", "find_lesson", "format_table",
           "launch_command", "main", "mpiexec_path", "parse_ranks"]


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
        sub.add_argument("--max-restarts", type=int, default=0,
                         help="relaunch a failed job up to K times (the script resumes: minipar.elastic)")
        sub.add_argument("--restart-ranks", type=int, default=None,
                         help="ranks for the relaunches (default: the same as -n)")
        sub.add_argument("--cluster", action="store_true",
                         help="spread the ranks over the emulated hosts (minipar cluster up)")
        sub.add_argument("--hostfile", default=None, help="real hosts: passed to mpiexec as -f FILE")
    add_cluster_parser(commands)
    add_cost_parser(commands)
    options = parser.parse_args(argv)
    if options.command == "cluster":
        return run_cluster(options, passthrough)
    if options.command == "cost":
        return run_cost(options)
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
            if script is None and options.lesson.endswith(".py") and Path(options.lesson).is_file():
                path = Path(options.lesson).resolve()  # a script of your own
                script = _describe(path, None, path.stem)
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
        return execute_with_restarts(script, ranks, passthrough, options.timeout, options.command == "bench",
                                     options.max_restarts, options.restart_ranks, options.cluster,
                                     options.hostfile)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"minipar: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
