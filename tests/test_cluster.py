"""minipar across hosts: 2 emulated hosts x 2 ranks, links at 2 Gbit/s (minipar.cluster).

A session fixture brings the cluster up (after tearing down any leftovers) and
down again however the tests end. The collective and DDP checks run in one
launch of this very file on the cluster (``__main__`` below prints one
``OK <check>`` line per check on rank 0), because each launch costs a second:

    minipar cluster up --hosts 2 --gbit 2
    minipar cluster run -n 4 -- python -m mpi4py tests/test_cluster.py    # the same checks by hand

Needs root and ip / tc / unshare (skipped otherwise; CI runs as root, so CI runs them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulated_cluster import GBIT, HOSTS, PER_HOST, requires_cluster, why_not  # noqa: F401
from mpirun import HAS_MPI, REPO

from minipar import cluster
from minipar.cli import main
from minipar.comm.collectives import ALGORITHMS as ALGORITHM_TABLE

pytestmark = pytest.mark.timeout(120)  # besides each job's own MPIEXEC_TIMEOUT
RANKS = HOSTS * PER_HOST
ALGORITHMS = sorted(ALGORITHM_TABLE) + ["auto"]


def run_on_cluster(code_or_file: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m mpi4py`` on RANKS ranks, PER_HOST per host, the repository on PYTHONPATH."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mpi4py"]
    command += [code_or_file] if code_or_file.endswith(".py") else ["-c", code_or_file]
    return cluster.run(RANKS, command, ppn=PER_HOST, env=env, timeout=timeout,
                       capture_output=True, cwd=REPO)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def report(emulated_cluster: cluster.ClusterStatus) -> str:
    """Rank 0's output of one launch of this file on the cluster."""
    out = ok(run_on_cluster(__file__, timeout=90))
    assert f"ALL CHECKS RAN p={RANKS}" in out, out
    return out


def check_passed(report: str, name: str) -> None:
    lines = [line for line in report.splitlines() if line.split(" ")[1:2] == [name]]
    assert lines, f"check {name!r} did not report:\n{report}"
    assert lines[0].startswith("OK "), "\n".join(lines)


# ----- the pytest side --------------------------------------------------------------------------
@requires_cluster
def test_up_builds_the_hosts_with_their_addresses_and_rate(emulated_cluster: cluster.ClusterStatus) -> None:
    assert [host.name for host in emulated_cluster.hosts] == ["node0", "node1"]
    subnet = cluster.hosts.SUBNET  # 10.213.0 for the default cluster (MINIPAR_CLUSTER_ID=0)
    assert [host.address for host in emulated_cluster.hosts] == [f"{subnet}.1", f"{subnet}.2"]
    assert all(host.rate_bits == GBIT * 1e9 for host in emulated_cluster.hosts)


@requires_cluster
def test_each_host_has_its_own_processor_name_and_ranks_come_in_blocks(report: str) -> None:
    check_passed(report, "processor_names")


@requires_cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreduce_across_hosts_matches_the_closed_form(report: str, algorithm: str) -> None:
    check_passed(report, f"allreduce[{algorithm}]")


@requires_cluster
@pytest.mark.parametrize("name", ["reduce_scatter", "allgather", "broadcast"])
def test_sharded_collectives_across_hosts_match_closed_forms(report: str, name: str) -> None:
    check_passed(report, name)


@requires_cluster
def test_ddp_across_hosts_matches_one_process_after_10_steps(report: str) -> None:
    check_passed(report, "ddp")


@requires_cluster
def test_ring_allreduce_bytes_cross_the_rate_limited_link(emulated_cluster: cluster.ClusterStatus) -> None:
    """node0's uplink carries at least the ring's 2(p-1)/p * N bytes of a 16 MiB all-reduce.

    Ranks 0, 1 are on node0 and 2, 3 on node1: rank 1 sends every one of its ring
    messages, 2(p-1)/p * N bytes, to rank 2 on the other host (and rank 3 to rank 0).
    """
    nbytes = 16 * 2**20
    before = cluster.status()
    ok(run_on_cluster(
        "import numpy as np, minipar.comm as mc; comm = mc.world(); "
        f"x = np.full({nbytes // 4}, comm.rank + 1.0, dtype=np.float32); "
        "mc.allreduce(comm, x, algorithm='ring'); assert (x == 10.0).all()"))
    after = cluster.status()
    assert before is not None and after is not None
    ring_bytes = 2 * (RANKS - 1) / RANKS * nbytes
    for was, now in zip(before.hosts, after.hosts):
        assert now.sent_bytes - was.sent_bytes >= ring_bytes, (now.name, now.sent_bytes - was.sent_bytes)
        assert now.received_bytes - was.received_bytes >= ring_bytes


@requires_cluster
def test_a_rank_killed_on_one_host_ends_the_whole_job(emulated_cluster: cluster.ClusterStatus) -> None:
    """Rank 3 (node1) SIGKILLs itself while the others wait for it; mpiexec must end them all, on both hosts.

    The deadline is MPIEXEC_TIMEOUT = 60 s: a job still waiting then would be a
    hang. How long the ending took is printed (``pytest -s``), not asserted.
    """
    deadline = 60.0
    done = run_on_cluster(textwrap.dedent("""
        import os, signal, time
        from mpi4py import MPI
        world = MPI.COMM_WORLD
        world.Barrier()
        if world.rank == 3:
            print("KILLED AT", time.time(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        world.recv(source=3)  # never comes: only mpiexec ending the job stops this
    """), timeout=deadline)
    ended = time.time()
    match = re.search(r"KILLED AT ([0-9.]+)", done.stdout)
    assert match, f"rank 3 never reached its kill\n{done.stdout}\n{done.stderr}"
    assert done.returncode != 0, "a job with a killed rank must not succeed"
    took = ended - float(match.group(1))
    print(f"\njob ended {took:.2f} s after rank 3 was killed (deadline {deadline:g} s)")
    assert took < deadline and "TIMED OUT" not in done.stderr.upper(), done.stderr[-2000:]
    give_up = time.monotonic() + 10.0  # a rank mpiexec killed may wait a moment to be reaped
    while (left := living_processes(emulated_cluster)) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert not left, f"processes still running on the hosts after the job ended: {left}"


@requires_cluster
def test_ranks_ending_at_different_times_leave_no_message_unmatched(
        emulated_cluster: cluster.ClusterStatus) -> None:
    """Each rank's goodbye (the watchdog's departure note) is received, not left to MPI_Finalize:
    over TCP, UCX names every unmatched message on stderr, which a learner would read as a bug."""
    done = run_on_cluster(textwrap.dedent("""
        import time
        import numpy as np
        import minipar.comm as mc
        comm = mc.world()
        mc.allreduce(comm, np.ones(1000), algorithm="ring")
        time.sleep(0.5 * (comm.rank == 3))  # one rank ends later than the others
        if comm.rank == 0:
            print("DONE", flush=True)
    """))
    assert ok(done).count("DONE") == 1  # rank 0 prints; UCX writes its warnings to stdout
    both = done.stdout + done.stderr
    assert "was not matched" not in both, both[-2000:]


def living_processes(found: cluster.ClusterStatus) -> dict[str, list[str]]:
    """Per host, the processes in its namespace that are not zombies (dead, not yet reaped)."""
    living = {}
    for host in found.hosts:
        pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                continue  # gone while we looked
            if state != "Z":
                living.setdefault(host.namespace, []).append(pid)
    return living


@requires_cluster
def test_down_removes_everything_and_is_idempotent_and_up_survives_leftovers() -> None:
    cluster.down()
    names = cluster.hosts
    for leftover in (["netns", "add", f"{names.NAMESPACE_PREFIX}0"],
                     ["link", "add", names.BRIDGE, "type", "bridge"]):
        subprocess.run(["ip", *leftover], check=True)  # what a crashed run may leave behind
    cluster.up(1)
    assert cluster.down() and cluster.status() is None
    assert cluster.down() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"{names.VETH_PREFIX}" not in links and f"{names.BRIDGE}" not in links
    assert not names.STATE_DIR.exists()
    cluster.up(HOSTS, gbit=GBIT)  # the session's cluster again, for any test that runs after this one


def test_cluster_commands_say_root_is_needed_when_not_root(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for argv in (["cluster", "up", "--hosts", "2"], ["cluster", "status"], ["cluster", "down"],
                 ["cluster", "run", "-n", "2", "--", "hostname"]):
        assert main(argv) == 2
        assert "needs root" in capsys.readouterr().err


def test_cluster_commands_name_the_missing_tool_and_its_package(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster.hosts.shutil, "which", lambda tool: None if tool == "tc" else "/bin/" + tool)
    assert main(["cluster", "up", "--hosts", "2"]) == 2
    assert "tc (Debian package iproute2)" in capsys.readouterr().err


@pytest.mark.parametrize("hosts", [0, -1, 2.5, "2", True])
def test_up_rejects_a_bad_host_count_naming_it(hosts: Any) -> None:
    with pytest.raises(ValueError, match="hosts must be an int"):
        cluster.up(hosts)


@pytest.mark.skipif(not HAS_MPI, reason="needs the venv's mpiexec")
def test_mpiexec_command_places_ranks_in_blocks_of_ppn_per_host(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.hosts, "STATE_DIR", tmp_path)
    (tmp_path / "enter.sh").write_text("")
    line = cluster.mpiexec_command(5, ["python", "x.py"], hosts=["minipar-node0", "minipar-node1"])
    assert line[1:] == ["-launcher", "ssh", "-launcher-exec", str(tmp_path / "enter.sh"), "-localhost",
                        cluster.BRIDGE_ADDRESS, "-hosts", "minipar-node0,minipar-node1", "-ppn", "3",
                        "-n", "5", "python", "x.py"]
    with pytest.raises(ValueError, match="ppn must be a positive int, got 0"):
        cluster.mpiexec_command(2, ["python"], ppn=0, hosts=["minipar-node0"])


def test_rank_env_forces_tcp_and_one_blas_thread_per_rank_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.launch.os, "cpu_count", lambda: 2)
    env = cluster.rank_env(2, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "UCX_TLS": "tcp", "OMP_NUM_THREADS": "1"}  # 2 ranks, 2 cores: no yield
    assert cluster.rank_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice stays
    assert cluster.rank_env(3, {})["MPIR_CVAR_ENABLE_HEAVY_YIELD"] == "1"  # more ranks than cores


# ----- the MPI side: run under mpiexec on the cluster --------------------------------------------
def wrap_ddp(model: Any, comm: Any) -> Any:
    """The one place this file builds DistributedDataParallel (its signature may gain keywords)."""
    from minipar.parallel import DistributedDataParallel

    return DistributedDataParallel(model, comm=comm)


def train(comm: Any | None, steps: int = 10) -> list[np.ndarray]:
    """SGD-momentum on a 6-12-3 MLP: this rank's share of the batch under DDP, or (comm None) all of it."""
    import minipar
    from minipar import nn, optim
    from minipar.nn import functional as F

    rng = np.random.default_rng(7)
    x_all, y_all = rng.normal(size=(24, 6)), rng.integers(0, 3, 24)
    minipar.manual_seed(0)
    model: Any = nn.Sequential(nn.Linear(6, 12, dtype=np.float64), nn.ReLU(),
                               nn.Linear(12, 3, dtype=np.float64))
    inner = model
    x, y = x_all, y_all
    if comm is not None:
        model = wrap_ddp(model, comm)
        x, y = np.array_split(x_all, comm.size)[comm.rank], np.array_split(y_all, comm.size)[comm.rank]
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(minipar.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [np.array(value, copy=True) for value in inner.state_dict().values()]


def _main() -> None:
    from mpi4py import MPI

    import minipar.comm as mc

    comm, world = mc.world(), MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    failures: dict[str, list[str]] = {}

    def check(name: str, passed: bool, detail: str = "") -> None:
        failures.setdefault(name, [])
        if not passed:
            failures[name].append(f"rank {rank}: {detail}")

    names = world.allgather(MPI.Get_processor_name())
    expected_names = [f"node{r // PER_HOST}" for r in range(p)]
    check("processor_names", names == expected_names, f"{names}, expected {expected_names}")

    for algorithm in ALGORITHMS:
        for dtype in (np.float32, np.float64, np.int64):
            for n in (0, 1, p - 1, p + 1, 1000, 300_007):
                base = (np.arange(n) % 1000).astype(dtype)  # exact in every dtype
                for op, expected in (("sum", (p * (p + 1) // 2) * base), ("max", p * base), ("min", base)):
                    x = (rank + 1) * base
                    got = mc.allreduce(comm, x, op=op, algorithm=algorithm)
                    check(f"allreduce[{algorithm}]", got is x and np.array_equal(x, expected),
                          f"{op} {np.dtype(dtype)} n={n}")
    for n in (0, 1, p + 1, 1003):
        base = (np.arange(n) % 1000).astype(np.float64)
        shard = mc.reduce_scatter(comm, (rank + 1) * base)
        check("reduce_scatter", np.array_equal(shard, np.array_split((p * (p + 1) // 2) * base, p)[rank]),
              f"n={n}")
        full = mc.allgather(comm, np.array_split(base, p)[rank].copy())
        check("allgather", np.array_equal(full, base), f"n={n}")
        for root in range(p):
            x = base + 7 if rank == root else np.zeros(n)
            mc.broadcast(comm, x, root=root)
            check("broadcast", np.array_equal(x, base + 7), f"root={root} n={n}")

    got, reference = train(comm), train(None)
    close = all(np.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(got, reference))
    flat = np.concatenate([a.ravel() for a in got])
    same = all(np.array_equal(flat, other) for other in world.allgather(flat))
    check("ddp", close and same, f"matches one process: {close}; bit-identical replicas: {same}")

    everything = world.gather(failures, root=0)
    if rank == 0:
        for name in failures:
            problems = [item for per_rank in everything for item in per_rank.get(name, [])]
            print(("OK " if not problems else "FAIL ") + name + " " + "; ".join(problems[:5]))
        print(f"ALL CHECKS RAN p={p}", flush=True)


if __name__ == "__main__":
    _main()


@pytest.mark.parametrize("value", ["-1", "100", "x", "1.5"])
def test_a_bad_cluster_id_is_named(value: str) -> None:
    script = "import minipar.cluster.hosts"
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "MINIPAR_CLUSTER_ID": value},
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert f"MINIPAR_CLUSTER_ID must be an integer from 0 to 99, got {value!r}" in done.stderr


def test_clusters_side_by_side_have_names_of_their_own() -> None:
    script = ("from minipar.cluster import hosts as h; "
              "print(h.NAMESPACE_PREFIX, h.VETH_PREFIX, h.BRIDGE, h.SUBNET, h.STATE_DIR)")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "MINIPAR_CLUSTER_ID": "7"},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["minipar7-node", "minipar7-v", "minipar7-br0", "10.213.7",
                                   "/run/minipar7-cluster"]
