"""Restarts that resume by themselves: ``minipar run --max-restarts`` + ``minipar.elastic``.

The chaos matrix launches real ``mpiexec`` jobs through the CLI: DDP, ZeRO and
pipeline training (``tests/chaos_train.py``) on 2 and 3 ranks, one rank
SIGKILLed at a seeded random step, relaunched by ``--max-restarts``. Oracle:
the same job never interrupted -- bit for bit at the same world size (dropout
and shuffling included), float64 within 1e-12 at another one (the reduction
order changes) -- and no file left in the snapshot directory but the snapshot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mpirun import HAS_MPI, REPO, mpi_env

import minipar
from minipar import elastic, nn, optim
from minipar.cli.run import exit_reason
from minipar.comm import run_local
from minipar.snapshot import sharded

CHAOS = str(Path(__file__).with_name("chaos_train.py"))
CLI = "import sys; from minipar.cli import main; sys.exit(main())"
STEPS, EVERY = 12, 3
needs_mpi = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and the venv's mpiexec")


def minipar_run(script: str, n: int, options: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """``minipar run SCRIPT -n N OPTIONS -- ARGS`` as a user types it, under a deadline."""
    env = mpi_env(n, {"MINIPAR_COMM_TIMEOUT": "60"})  # a hang becomes an error naming the rank
    env.pop("MPIEXEC_TIMEOUT", None)  # --timeout sets it for every launch
    command = [sys.executable, "-c", CLI, "run", script, "-n", str(n), "--timeout", "60", *options,
               "--", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=200, cwd=REPO)


def chaos(kind: str, n: int, directory: Path, out: Path, kills: list[str], restart_ranks: int | None = None,
          portable: bool = False) -> tuple[subprocess.CompletedProcess[str], list[list[np.ndarray]]]:
    """Run the chaos job (one relaunch per kill); every final rank's parameters."""
    options = ["--max-restarts", str(len(kills))]
    options += ["--restart-ranks", str(restart_ranks)] if restart_ranks else []
    args = [kind, str(directory), str(out), "--steps", str(STEPS), "--every", str(EVERY)]
    args += [f"--kill={kill}" for kill in kills] + (["--portable"] if portable else [])
    result = minipar_run(CHAOS, n, options, args)
    shown = f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, shown
    final = restart_ranks or n
    return result, [minipar.load(f"{out}-rank{r}.npz")["params"] for r in range(final)]


def assert_only_the_snapshot_left(directory: Path, world_size: int, gathered: bool) -> None:
    generation = sharded.read_manifest(directory)["generation"]
    shards = [] if gathered else [sharded.shard_name(r, world_size, generation) for r in range(world_size)]
    assert sorted(os.listdir(directory)) == sorted(["manifest.npz", *shards])


def seeded_kill(seed: int, n: int) -> tuple[int, int]:
    """A random rank and a random step in 1..STEPS-1 (a fixed seed per case: reproducible)."""
    rng = np.random.default_rng(seed)
    return int(rng.integers(n)), int(rng.integers(1, STEPS))


# ----- the chaos matrix --------------------------------------------------------------------------
@needs_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["ddp", "zero", "pipeline"])
@pytest.mark.parametrize("n", [2, 3])
def test_rank_killed_at_a_random_step_and_restarted_ends_bit_identical_to_an_uninterrupted_run(
        tmp_path: Path, kind: str, n: int) -> None:
    _, uninterrupted = chaos(kind, n, tmp_path / "reference", tmp_path / "reference", kills=[])
    rank, step = seeded_kill(seed=100 * n + len(kind), n=n)
    result, resumed = chaos(kind, n, tmp_path / "snap", tmp_path / "resumed", kills=[f"{rank}:{step}"])
    assert f"rank {rank} of {n} fails at step {step}" in result.stderr
    assert f"minipar: restart 1 of 1: the job on {n} ranks failed, exit code 9 (SIGKILL" in result.stderr
    assert f"launch 1: {kind} on {n} ranks, steps {EVERY * (step // EVERY)}..{STEPS}" in result.stdout
    for r in range(n):
        assert len(resumed[r]) == len(uninterrupted[r])
        for index, (got, want) in enumerate(zip(resumed[r], uninterrupted[r])):
            assert got.dtype == want.dtype == np.float64
            assert np.array_equal(got, want), f"rank {r} parameter {index} differs after the restart"
    assert_only_the_snapshot_left(tmp_path / "snap", n, gathered=kind == "ddp")


@needs_mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind, n, restart_ranks, seed", [("ddp", 2, 3, 1), ("zero", 3, 2, 2)])
def test_restart_on_another_number_of_ranks_matches_the_uninterrupted_run_to_1e_12(
        tmp_path: Path, kind: str, n: int, restart_ranks: int, seed: int) -> None:
    _, uninterrupted = chaos(kind, n, tmp_path / "reference", tmp_path / "reference", kills=[], portable=True)
    rank, _ = seeded_kill(seed, n)
    step = 4 + seed  # after the first snapshot (step 3): the restart must re-split it
    result, resumed = chaos(kind, n, tmp_path / "snap", tmp_path / "resumed", kills=[f"{rank}:{step}"],
                            restart_ranks=restart_ranks, portable=True)
    assert f"relaunching on {restart_ranks} ranks" in result.stderr
    resumed_from = EVERY * (step // EVERY)
    assert f"launch 1: {kind} on {restart_ranks} ranks, steps {resumed_from}..{STEPS}" in result.stdout
    for r in range(restart_ranks):  # every replica equals the uninterrupted run's (rank 0's) weights
        for got, want in zip(resumed[r], uninterrupted[0]):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert_only_the_snapshot_left(tmp_path / "snap", restart_ranks, gathered=kind == "ddp")


# ----- the launcher --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_max_restarts_relaunches_a_failing_job_k_times_then_gives_up_with_its_exit_code(
        tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("import os, sys\nprint('launch', os.environ['MINIPAR_RESTART_COUNT'])\nsys.exit(3)\n")
    result = minipar_run(str(script), 1, ["--max-restarts", "2"], [])
    assert result.returncode == 3
    assert result.stdout.split() == ["launch", "0", "launch", "1", "launch", "2"]
    assert "restart 1 of 2: the job on 1 ranks failed, exit code 3; relaunching on 1 ranks" in result.stderr
    assert "restart 2 of 2" in result.stderr and "giving up after 2 restarts: exit code 3" in result.stderr


@pytest.mark.timeout(60)
def test_max_restarts_stops_at_the_first_success_and_rejects_negative_counts(tmp_path: Path) -> None:
    script = tmp_path / "second_time.py"
    script.write_text("import os, sys\nsys.exit(0 if os.environ['MINIPAR_RESTART_COUNT'] == '1' else 5)\n")
    result = minipar_run(str(script), 1, ["--max-restarts", "4"], [])
    assert result.returncode == 0 and result.stderr.count("relaunching") == 1
    bad = minipar_run(str(script), 1, ["--max-restarts", "-1"], [])
    assert bad.returncode == 2 and "--max-restarts must be a non-negative integer, got -1" in bad.stderr


def test_exit_reason_names_the_signal_mpiexec_reports() -> None:
    assert exit_reason(9) == "exit code 9 (SIGKILL if a rank was killed by a signal)"
    assert "SIGKILL" in exit_reason(137) and "SIGKILL" in exit_reason(-9)
    assert exit_reason(124) == "it passed its deadline (exit code 124)"
    assert exit_reason(1) == "exit code 1"


# ----- the helper, in thread ranks -----------------------------------------------------------------
def parts_of(comm: Any) -> dict[str, Any]:
    minipar.manual_seed(0)
    model = nn.Linear(3, 2).double()
    return {"shared": {"model": model}, "local": {"optimizer": optim.SGD(model.parameters(), lr=0.1)}}


def test_resume_or_start_is_none_without_a_snapshot_and_removes_an_uncommitted_first_save(
        tmp_path: Path) -> None:
    assert run_local(lambda comm: elastic.resume_or_start(tmp_path / "missing", comm), 2) == [None, None]
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "shard-00000-of-00002.g0.npz").write_bytes(b"never committed")
    (tmp_path / "snap" / "notes.txt").write_text("not ours")
    assert run_local(lambda comm: elastic.resume_or_start(tmp_path / "snap", comm), 2) == [None, None]
    assert os.listdir(tmp_path / "snap") == ["notes.txt"]


def test_snapshot_then_resume_restores_step_state_and_rng(tmp_path: Path) -> None:
    def save_then_draw(comm: Any) -> float:
        parts = parts_of(comm)
        minipar.manual_seed(50 + comm.rank)
        elastic.snapshot(tmp_path, comm, 7, **parts)
        return float(minipar.randn(1).array[0])

    def resume_then_draw(comm: Any) -> tuple[int, float]:
        parts = parts_of(comm)
        step = elastic.resume(tmp_path, comm, **parts)
        return step, float(minipar.randn(1).array[0])

    drawn = run_local(save_then_draw, 2)
    assert run_local(resume_then_draw, 2) == [(7, drawn[0]), (7, drawn[1])]


def test_resume_at_another_world_size_needs_a_reshard_and_rng_false(tmp_path: Path) -> None:
    run_local(lambda comm: elastic.snapshot(tmp_path, comm, 3, **parts_of(comm)), 2)
    with pytest.raises(ValueError, match="local part 'optimizer' was written by 2 ranks, this job has 3"):
        run_local(lambda comm: elastic.resume(tmp_path, comm, **parts_of(comm), rng=False), 3)
    with pytest.raises(ValueError, match="RNG states of 2 ranks, this job has 3; pass rng=False"):
        run_local(lambda comm: elastic.resume(tmp_path, comm, shared=parts_of(comm)["shared"]), 3)
    steps = run_local(lambda comm: elastic.resume(tmp_path, comm, shared=parts_of(comm)["shared"],
                                                  rng=False), 3)
    assert steps == [3, 3, 3]


def test_a_damaged_snapshot_is_a_value_error_on_every_rank_not_a_fresh_start(tmp_path: Path) -> None:
    run_local(lambda comm: elastic.snapshot(tmp_path, comm, 3, **parts_of(comm)), 2)
    (tmp_path / "manifest.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(ValueError, match=r"could not read the snapshot .* \(not starting over silently\)"):
        run_local(lambda comm: elastic.resume_or_start(tmp_path, comm), 2)


def test_elastic_rejects_bad_parts_naming_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names must be strings other than .*'step'"):
        run_local(lambda comm: elastic.snapshot(tmp_path, comm, 1, shared={"step": nn.Linear(1, 1)}), 1)
    with pytest.raises(TypeError, match=r"local\['x'\] needs state_dict\(\) and load_state_dict\(\), got"):
        run_local(lambda comm: elastic.snapshot(tmp_path, comm, 1, local={"x": 3}), 1)
    with pytest.raises(ValueError, match="step must be a non-negative int, got -1"):
        run_local(lambda comm: elastic.snapshot(tmp_path, comm, -1), 1)
    with pytest.raises(TypeError, match="directory must be a str or os.PathLike, got int"):
        run_local(lambda comm: elastic.resume_or_start(5, comm), 1)
    assert minipar.elastic is elastic  # the alias is the module itself
