"""One optimizer step, readable (whole arrays) vs cache-blocked, on the MLP 784-1024³-10 (11.6 MB).

    OMP_NUM_THREADS=1 python benchmarks/optimizer_step.py [--reps 40]

The two forms do the same float operations in the same order (bit-identical,
``tests/test_optim.py``); the blocked one streams each array through main memory
about once instead of once per elementwise pass, without gradient-sized temporaries.
Contenders are interleaved in a random order each repetition; medians reported.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

import minipar
from minipar import nn, optim


def make_params() -> list[nn.Parameter]:
    minipar.manual_seed(0)
    sizes = (784, 1024, 1024, 1024, 10)
    model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    for p in params:
        p.grad = minipar.tensor(rng.standard_normal(p.shape).astype(np.float32))
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    reps = parser.parse_args().reps
    configs = {"SGD momentum=0.9": (optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
               "Adam": (optim.Adam, {"lr": 1e-4})}
    contenders = {}
    for name, (cls, kwargs) in configs.items():
        for blocked in (False, True):
            opt = cls(make_params(), **kwargs, blocked=blocked)
            opt.step()  # the first step allocates the state
            contenders[(name, blocked)] = opt
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in contenders}
    for _ in range(reps):
        for key in random.sample(list(contenders), len(contenders)):
            start = time.perf_counter()
            contenders[key].step()
            times[key].append(time.perf_counter() - start)
    megabytes = sum(p.array.nbytes for p in make_params()) / 1e6
    print(f"{megabytes:.1f} MB of float32 parameters, median of {reps} interleaved steps\n")
    print(f"{'optimizer':<18}{'readable':>11}{'blocked':>11}{'readable/blocked':>18}")
    for name in configs:
        readable = statistics.median(times[(name, False)]) * 1e3
        blocked = statistics.median(times[(name, True)]) * 1e3
        print(f"{name:<18}{readable:>9.2f}ms{blocked:>9.2f}ms{readable / blocked:>17.2f}x")


if __name__ == "__main__":
    main()
