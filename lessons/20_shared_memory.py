"""What shared memory buys: the same all-reduce as messages, through a staging window, and in place.

On one host a message is two copies: the sender's bytes into MPI's shared cells, then
out of them into the receiver's buffer. A ring all-reduce sends 2(p-1)/p N bytes per
rank, so every rank copies about 4(p-1)/p N bytes (and sums (p-1)/p N). Ranks that share
memory can skip the messages and read each other's bytes where they are
(``algorithm="shm"``, DESIGN.md's one exception to "collectives are point-to-point"):

    form (p = 2 here)                       bytes copied or summed per rank
    ring (messages)                         ~4(p-1)/p N copied + (p-1)/p N summed   = 3 N
    shm, any array (shm_pipeline.py)        (p-1)/p N in + N/p out + (p-1)/p N back,
                                            N/p summed from p operands          = 2.5 N
    shm, a shared array (shm_arrays.py)     N read, N written                   = 2 N

The last needs the array to live in the shared window from the start
(``minipar.comm.shared_empty``, PyTorch's "symmetric memory"): nothing is copied in or
out. All three give the same bits (each element is summed in the ring's order). This
lesson shows that, counts the messages each form sends (the message log), and times
them beside ``MPI.Allreduce``:

    mpiexec -n 2 python -m mpi4py lessons/20_shared_memory.py [--megabytes 16]

(``mpiexec -bind-to core -n 2 ...`` pins one rank per core, as MPI benchmarks are run:
unpinned, the scheduler now and then puts both on one core.) Under plain ``python`` it
runs on 2 thread ranks, whose "shared memory" is simply the other thread's array: the
bytes and bits are the same, the times mean little.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

import minipar.comm as mc
from minipar.comm.shm import free_windows

ROUNDS = 15  # calls timed per form, interleaved; the median of the slowest rank is printed


def counted(comm: mc.Communicator, run: Callable[[], object]) -> tuple[int, int]:
    """(messages, bytes) this rank sent during ``run()``, from the message log."""
    with mc.message_log(comm) as log:
        run()
    return len(log), sum(message.nbytes for message in log)


def lesson(comm: mc.Communicator, megabytes: float) -> list[str] | None:
    p = comm.size
    n = int(megabytes * 2**20) // 4
    x = np.random.default_rng(comm.rank).uniform(-1, 1, n).astype(np.float32)
    shared = mc.shared_empty(comm, n, np.float32)  # collective: one segment per rank, in the window
    arrays = {"ring": x.copy(), "shm": x.copy()}

    def fresh(form: str) -> np.ndarray:  # every call starts from x again (sums would grow)
        target = shared if form == "shared" else arrays[form]
        target[...] = x
        return target

    # Timed calls all-reduce their array again and again (no refill inside the timing: the
    # values grow by p each call, 16 calls stay far from float32's range).
    forms: dict[str, Callable[[], object]] = {
        "ring": lambda: mc.allreduce(comm, arrays["ring"], algorithm="ring"),
        "shm": lambda: mc.allreduce(comm, arrays["shm"], algorithm="shm"),
        "shared": lambda: mc.allreduce(comm, shared, algorithm="shm"),
    }
    if comm.backend == "mpi":
        from mpi4py import MPI

        mpi_array = x.copy()
        forms["MPI.Allreduce"] = lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, mpi_array, MPI.SUM)

    # 1. Messages: the ring's are counted; the shared-memory forms send none (their one
    #    empty message round the ring, under the call's tag, is a mismatch check, uncounted).
    ours = [form for form in forms if form != "MPI.Allreduce"]
    traffic = {form: counted(comm, forms[form]) for form in ours}
    # 2. Bits: from the same input, all three forms agree exactly.
    results = {}
    for form in ours:
        fresh(form)
        results[form] = np.array(forms[form]())
    same = all(np.array_equal(results["ring"], result) for result in results.values())
    # 3. Times: interleaved rounds, each call after a barrier, the slowest rank's.
    times: dict[str, list[float]] = {form: [] for form in forms}
    for round_index in range(ROUNDS + 1):  # round 0 warms up (windows made, pages touched)
        for form, run in forms.items():
            comm.barrier()
            start = time.perf_counter()
            run()
            if round_index:
                times[form].append(time.perf_counter() - start)
    slowest = {form: max(mc.allgather(comm, np.array([np.median(t)]), out=np.empty(p)))
               for form, t in times.items()}
    free_windows(comm)  # collective: the shared array goes with the windows
    if comm.rank != 0:
        return None
    nbytes = 4 * n
    touched = {"ring": 3.0, "shm": 2.5, "shared": 2.0}  # x N at p = 2, from the table above
    lines = [f"p = {p} ranks on one host, N = {nbytes:,} bytes of float32; every form gives the same "
             f"bits as the ring: {same}",
             f"{'form':<15}{'messages':>9}{'bytes sent':>14}{'time':>10}{'vs MPI':>8}"
             f"{'bytes touched':>15}{'GB/s of them':>14}"]
    for form, seconds in slowest.items():
        messages, sent = traffic.get(form, (None, None))
        share = f"{touched[form]:.1f} N" if form in touched and p == 2 else ""
        rate = f"{touched[form] * nbytes / seconds / 1e9:.1f}" if share else ""
        versus = f"{seconds / slowest['MPI.Allreduce']:.2f}x" if "MPI.Allreduce" in slowest else ""
        lines.append(f"{form:<15}{'' if messages is None else messages:>9}"
                     f"{'' if sent is None else f'{sent:,}':>14}{seconds * 1e3:>8.2f}ms{versus:>8}"
                     f"{share:>15}{rate:>14}")
    lines.append("A shared array touches the fewest bytes and copies nothing in or out. The staging "
                 "window saves the messages' second copy but waits once per piece, and MPICH's messages "
                 "also go through shared memory, so on one host it runs about as fast as the ring.")
    if comm.backend != "mpi":
        lines.append("(thread ranks: one process, one GIL, no MPI; launch with mpiexec -bind-to core -n 2 "
                     "for times that mean something)")
    load = os.getloadavg()[0]
    lines.append(f"load average at start of printing: {load:.2f} on {os.cpu_count()} cores "
                 "(benchmarks/shm_allreduce.py times the same forms with interquartile ranges)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=16.0)
    args = parser.parse_args()
    comm = mc.world()
    if comm.size > 1:
        lines = lesson(comm, args.megabytes)
    else:
        lines = mc.run_local(lambda c: lesson(c, args.megabytes), 2)[0]
    for line in lines or []:
        print(line)


if __name__ == "__main__":
    main()
