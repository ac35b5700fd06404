"""Lesson 20 (what shared memory buys): the same bits from all three forms, no messages for the shm ones.

Run under mpiexec at the launch line's 2 ranks and as one process (thread ranks); the
times it prints are not asserted (the machine is shared), the bytes and bits are.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mpirun import REPO, assert_ok, requires_mpi, run_mpi

pytestmark = pytest.mark.timeout(200)
LESSON_20 = REPO / "lessons" / "20_shared_memory.py"
MIB = 2 ** 20


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in ("ring", "shm", "shared", "MPI.Allreduce")}


def check(out: str, megabytes: int) -> None:
    nbytes = megabytes * MIB
    assert f"p = 2 ranks on one host, N = {nbytes:,} bytes of float32" in out, out
    assert "every form gives the same bits as the ring: True" in out, out
    table = rows(out)
    assert table["shm"][:2] == ["0", "0"] and table["shared"][:2] == ["0", "0"], out  # no messages
    assert table["ring"][1] == f"{nbytes:,}", out  # 2(p-1)/p N = N bytes sent per rank at p = 2
    assert re.search(r"shared\s+0\s+0\s+[\d.]+ms.*2\.0 N", out), out


@requires_mpi
def test_lesson_20_under_mpi_prints_bytes_bits_and_the_ratio_to_mpi() -> None:
    out = assert_ok(run_mpi(LESSON_20, n=2, timeout=150, args=["--megabytes", "4"]))
    check(out, 4)
    assert re.search(r"MPI\.Allreduce\s+[\d.]+ms\s+1\.00x", out), out


def test_lesson_20_as_one_process_runs_on_thread_ranks_and_says_its_times_mean_little() -> None:
    done = subprocess.run([sys.executable, str(LESSON_20), "--megabytes", "2"], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    check(done.stdout, 2)
    assert "thread ranks: one process" in done.stdout
