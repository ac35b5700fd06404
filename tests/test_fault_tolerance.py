"""Snapshots every N steps, an injected fault, the restart: nothing lost, nothing different.

Oracles: the same training run never interrupted (bit for bit, on the same
layout: dropout and shuffling included), and one-process training on the full
batch (to 1e-9 in float64, when a snapshot resumes at another world size).
Most runs use ``run_local`` (ranks as threads); one test launches real mpiexec
jobs to see the crash end the job and the rerun resume.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import resumable
from mpirun import assert_ok, run_mpi

import minipar
from minipar.comm import run_local
from minipar.snapshot import fault
from minipar.snapshot import sharded as dist


def assert_bit_identical(got: list[list[np.ndarray]], expected: list[list[np.ndarray]]) -> None:
    assert len(got) == len(expected)
    for rank, (mine, theirs) in enumerate(zip(got, expected)):
        assert len(mine) == len(theirs)
        for index, (a, b) in enumerate(zip(mine, theirs)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"rank {rank} parameter {index} differs"


def crash_at(monkeypatch: pytest.MonkeyPatch, spec: str, run: Any) -> None:
    """Run with MINIPAR_FAULT=spec; the injected fault must surface naming its rank."""
    monkeypatch.setenv("MINIPAR_FAULT", spec)
    rank, step = spec.split(":")[:2]
    with pytest.raises(fault.InjectedFault, match=f"rank {rank} of .* fails at step {step}"):
        run()
    monkeypatch.delenv("MINIPAR_FAULT")


# ----- same layout: bit-identical --------------------------------------------------------------
@pytest.mark.timeout(120)
def test_ddp_resumed_after_a_fault_is_bit_identical_to_an_uninterrupted_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = str(tmp_path / "ddp")
    uninterrupted = run_local(lambda comm: resumable.train_ddp(comm, 17), 2)
    crash_at(monkeypatch, "1:13", lambda: run_local(
        lambda comm: resumable.train_ddp(comm, 17, directory, every=5), 2))
    assert os.listdir(directory) == ["manifest.npz"]  # DDP: rank 0 wrote everything, once
    assert dist.read_manifest(directory)["shared"]["step"] == 10  # the last snapshot before the fault
    resumed = run_local(lambda comm: resumable.train_ddp(comm, 17, directory, resume=True), 2)
    assert_bit_identical(resumed, uninterrupted)


@pytest.mark.timeout(120)
def test_zero_resumed_after_a_fault_is_bit_identical_to_an_uninterrupted_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = str(tmp_path / "zero")
    uninterrupted = run_local(lambda comm: resumable.train_zero(comm, 17), 2)
    crash_at(monkeypatch, "0:16", lambda: run_local(
        lambda comm: resumable.train_zero(comm, 17, directory, every=5), 2))
    # each rank wrote its shard of the latest generation; older generations were removed
    assert sorted(os.listdir(directory)) == [
        "manifest.npz", "shard-00000-of-00002.g2.npz", "shard-00001-of-00002.g2.npz"]
    resumed = run_local(lambda comm: resumable.train_zero(comm, 17, directory, resume=True), 2)
    assert_bit_identical(resumed, uninterrupted)


@pytest.mark.timeout(120)
def test_pipeline_resumed_after_a_fault_is_bit_identical_to_an_uninterrupted_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = str(tmp_path / "pipe")
    uninterrupted = run_local(lambda comm: resumable.train_pipeline(comm, 11), 2)
    crash_at(monkeypatch, "1:9", lambda: run_local(
        lambda comm: resumable.train_pipeline(comm, 11, directory, every=4), 2))
    resumed = run_local(lambda comm: resumable.train_pipeline(comm, 11, directory, resume=True), 2)
    assert_bit_identical(resumed, uninterrupted)


# ----- another world size: equal to one process -------------------------------------------------
def one_process_reference(steps: int) -> list[np.ndarray]:
    return run_local(lambda comm: resumable.train_resharded(comm, "single", 0, steps), 1)[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind, saved_on, resumed_on", [("ddp", 2, 3), ("ddp", 4, 1), ("zero", 2, 3),
                                                         ("zero", 3, 4), ("zero", 4, 1)])
def test_snapshot_resumes_at_another_world_size_like_one_process(
        tmp_path: Path, kind: str, saved_on: int, resumed_on: int) -> None:
    expected = one_process_reference(8)
    directory = str(tmp_path / "snap")
    run_local(lambda comm: resumable.train_resharded(comm, kind, 0, 4, save_to=directory), saved_on)
    with pytest.raises(ValueError, match=f"written by {saved_on} ranks, this job has {resumed_on}"):
        run_local(lambda comm: dist.load_distributed(directory, comm), resumed_on)
    results = run_local(lambda comm: resumable.train_resharded(comm, kind, 4, 8, load_from=directory),
                        resumed_on)
    for params in results:
        for got, want in zip(params, expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


# ----- the commit protocol -------------------------------------------------------------------------
def test_a_crash_before_the_manifest_commit_keeps_the_previous_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = str(tmp_path / "snap")

    def save_generation(comm: Any, value: float) -> None:
        dist.save_distributed(directory, comm, shared={"value": value},
                              local={"w": np.full(3, value + comm.rank)})

    run_local(lambda comm: save_generation(comm, 1.0), 3)
    real_save = dist.save

    def save_shards_then_die(state: dict[str, Any], path: str) -> None:
        if path.endswith(dist.MANIFEST):
            raise OSError("rank 0 lost power before the commit (simulated)")
        real_save(state, path)

    monkeypatch.setattr(dist, "save", save_shards_then_die)
    with pytest.raises(OSError, match="lost power"):
        run_local(lambda comm: save_generation(comm, 2.0), 3)
    monkeypatch.setattr(dist, "save", real_save)
    assert len(os.listdir(directory)) == 1 + 3 + 3  # the new generation's shards are there, uncommitted
    shared, locals_ = dist.load_distributed_all(directory)
    assert shared == {"value": 1.0}
    assert [local["w"][0] for local in locals_] == [1.0, 2.0, 3.0]
    run_local(lambda comm: save_generation(comm, 3.0), 3)  # generation 1 again, committed this time
    assert sorted(os.listdir(directory)) == ["manifest.npz"] + [
        f"shard-{r:05d}-of-00003.g1.npz" for r in range(3)]
    assert run_local(lambda comm: dist.load_distributed(directory, comm)[1]["w"][0], 3) == [3.0, 4.0, 5.0]


def test_a_shard_that_does_not_match_the_manifest_is_a_value_error(tmp_path: Path) -> None:
    directory = tmp_path / "snap"
    run_local(lambda comm: dist.save_distributed(directory, comm, local={"rank": comm.rank}), 2)
    first, second = sorted(name for name in os.listdir(directory) if name.startswith("shard"))
    (directory / first).write_bytes((directory / second).read_bytes())  # rank 1's shard as rank 0's
    with pytest.raises(ValueError, match="shard-00000-of-00002.g0.npz has SHA-256 .* the manifest expects"):
        dist.load_distributed_all(directory)
    with pytest.raises(ValueError, match="not a minipar distributed snapshot"):
        minipar.save({"format": "something else"}, directory / dist.MANIFEST)
        dist.read_manifest(directory)


def _shard_holding_a_list(directory: Path, manifest: dict[str, Any]) -> None:
    """Rank 0's shard replaced by a valid snapshot of a list, the manifest's digest recomputed."""
    name = manifest["shards"][0]["file"]
    minipar.save([1, 2], directory / name)
    manifest["shards"][0]["sha256"] = hashlib.sha256((directory / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("gather, edit, message", [
    (False, lambda d, m: m.update(world_size="2"), "world_size is '2', expected an int >= 1"),
    (False, lambda d, m: m.update(world_size=0), "world_size is '0'"),
    (False, lambda d, m: m.update(generation=None), "generation is 'None'"),
    (False, lambda d, m: m.pop("shared"), "it has no shared"),
    (False, lambda d, m: m.update(shards=None), "exactly one of 'locals'"),
    (False, lambda d, m: m.update(shards=m["shards"][:1]), "'shards' is a list of 1, expected a list of 2"),
    (False, lambda d, m: m["shards"].__setitem__(0, "shard"), r"shards\[0\] is shard, expected file"),
    (False, lambda d, m: m["shards"][0].update(file="../../manifest.npz"), "expected file 'shard-00000-of"),
    (False, lambda d, m: m["shards"][0].update(sha256=5), "sha256 is '5', expected 64 hex digits"),
    (False, lambda d, m: (d / m["shards"][1]["file"]).unlink(), "named by the manifest, is missing"),
    (False, _shard_holding_a_list, "holds list, expected a dict"),
    (True, lambda d, m: m.update(locals={"rank": 0}), "'locals' is a dict, expected a list of 2"),
    (True, lambda d, m: m.update(locals=[{}]), "'locals' is a list of 1, expected a list of 2"),
])
def test_a_crafted_distributed_manifest_is_a_value_error_naming_the_field(
        tmp_path: Path, gather: bool, edit: Any, message: str) -> None:
    """Edited and saved again with minipar.save, so every checksum fits: only the checks of the
    fields themselves can tell (these were TypeError, IndexError, KeyError, AttributeError)."""
    directory = tmp_path / "snap"
    run_local(lambda comm: dist.save_distributed(directory, comm, shared={"step": 1},
                                                 local={"rank": comm.rank}, gather=gather), 2)
    manifest = minipar.load(directory / dist.MANIFEST)
    edit(directory, manifest)
    minipar.save(manifest, directory / dist.MANIFEST)
    with pytest.raises(ValueError, match=message):
        dist.load_distributed_all(directory)


def test_fault_spec_errors_and_placement() -> None:
    assert fault.parse_faults("1:13, 2:40:kill") == [(1, 13, "raise"), (2, 40, "kill")]
    for bad in ("1", "a:3", "1:2:explode", "1:-2", "1:2:3:4"):
        with pytest.raises(ValueError, match=f"rank:step.*got {re.escape(repr(bad))}"):
            fault.parse_faults(bad)


# ----- real mpiexec: the job ends, names the rank, and the rerun resumes ---------------------------
@pytest.mark.timeout(240)
def test_mpi_fault_ends_the_job_naming_the_rank_and_the_rerun_resumes_bit_identically(
        tmp_path: Path) -> None:
    script = str(Path(resumable.__file__))
    crashed, reference = tmp_path / "crashed", tmp_path / "reference"
    env = {"MINIPAR_COMM_TIMEOUT": "120", "MINIPAR_FAULT": "1:13"}  # a hang would wait 120 s
    result = run_mpi(script, n=3, timeout=90, env=env,
                     args=["full", str(crashed), str(tmp_path / "unused.npz")])
    ended = time.time()
    assert result.returncode != 0
    assert "rank 1 of 3 fails at step 13" in result.stderr
    fault_time = float(re.search(r"at unix time ([0-9.]+)", result.stderr).group(1))
    assert ended - fault_time < 5.0, f"the job took {ended - fault_time:.1f} s to end after the fault"
    assert dist.read_manifest(crashed)["shared"]["step"] == 10

    out = assert_ok(run_mpi(script, n=3, timeout=90, args=["resume", str(crashed), str(tmp_path / "r.npz")]))
    assert "finished 17 steps (resume)" in out
    assert_ok(run_mpi(script, n=3, timeout=90, args=["full", str(reference), str(tmp_path / "f.npz")]))
    resumed = minipar.load(tmp_path / "r.npz")["params"]
    uninterrupted = minipar.load(tmp_path / "f.npz")["params"]
    assert_bit_identical([resumed], [uninterrupted])


@pytest.mark.timeout(120)
def test_mpi_rank_killed_without_cleanup_ends_the_job(tmp_path: Path) -> None:
    """SIGKILL: no exception, no abort hook; mpiexec itself must notice the lost rank."""
    script = str(Path(resumable.__file__))
    env = {"MINIPAR_COMM_TIMEOUT": "120", "MINIPAR_FAULT": "2:3:kill"}
    result = run_mpi(script, n=3, timeout=90, env=env,
                     args=["full", str(tmp_path / "s"), str(tmp_path / "unused.npz")])
    ended = time.time()
    assert result.returncode != 0
    assert "rank 2 of 3 fails at step 3" in result.stderr + result.stdout
    fault_time = float(re.search(r"at unix time ([0-9.]+)", result.stderr + result.stdout).group(1))
    assert ended - fault_time < 5.0, f"the job took {ended - fault_time:.1f} s to end after the kill"
