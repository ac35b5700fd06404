"""What ``check_replicas`` costs per call on the MLP 784-1024³-10 (11.6 MB of float32).

    mpiexec -n 2 python -m mpi4py benchmarks/replicas.py [--reps 20]

Per call: hashing every parameter and buffer (BLAKE2b, 8-byte digests) and one
all-gather of 8 bytes per array and rank. Printed beside one DDP training step of the
same model, so ``check_every=N`` costs (check / step) / N of the training time.
Medians of ``--reps`` calls, one BLAS thread per rank.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import minipar  # noqa: E402
from minipar import nn, optim  # noqa: E402
from minipar.comm import world  # noqa: E402
from minipar.nn import functional as F  # noqa: E402
from minipar.parallel import DistributedDataParallel, check_replicas  # noqa: E402
from minipar.parallel.replicas import _digest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    reps = parser.parse_args().reps
    comm = world()
    minipar.manual_seed(0)
    sizes = (784, 1024, 1024, 1024, 10)
    layers = [layer for a, b in zip(sizes, sizes[1:]) for layer in (nn.Linear(a, b), nn.ReLU())]
    model = nn.Sequential(*layers[:-1])
    ddp = DistributedDataParallel(model, comm=comm)
    opt = optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(comm.rank)
    x, y = minipar.tensor(rng.standard_normal((64, 784)).astype(np.float32)), rng.integers(0, 10, 64)

    def timed(fn: object) -> float:
        comm.barrier()
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        return time.perf_counter() - start

    def train_step() -> None:
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()

    train_step()
    steps = [timed(train_step) for _ in range(reps)]
    checks = [timed(lambda: check_replicas(model, comm)) for _ in range(reps)]
    hashes = [timed(lambda: [_digest(p.array) for p in model.parameters()]) for _ in range(reps)]
    if comm.rank == 0:
        megabytes = sum(p.array.nbytes for p in model.parameters()) / 1e6
        step, check, digest = (1e3 * statistics.median(v) for v in (steps, checks, hashes))
        print(f"MLP 784-1024³-10, {megabytes:.1f} MB, p = {comm.size}, median of {reps}:")
        print(f"  DDP training step            {step:8.2f} ms")
        print(f"  check_replicas, one call     {check:8.2f} ms  ({check / step:.2f} steps; "
              f"check_every=100 adds {100 * check / step / 100:.2f}%)")
        print(f"    of which hashing           {digest:8.2f} ms  ({megabytes / digest:.2f} GB/s)")


if __name__ == "__main__":
    main()
