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
from minipar.comm import host_pipeline
from minipar.comm.hierarchical import host_topology, intra_host_form, world_rank

pytestmark = pytest.mark.timeout(120)
LAYOUTS = {  # p ranks as hosts x ranks per host
    "4=2x2": [0, 0, 1, 1],
    "6=2x3": [0, 0, 0, 1, 1, 1],
    "6=3x2": [0, 0, 1, 1, 2, 2],
    "6=3x2-interleaved": [0, 1, 2, 0, 1, 2],
}
LENGTHS = [0, 1, 5, 720, 1001, 70_001]


def allreduce_everywhere(xs: np.ndarray, hosts: list[int], op: str = "sum",
                         intra_host: str = "auto") -> list[np.ndarray]:
    return mc.run_local(
        lambda comm: mc.allreduce(comm, xs[comm.rank].copy(), op=op, algorithm="hierarchical",
                                  intra_host=intra_host),
        len(hosts), hosts=hosts)


@pytest.mark.parametrize("intra_host", ["ring", "shm", "pipelined"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", LENGTHS)
def test_hierarchical_allreduce_matches_closed_form_for_any_length(layout: str, n: int,
                                                                   intra_host: str) -> None:
    hosts = LAYOUTS[layout]
    p = len(hosts)
    base = (np.arange(n) % 1000).astype(np.float64)  # integers: every order gives the same bits
    xs = np.stack([(r + 1) * base for r in range(p)])
    for op, expected in (("sum", p * (p + 1) // 2 * base), ("max", p * base), ("min", base),
                         ("mean", (p + 1) / 2 * base)):
        got = allreduce_everywhere(xs, hosts, op, intra_host)
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


@pytest.mark.parametrize("piece_bytes", [host_pipeline.PIECE_BYTES, 64])
@pytest.mark.parametrize("layout", [*LAYOUTS, "2=2x1", "3=1x3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_three_intra_host_forms_give_identical_bits(layout: str, dtype: type, piece_bytes: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every form adds each element in its local chunk's ring order, then its cross chunk's.

    So their results agree bit for bit (with pieces of 64 B the pipeline runs many);
    against one process (``xs.sum(0)`` in float64) they agree to rounding only, as any
    all-reduce does whose order of additions differs.
    """
    monkeypatch.setattr(host_pipeline, "PIECE_BYTES", piece_bytes)
    hosts = {"2=2x1": [0, 1], "3=1x3": [0, 0, 0]}.get(layout) or LAYOUTS[layout]
    n = 70_001 if piece_bytes > 64 else 2_003  # uneven chunks; with 64 B pieces, ~10-30 pieces
    xs = np.random.default_rng(len(hosts)).standard_normal((len(hosts), n)).astype(dtype)
    for op in ("sum", "mean", "max", "min"):
        by_messages = allreduce_everywhere(xs, hosts, op, "ring")
        by_memory = allreduce_everywhere(xs, hosts, op, "shm")
        pipelined = allreduce_everywhere(xs, hosts, op, "pipelined")
        for rank in range(len(hosts)):
            assert np.array_equal(by_messages[rank], by_memory[rank]), (op, rank)
            assert np.array_equal(by_messages[rank], pipelined[rank]), (op, rank)
        one_process = {"sum": xs.astype(np.float64).sum(0), "mean": xs.astype(np.float64).mean(0),
                       "max": xs.max(0), "min": xs.min(0)}[op]
        np.testing.assert_allclose(by_memory[0], one_process, rtol=0,
                                   atol=2e-5 if dtype == np.float32 else 1e-12)


def test_shared_memory_inside_the_host_sends_messages_only_between_hosts() -> None:
    """intra_host="shm": the message log holds the cross-host ring alone, 2(H-1)/H N per host."""
    n, hosts = 1000, LAYOUTS["4=2x2"]
    inside, between = bytes_inside_and_between(n, hosts, "hierarchical", "shm")
    assert inside == 0
    assert between == {0: 8 * n, 1: 8 * n}  # 2(H-1)/H N at H = 2
    for form in ("ring", "pipelined"):  # the same bytes, the pipeline in pieces
        inside, between = bytes_inside_and_between(n, hosts, "hierarchical", form)
        assert inside == 4 * 8 * n  # every rank: (k-1)/k N twice, k = 2
        assert between == {0: 8 * n, 1: 8 * n}


def test_auto_reads_the_arrays_on_thread_ranks() -> None:
    def chosen(comm: mc.Communicator) -> tuple[str, str]:
        return (intra_host_form(comm, np.ones(10)), intra_host_form(comm, np.ones(10), "pipelined"))

    assert mc.run_local(chosen, 4, hosts=[0, 0, 1, 1]) == [("shm", "pipelined")] * 4


def test_the_pipelined_form_fails_instead_of_hanging_when_a_rank_never_comes() -> None:
    def without_rank_3(comm: mc.Communicator) -> None:
        if comm.rank != 3:
            mc.allreduce(comm, np.ones(100_000), algorithm="hierarchical", intra_host="pipelined")

    with pytest.raises((mc.CommTimeoutError, mc.DeadlockError), match="rank 3|waits"):
        mc.run_local(without_rank_3, 4, hosts=[0, 0, 1, 1], timeout=3)


def test_an_unknown_intra_host_form_is_rejected_naming_the_choices() -> None:
    expected = r"intra_host must be one of \['ring', 'shm', 'pipelined', 'auto'\], got 'nvlink'"
    with pytest.raises(ValueError, match=expected):
        allreduce_everywhere(np.ones((4, 8)), [0, 0, 1, 1], intra_host="nvlink")


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
    return bytes_inside_and_between(n, hosts, algorithm)[1]


def bytes_inside_and_between(n: int, hosts: list[int], algorithm: str,
                             intra_host: str = "auto") -> tuple[int, dict[int, int]]:
    """(bytes sent inside hosts in all, bytes leaving each host) of one float64 all-reduce."""
    records: list[tuple[Any, Any]] = []

    def listen(sender: Any, message: Any) -> None:
        records.append((sender, message))

    def step(comm: mc.Communicator) -> None:
        x = np.ones(n)
        mc.allreduce(comm, x, algorithm=algorithm, intra_host=intra_host)  # finds the hosts
        comm.barrier()
        if comm.rank == 0:
            mc.add_observer(listen, messages=True)
        comm.barrier()
        mc.allreduce(comm, x, algorithm=algorithm, intra_host=intra_host)
        comm.barrier()
        if comm.rank == 0:
            mc.remove_observer(listen)

    mc.run_local(step, len(hosts), hosts=hosts)
    leaving, inside = {host: 0 for host in set(hosts)}, 0
    for sender, message in records:
        source, dest = world_rank(sender, message.source), world_rank(sender, message.dest)
        if hosts[source] != hosts[dest]:
            leaving[hosts[source]] += message.nbytes
        else:
            inside += message.nbytes
    return inside, leaving


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


def run_on_two_hosts(*args: str, env: dict[str, str] | None = None) -> str:
    done = cluster.run(HOSTS * PER_HOST, [sys.executable, "-m", "mpi4py", __file__, *args],
                       ppn=PER_HOST, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})},
                       timeout=60, capture_output=True, cwd=REPO)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@requires_cluster
def test_hierarchical_across_two_hosts_matches_closed_form(emulated_cluster: cluster.ClusterStatus) -> None:
    out = run_on_two_hosts("check")
    assert "OK hierarchical 2 hosts x 2" in out, out


@requires_cluster
def test_the_three_intra_host_forms_agree_bitwise_across_two_hosts(
        emulated_cluster: cluster.ClusterStatus) -> None:
    """MPI ranks: "auto" pipelines an array of several pieces and sends one piece plainly."""
    out = run_on_two_hosts("forms")
    assert "OK forms agree, auto=pipelined for 4 MiB, ring for 4 KiB" in out, out


@requires_cluster
def test_without_shared_memory_the_shm_form_says_why_and_auto_still_works(
        emulated_cluster: cluster.ClusterStatus) -> None:
    """MPIR_CVAR_NOLOCAL=1 makes every rank its own node: no window can be shared."""
    out = run_on_two_hosts("nolocal", env={"MPIR_CVAR_NOLOCAL": "1"})
    assert "OK auto=pipelined, shm refused naming MPIR_CVAR_NOLOCAL" in out, out


@requires_cluster
@pytest.mark.parametrize("intra_host", ["ring", "shm", "pipelined"])
def test_hierarchical_puts_fewer_bytes_on_the_link_than_the_flat_ring_needs(
        emulated_cluster: cluster.ClusterStatus, intra_host: str) -> None:
    """16 MiB at 2 x 2: each host's qdisc counts at least N (2(H-1)/H N) and less than 1.5 N.

    1.5 N = 2(p-1)/p N is what the flat ring puts on each link (tests/test_cluster.py).
    """
    before = cluster.status()
    run_on_two_hosts("big", intra_host)
    after = cluster.status()
    assert before is not None and after is not None
    for was, now in zip(before.hosts, after.hosts):
        sent = now.sent_bytes - was.sent_bytes
        assert BIG <= sent < 1.5 * BIG, (now.name, sent)


def _main(task: str, *args: str) -> None:
    comm = mc.world()
    p, rank = comm.size, comm.rank
    if task == "big":
        x = np.full(BIG // 4, rank + 1.0, dtype=np.float32)
        mc.allreduce(comm, x, algorithm="hierarchical", intra_host=args[0])
        assert (x == p * (p + 1) / 2).all()
        return
    from mpi4py import MPI

    problems: list[object] = []
    if task == "forms":
        rng = np.random.default_rng(rank)
        for n in (1, 3, 1001, 300_007, 2**20 + 3):
            x = rng.standard_normal(n).astype(np.float32)
            forms = [mc.allreduce(comm, x.copy(), algorithm="hierarchical", intra_host=form)
                     for form in ("ring", "shm", "pipelined", "auto")]
            if not all(np.array_equal(forms[0], other) for other in forms[1:]):
                problems.append(n)
        big, small = (intra_host_form(comm, np.ones(n, dtype=np.float32)) for n in (2**20, 2**10))
        if rank == 0:
            print(("OK forms agree" if not problems else f"FAIL {problems}")
                  + f", auto={big} for 4 MiB, {small} for 4 KiB")
        return
    if task == "nolocal":
        chosen = intra_host_form(comm, np.ones(2**20))
        x = mc.allreduce(comm, np.full(2**20, rank + 1.0), algorithm="hierarchical")
        try:
            mc.allreduce(comm, np.ones(1001), algorithm="hierarchical", intra_host="shm")
            refused = "not refused"
        except ValueError as error:
            refused = "refused naming MPIR_CVAR_NOLOCAL" if "MPIR_CVAR_NOLOCAL" in str(error) else str(error)
        if rank == 0 and (x == p * (p + 1) / 2).all():
            print(f"OK auto={chosen}, shm {refused}")
        return
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
    _main(*(sys.argv[1:] or ["check"]))
