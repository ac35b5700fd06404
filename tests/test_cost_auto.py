"""allreduce(algorithm="auto") follows the fitted cost model in its JSON cache (minipar/comm/auto.py):
the predicted crossover is respected, a missing or corrupt cache falls back with a warning (never a
crash, never an unpickle), results equal closed forms and MPI.Allreduce; `minipar cost fit` writes
a cache that reads back."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpirun import REPO, assert_ok, requires_mpi, run_mpi

from minipar.comm import allreduce, auto, events, run_local
from minipar.comm.cost_cache import FORMAT, CostModel, Link
from minipar.observe import cost
from minipar.observe.cost.calibrate import fit_link, merge

# intra: 10 us + 1 ns/byte (1 GB/s); gamma 0.5 ns/byte; inter: paced, 50 us, 0.1 GB/s
OVERHEAD = {"ring": 30e-6, "recursive_doubling": 10e-6, "hierarchical": 60e-6}
ONE_HOST = CostModel(Link(10e-6, 1e-9), None, 0.5e-9, OVERHEAD)
TWO_HOSTS = CostModel(Link(10e-6, 1e-9), Link(50e-6, 1e-8, paced=True), 0.5e-9, OVERHEAD)


def write_cache(path, model: CostModel) -> None:
    path.write_text(json.dumps(auto.model_to_json(model, flops=1e10, where="a test")))


def crossover_p2(model: CostModel) -> float:
    """At p = 2 on one host (K = 1): o_rd + a + N(b + g) = o_ring + 2a + N b + N g / 2."""
    o = model.overhead
    return 2 * (model.intra.alpha + o["ring"] - o["recursive_doubling"]) / model.gamma


def run_auto(world: int, elements: int, hosts=None):
    """Each rank all-reduces (rank + 1) * ones with "auto": (the all-reduces that ran, result)."""
    calls: list = []
    events.add_observer(calls.append, collectives=True)  # every collective call, on every rank

    def body(comm):
        array = np.full(elements, comm.rank + 1, np.float32)
        allreduce(comm, array, algorithm="auto")
        return array

    try:
        arrays = run_local(body, world, hosts=hosts)
    finally:
        events.remove_observer(calls.append)
    ran = [{c.args["extra"].split()[0].removeprefix("algorithm=") + "_allreduce" for c in calls
            if c.rank == rank and c.name == "allreduce"} for rank in range(world)]
    return list(zip(ran, arrays))


def test_auto_switches_from_recursive_doubling_to_ring_at_the_predicted_crossover(tmp_path,
                                                                                  monkeypatch) -> None:
    cache = tmp_path / "machine.json"
    write_cache(cache, ONE_HOST)
    monkeypatch.setenv("MINIPAR_COST_CACHE", str(cache))
    crossing = crossover_p2(ONE_HOST)  # 2 (10 + 30 - 10) us / 0.5 ns = 120,000 bytes
    assert crossing == pytest.approx(120_000)
    below, above = int(crossing * 0.9) // 4, int(crossing * 1.1) // 4  # float32 elements
    for elements, expected in ((below, "recursive_doubling"), (above, "ring")):
        results = run_auto(2, elements)
        for ran, array in results:
            assert ran == {f"{expected}_allreduce"}
            np.testing.assert_array_equal(array, np.full(elements, 1 + 2, np.float32))  # closed form
    for p, nbytes in ((2, 4 * below), (2, 4 * above), (4, 2**16), (4, 2**22)):
        times = {name: auto.predict(ONE_HOST, name, [0] * p, nbytes) for name in auto.candidates([0] * p)}
        assert auto.best(ONE_HOST, [0] * p, nbytes) == min(times, key=times.__getitem__)


def test_auto_goes_hierarchical_when_the_ranks_span_hosts_and_the_link_between_is_slow(
        tmp_path, monkeypatch) -> None:
    cache = tmp_path / "machine.json"
    write_cache(cache, TWO_HOSTS)
    monkeypatch.setenv("MINIPAR_COST_CACHE", str(cache))
    hosts = [0, 0, 1, 1]
    assert auto.candidates(hosts) == ["ring", "recursive_doubling", "hierarchical"]
    assert auto.candidates([0, 1]) == auto.candidates([0, 0, 0, 1]) == ["ring", "recursive_doubling"]
    elements = 2**20  # 4 MiB: the ring sends 1.5 N over each host's link, hierarchical N
    assert auto.best(TWO_HOSTS, hosts, 4 * elements) == "hierarchical"
    results = run_auto(4, elements, hosts=hosts)
    for ran, array in results:
        assert ran == {"hierarchical_allreduce"}
        np.testing.assert_array_equal(array, np.full(elements, 1 + 2 + 3 + 4, np.float32))
    # the same model on one host never offers hierarchical
    assert auto.best(TWO_HOSTS, [0] * 4, 4 * elements) == "ring"


def test_predictions_on_one_host_are_the_scale_models_formulas_plus_the_overhead() -> None:
    """auto.predict (what runs: slabs, link kinds) agrees with observe/cost/model.py where both apply."""
    machine = cost.Machine(ONE_HOST.intra.alpha, ONE_HOST.intra.beta, ONE_HOST.gamma, 1e10)
    for p in (2, 4, 8):
        for nbytes in (64, 2**16, 2**20):  # chunks below 2 MiB: one slab
            ring = cost.ring_allreduce(p, nbytes, machine) + OVERHEAD["ring"]
            rd = cost.recursive_doubling_allreduce(p, nbytes, machine) + OVERHEAD["recursive_doubling"]
            assert auto.predict(ONE_HOST, "ring", [0] * p, nbytes) == pytest.approx(ring, rel=1e-12)
            doubling = auto.predict(ONE_HOST, "recursive_doubling", [0] * p, nbytes)
            assert doubling == pytest.approx(rd, rel=1e-12)
    with_overhead = cost.Machine(1e-5, 1e-9, 1e-10, 1e10, overhead=3e-5)
    assert cost.ring_allreduce(2, 8, with_overhead) == pytest.approx(3e-5 + 2e-5 + 8e-9 + 4e-10)
    assert cost.ring_allreduce(1, 8, with_overhead) == 0.0  # one rank: no call to pay for


def test_a_paced_link_overlaps_the_cpu_part_and_a_shared_link_carries_every_stream() -> None:
    # p = 2 over hosts, 4 MiB ring: 2 steps of 2 MiB at 10 ns/B dominate the 30 us + 2 x 50 us
    wire = 2 * 2**21 * 1e-8
    ring = auto.predict(TWO_HOSTS, "ring", [0, 1], 2**22)
    assert ring == pytest.approx(wire + 2**21 * 0.5e-9)  # max(o + 2 alpha, wire) + reduce
    tiny = auto.predict(TWO_HOSTS, "ring", [0, 1], 8)
    assert tiny == pytest.approx(OVERHEAD["ring"] + 2 * 50e-6 + 4 * 0.5e-9)
    # two messages leaving one host at once share its link: twice the bytes
    both = auto.step_time(TWO_HOSTS, [0, 0, 1, 1], [(0, 2), (1, 3)], 2**20)
    assert both == pytest.approx(2 * 2**20 * 1e-8)


def test_fit_link_tells_a_paced_link_from_a_copying_one() -> None:
    sizes = [8, 4096, 32768, 65536, 2**18, 2**20, 2**21, 2**23]
    paced, worst = fit_link(sizes, [max(20e-6, n * 4e-9) for n in sizes])
    assert paced.paced and paced.beta == pytest.approx(4e-9, rel=1e-6) and worst["paced"] < 1e-6
    inside_a_host, _ = fit_link(sizes, [max(20e-6, n * 4e-9) for n in sizes], may_pace=False)
    assert not inside_a_host.paced  # the CPU copies the bytes there: never the paced form
    copying, _ = fit_link(sizes, [5e-6 + n * 1e-10 for n in sizes])
    assert not copying.paced and copying.alpha == pytest.approx(5e-6 + 8e-10)
    assert copying.beta == pytest.approx(1e-10, rel=1e-6)


def test_the_cache_round_trips_and_merge_takes_the_inter_run_for_overhead() -> None:
    intra = {"kind": "intra", "link": vars(Link(1e-5, 1e-9)), "gamma": 1e-10, "flops": 1e10,
             "overhead": OVERHEAD, "cores": 2, "load_average": [0.5, 0.5, 0.5]}
    inter = intra | {"kind": "inter", "link": vars(Link(2e-5, 4e-9, True)),
                     "overhead": dict.fromkeys(OVERHEAD, 1e-4)}
    data = json.loads(json.dumps(merge([intra, inter], "a test")))
    model = auto.model_from_json(data)
    assert model.intra == Link(1e-5, 1e-9) and model.inter == Link(2e-5, 4e-9, True)
    assert model.overhead == dict.fromkeys(OVERHEAD, 1e-4)
    assert auto.model_from_json(auto.model_to_json(ONE_HOST)) == ONE_HOST
    with pytest.raises(ValueError, match="intra-host run"):
        merge([inter], "a test")


def _bad_caches(tmp_path):
    good = auto.model_to_json(ONE_HOST)
    yield "missing", None
    yield "not json", "{alpha: 1e-6,"
    yield "a pickle", pickle.dumps({"alpha": 1.0})
    yield "the older format", json.dumps({"alpha": 1e-6, "beta": 1e-9, "gamma": 1e-10, "flops": 1e9})
    yield "a negative alpha", json.dumps(good | {"links": {"intra": {"alpha": -1.0, "beta": 1e-9}}})
    yield "no overhead", json.dumps({k: v for k, v in good.items() if k != "overhead"})
    yield "a string for gamma", json.dumps(good | {"gamma": "fast"})
    yield "infinity", json.dumps(good).replace('"gamma": 5e-10', '"gamma": Infinity')
    yield "a list", json.dumps([1, 2, 3])


@pytest.mark.parametrize("case", [name for name, _ in _bad_caches(None)])
def test_a_missing_or_corrupt_cache_warns_and_falls_back_to_the_fixed_rule(case, tmp_path,
                                                                           monkeypatch) -> None:
    content = dict(_bad_caches(tmp_path))[case]
    cache = tmp_path / "machine.json"
    if isinstance(content, bytes):
        cache.write_bytes(content)
    elif content is not None:
        cache.write_text(content)
    monkeypatch.setenv("MINIPAR_COST_CACHE", str(cache))
    for elements in (auto.AUTO_SMALL_BYTES // 4 - 1, auto.AUTO_SMALL_BYTES // 4):
        with pytest.warns(RuntimeWarning, match="no fitted cost model") as caught:
            results = run_auto(2, elements)
        assert len(caught) == 1  # rank 0 reads the cache, so one warning, not one per rank
        expected = auto.fallback(4 * elements)
        assert expected == ("recursive_doubling" if 4 * elements < auto.AUTO_SMALL_BYTES else "ring")
        for ran, array in results:
            assert ran == {f"{expected}_allreduce"}
            np.testing.assert_array_equal(array, np.full(elements, 3, np.float32))


def test_a_one_host_fit_on_several_hosts_warns_and_falls_back(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "machine.json"
    write_cache(cache, ONE_HOST)
    monkeypatch.setenv("MINIPAR_COST_CACHE", str(cache))
    with pytest.warns(RuntimeWarning, match="fitted on one host"):
        results = run_auto(4, 2**20, hosts=[0, 0, 1, 1])
    assert all(ran == {"ring_allreduce"} for ran, _ in results)


AUTO_VS_MPI = """
import sys, warnings
import numpy as np
from mpi4py import MPI
from minipar.comm import allreduce, world
from minipar.comm.auto import choose
comm = world()
picked = []
for elements in (1, 1000, 40000, 2**20 + 3):
    mine = np.random.default_rng(comm.rank).standard_normal(elements).astype(np.float64)
    expected = np.empty_like(mine)
    MPI.COMM_WORLD.Allreduce(mine, expected)
    allreduce(comm, mine, algorithm="auto")
    np.testing.assert_allclose(mine, expected, rtol=1e-12)
    picked.append(choose(comm, mine.nbytes))
if comm.rank == 0:
    print("PICKED", " ".join(picked))
"""


@requires_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_cache", [True, False])
def test_auto_under_mpi_equals_mpi_allreduce_with_and_without_a_cache(with_cache, tmp_path) -> None:
    cache = tmp_path / "machine.json"
    if with_cache:
        write_cache(cache, ONE_HOST)
    done = run_mpi(AUTO_VS_MPI, n=2, timeout=90, env={"MINIPAR_COST_CACHE": str(cache)})
    out = assert_ok(done)
    sizes = [8, 8000, 320000, 8 * (2**20 + 3)]
    picks = out.split("PICKED ", 1)[1].split()
    expected = [auto.best(ONE_HOST, [0, 0], n) if with_cache else auto.fallback(n) for n in sizes]
    assert picks == expected
    assert ("no fitted cost model" in done.stderr) == (not with_cache)


@requires_mpi
@pytest.mark.timeout(180)
def test_minipar_cost_fit_writes_a_cache_that_auto_and_fit_read(tmp_path) -> None:
    cache = tmp_path / "fitted.json"
    minipar = Path(sys.executable).with_name("minipar")
    done = subprocess.run([str(minipar), "cost", "fit", "--out", str(cache), "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    model = auto.read_cost_model(cache)
    assert model is not None and model.inter is None and model.intra.alpha > 0 and model.intra.beta > 0
    assert all(seconds >= 0 for seconds in model.overhead.values())
    data = json.loads(cache.read_text())
    assert data["cores"] >= 2 and len(data["load_average"]) == 3 and data["format"] == FORMAT
    machine = cost.fit(cache=cache)
    assert machine.alpha == model.intra.alpha and machine.overhead == model.overhead["ring"]
    assert math.isfinite(machine.flops) and "picks" in done.stdout
