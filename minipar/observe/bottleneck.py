"""``python -m minipar.bottleneck script.py [args]``: where does my script spend its time?

As ``torch.utils.bottleneck``: the script runs twice, as ``__main__`` with its own
arguments --

1. under Python's ``cProfile``: the functions with the most cumulative time (the
   Python view: data loading, the training loop, minipar's own code);
2. under ``minipar.profiler.profile``: the autograd ops and collectives with the most
   self time (the op view) --

after a summary of the environment, and ends by naming the op that dominates. Run it
on a short version of the script (a few steps): both passes run it whole.
"""

from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import runpy
import sys

import numpy

from minipar.observe.profiler import profile


def environment() -> str:
    rows = [("minipar", sys.modules["minipar"].__version__),  # the package this module is part of
            ("Python", platform.python_version()),
            ("NumPy", numpy.__version__), ("cores", str(os.cpu_count())),
            ("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "(unset)"))]
    try:
        import mpi4py

        rows.append(("mpi4py", mpi4py.__version__))
    except ImportError:
        rows.append(("mpi4py", "not installed"))
    return "\n".join(f"  {name:<16}{value}" for name, value in rows)


def _run(script: str, args: list[str]) -> None:
    saved = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None, top: int = 15) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        return 0 if argv else 2
    script, args = argv[0], argv[1:]
    if not os.path.isfile(script):
        print(f"minipar.bottleneck: no such script {script!r}", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    print("-" * 78 + "\nEnvironment summary\n" + "-" * 78)
    print(environment())

    profiler = cProfile.Profile()
    profiler.runcall(_run, script, args)
    listing = io.StringIO()
    pstats.Stats(profiler, stream=listing).sort_stats("cumulative").print_stats(top)
    print("\n" + "-" * 78 + "\ncProfile output: functions by cumulative time\n" + "-" * 78)
    print(listing.getvalue().strip())

    with profile(record_shapes=False) as prof:
        _run(script, args)
    averages = prof.key_averages()
    print("\n" + "-" * 78 + "\nminipar.profiler output: autograd ops and collectives by self time\n"
          + "-" * 78)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=top))
    if averages:
        total = sum(a.self_cpu_time_total for a in averages) or 1.0
        worst = max(averages, key=lambda a: a.self_cpu_time_total)
        print(f"\nThe op that dominates: {worst.key} ({100 * worst.self_cpu_time_total / total:.0f}% of "
              f"the profiled op time, {worst.count} calls)")
    else:
        print("\nNo autograd op or collective ran: the time is all in the Python above.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
