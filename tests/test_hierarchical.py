"""allreduce(..., algorithm="hierarchical"): by host, equal to the sum, fewer bytes between hosts.

Thread ranks get fake host labels (``run_local(fn, p, hosts=[0, 0, 1, 1])``); the
cross-host tests run on the emulated cluster (2 hosts x 2 ranks, needs root and
ip / tc / unshare, skipped otherwise), launched as

    minipar cluster up --hosts 2 --gbit 2
    minipar cluster run -n 4 --ppn 2 -- python -m mpi4py tests/test_hierarchical.py
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from emulated_cluster import HOSTS, PER_HOST, requires_cluster
from mpirun import REPO

import minipar.comm as mc
from minipar import cluster
from minipar.comm.hierarchical import host_topology, world_rank

pytestmark = pytest.mark.timeout(120)
LAYOUTS = {  # p ranks as hosts x ranks per host
    "4=2x2": [0, 0, 1, 1],
    "6=2x3": [0, 0, 0, 1, 1, 1],
    "6=3x2": [0, 0, 1, 1, 2, 2],
    "6=3x2-interleaved": [0, 1, 2, 0, 1, 2],
}
LENGTHS = [0, 1, 5, 720, 1001, 70_001]


def allreduce_everywhere(xs: np.ndarray, hosts: list[int], op: str = "sum") -> list[np.ndarray]:
    return mc.run_local(
        lambda comm: mc.allreduce(comm, xs[comm.rank].copy(), op=op, algorithm="hierarchical"),
        len(hosts), hosts=hosts)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", LENGTHS)
def test_hierarchical_allreduce_matches_closed_form_for_any_length(layout: str, n: int) -> None:
    hosts = LAYOUTS[layout]
    p = len(hosts)
    base = (np.arange(n) % 1000).astype(np.float64)  # integers: every order gives the same bits
    xs = np.stack([(r + 1) * base for r in range(p)])
    for op, expected in (("sum", p * (p + 1) // 2 * base), ("max", p * base), ("min", base),
                         ("mean", (p + 1) / 2 * base)):
        got = allreduce_everywhere(xs, hosts, op)
        for rank, x in enumerate(got):
            assert np.array_equal(x, expected), (op, rank)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hierarchical_allreduce_is_bit_identical_on_every_rank_and_close_to_one_process(
        layout: str) -> None:
    hosts = LAYOUTS[layout]
    xs = np.random.default_rng(7).standard_normal((len(hosts), 10_007)).astype(np.float32)
    got = allreduce_everywhere(xs, hosts)
    for x in got[1:]:
        assert np.array_equal(x, got[0])
    np.testing.assert_allclose(got[0], xs.astype(np.float64).sum(0), rtol=0, atol=1e-5)


def test_integer_arrays_are_summed_exactly() -> None:
    xs = np.arange(4 * 333, dtype=np.int64).reshape(4, 333) * 10**12
    for x in allreduce_everywhere(xs, [0, 0, 1, 1]):
        assert np.array_equal(x, xs.sum(0))


def test_uneven_hosts_are_rejected_naming_the_counts() -> None:
    with pytest.raises(ValueError, match=r"same number of ranks on every host.*'0': 2, '1': 1"):
        allreduce_everywhere(np.ones((3, 8)), [0, 0, 1])


def test_host_topology_groups_ranks_by_host_label() -> None:
    def layout(comm: mc.Communicator) -> tuple[str, list[int], list[int]]:
        topology = host_topology(comm)
        members = [world_rank(topology.host_comm, r) for r in range(topology.host_comm.size)]
        across = [world_rank(topology.cross_comm, r) for r in range(topology.cross_comm.size)]
        return comm.host_name(), members, across

    got = mc.run_local(layout, 6, hosts=["a", "b", "c", "a", "b", "c"])
    assert got[0] == ("a", [0, 3], [0, 1, 2])
    assert got[4] == ("b", [1, 4], [3, 4, 5])


def test_run_local_rejects_a_host_list_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="hosts must be a list of 4 labels"):
        mc.run_local(lambda comm: None, 4, hosts=[0, 1])


# ----- bytes between hosts, from the message log ------------------------------------------------
def bytes_leaving_each_host(n: int, hosts: list[int], algorithm: str) -> dict[int, int]:
    """Bytes of one float64 all-reduce of n elements sent from each host to another host."""
    records: list[tuple[Any, Any]] = []

    def listen(sender: Any, message: Any) -> None:
        records.append((sender, message))

    def step(comm: mc.Communicator) -> None:
        x = np.ones(n)
        mc.allreduce(comm, x, algorithm=algorithm)  # the first call finds the hosts
        comm.barrier()
        if comm.rank == 0:
            mc.add_observer(listen, messages=True)
        comm.barrier()
        mc.allreduce(comm, x, algorithm=algorithm)
        comm.barrier()
        if comm.rank == 0:
            mc.remove_observer(listen)

    mc.run_local(step, len(hosts), hosts=hosts)
    leaving = {host: 0 for host in set(hosts)}
    for sender, message in records:
        source, dest = world_rank(sender, message.source), world_rank(sender, message.dest)
        if hosts[source] != hosts[dest]:
            leaving[hosts[source]] += message.nbytes
    return leaving


@pytest.mark.parametrize("layout", ["4=2x2", "6=2x3", "6=3x2"])
@pytest.mark.parametrize("n", [720, 1001])
def test_hierarchical_sends_2_H_minus_1_over_H_N_per_host_fewer_than_the_flat_ring(
        layout: str, n: int) -> None:
    hosts = LAYOUTS[layout]
    p, host_count = len(hosts), len(set(hosts))
    nbytes, itemsize = 8 * n, 8
    hierarchical = bytes_leaving_each_host(n, hosts, "hierarchical")
    flat = bytes_leaving_each_host(n, hosts, "ring")
    # One element per message of slack when array_split's chunks are uneven (n = 1001).
    slack = 0 if n % (p * host_count) == 0 else 2 * (host_count - 1) * (p // host_count) * itemsize
    for host in hierarchical:
        assert abs(hierarchical[host] - 2 * (host_count - 1) / host_count * nbytes) <= slack
        # ranks in blocks: one ring edge per host leaves it, carrying 2(p-1)/p N
        assert abs(flat[host] - 2 * (p - 1) / p * nbytes) <= 2 * (p - 1) * itemsize
        assert hierarchical[host] < flat[host]


# ----- across emulated hosts (root only) --------------------------------------------------------
BIG = 16 * 2**20


def run_on_two_hosts(*args: str) -> str:
    done = cluster.run(HOSTS * PER_HOST, [sys.executable, "-m", "mpi4py", __file__, *args],
                       ppn=PER_HOST, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                       timeout=60, capture_output=True, cwd=REPO)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@requires_cluster
def test_hierarchical_across_two_hosts_matches_closed_form(emulated_cluster: cluster.ClusterStatus) -> None:
    out = run_on_two_hosts("check")
    assert "OK hierarchical 2 hosts x 2" in out, out


@requires_cluster
def test_hierarchical_puts_fewer_bytes_on_the_link_than_the_flat_ring_needs(
        emulated_cluster: cluster.ClusterStatus) -> None:
    """16 MiB at 2 x 2: each host's qdisc counts at least N (2(H-1)/H N) and less than 1.5 N.

    1.5 N = 2(p-1)/p N is what the flat ring puts on each link (tests/test_cluster.py).
    """
    before = cluster.status()
    run_on_two_hosts("big")
    after = cluster.status()
    assert before is not None and after is not None
    for was, now in zip(before.hosts, after.hosts):
        sent = now.sent_bytes - was.sent_bytes
        assert BIG <= sent < 1.5 * BIG, (now.name, sent)


def _main(task: str) -> None:
    comm = mc.world()
    p, rank = comm.size, comm.rank
    if task == "big":
        x = np.full(BIG // 4, rank + 1.0, dtype=np.float32)
        mc.allreduce(comm, x, algorithm="hierarchical")
        assert (x == p * (p + 1) / 2).all()
        return
    from mpi4py import MPI

    problems = []
    assert host_topology(comm).host_count == HOSTS
    for n in (0, 1, 3, 1001, 300_007):
        base = (np.arange(n) % 1000).astype(np.float64)
        x = mc.allreduce(comm, (rank + 1) * base, algorithm="hierarchical")
        same = all(np.array_equal(x, other) for other in MPI.COMM_WORLD.allgather(x))
        if not (np.array_equal(x, p * (p + 1) // 2 * base) and same):
            problems.append(n)
    if rank == 0:
        print(("OK" if not problems else f"FAIL {problems}") + f" hierarchical {HOSTS} hosts x {p // HOSTS}")


if __name__ == "__main__":
    _main(sys.argv[1] if len(sys.argv) > 1 else "check")
