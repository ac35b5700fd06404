"""``minipar cost fit``: fit the cost model that ``allreduce(algorithm="auto")`` reads.

    minipar cost fit                  # this host: 2 ranks, the intra-host link (a few seconds)
    minipar cost fit --cluster        # the emulated cluster that is up: intra- and inter-host links
    minipar cost fit --out m.json     # somewhere else than ~/.cache/minipar/machine.json
    minipar cost show                 # what the cache holds, and what "auto" picks from it

The measuring is ``minipar/observe/cost/calibrate.py``; the file format and the
fallback without a file are ``minipar/comm/cost_cache.py`` and ``auto.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``cost fit|show`` on the ``minipar`` parser's subcommands."""
    parser = commands.add_parser("cost", help="fit the alpha-beta cost model 'auto' all-reduce reads")
    actions = parser.add_subparsers(dest="action", required=True)
    fit = actions.add_parser("fit", help="measure links, gamma and per-call overhead; write the JSON cache")
    fit.add_argument("--cluster", action="store_true",
                     help="on the emulated cluster that is up: also the link between hosts")
    fit.add_argument("--out", default=None, help="cache file (default: MINIPAR_COST_CACHE or "
                     "~/.cache/minipar/machine.json)")
    fit.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians over them")
    show = actions.add_parser("show", help="print the cache and what 'auto' picks at p = 2, 4")
    show.add_argument("--cache", default=None, help="cache file (default: as for fit)")


def describe(data: dict, path: Path) -> str:
    """The fitted model in words, and the algorithm "auto" picks for a few sizes."""
    from minipar.comm import auto

    model = auto.model_from_json(data)
    lines = [f"{path}: fitted on {data.get('where', '?')} at {data.get('fitted', '?')}, "
             f"load average {data.get('load_average', '?')}, {data.get('cores', '?')} cores"]
    for kind, link in (("intra-host", model.intra), ("inter-host", model.inter)):
        if link is not None:
            form = "max(alpha, n beta): paced" if link.paced else "alpha + n beta"
            lines.append(f"  {kind:<10} alpha {link.alpha * 1e6:7.2f} us, beta {link.beta * 1e12:8.1f} ps/B "
                         f"({1e-9 / link.beta:6.2f} GB/s), message = {form}")
    lines.append(f"  gamma {model.gamma * 1e12:.1f} ps/B; overhead per call: " + ", ".join(
        f"{name} {seconds * 1e6:.1f} us" for name, seconds in model.overhead.items()))
    layouts = {"p=2, one host": [0, 0], "p=4, one host": [0] * 4}
    if model.inter is not None:
        layouts |= {"p=2, 2 hosts": [0, 1], "p=4, 2 hosts": [0, 0, 1, 1]}
    sizes = {"4 KiB": 4096, "64 KiB": 65536, "1 MiB": 2**20, "16 MiB": 2**24}
    lines.append(f"  'auto' picks:  {'':<14}" + "".join(f"{label:>10}" for label in sizes))
    for name, hosts in layouts.items():
        picks = [auto.best(model, hosts, n) for n in sizes.values()]
        short = {"ring": "ring", "recursive_doubling": "rec.dbl", "hierarchical": "hier"}
        lines.append(f"                {name:<14}" + "".join(f"{short[p]:>10}" for p in picks))
    return "\n".join(lines)


def run_cost(options: argparse.Namespace) -> int:
    """Carry out ``minipar cost ACTION``; the exit code (2: cannot, with the reason on stderr)."""
    from minipar.comm.auto import cache_path

    try:
        if options.action == "fit":
            cores = os.cpu_count() or 1
            if cores < 2:
                raise ValueError(f"the fit runs 2 ranks, each on a core of its own; this machine has {cores}")
            from minipar.observe.cost.calibrate import fit_cache

            path = Path(options.out) if options.out else cache_path()
            where = "the emulated cluster" if options.cluster else "this host"
            print(f"fitting on {where} (2 ranks per run, load average {os.getloadavg()[0]:.2f}) ...",
                  file=sys.stderr, flush=True)
            data = fit_cache(path, cluster=options.cluster, rounds=options.rounds)
            print(describe(data, path))
            return 0
        path = Path(options.cache) if options.cache else cache_path()
        print(describe(json.loads(path.read_text()), path))
        return 0
    except (OSError, ValueError, RuntimeError) as error:
        print(f"minipar: {error}", file=sys.stderr)
        return 2
