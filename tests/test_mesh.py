"""ProcessMesh: the right ranks in every group, named facts, and hybrid training equal to one process.

Expected groups are computed here from the layout rule (tp fastest), independently
of the mesh's own arithmetic; the sub-communicators are checked by all-gathering
their members' world ranks through them.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn
from minipar.comm import allgather, allreduce, run_local
from minipar.nn import functional as F
from minipar.optim import SGD
from minipar.parallel.mesh import ProcessMesh, average_gradients
from minipar.parallel.pipeline import PipelineParallel
from minipar.parallel.tensor_parallel import ColumnParallelLinear, RowParallelLinear

TOL = 1e-10
TESTS = Path(__file__).resolve().parent


def expected_layout(dp: int, pp: int, tp: int) -> dict[int, tuple[int, int, int]]:
    """World rank -> (dp_i, pp_i, tp_i), enumerating coordinates with tp varying fastest."""
    coords = itertools.product(range(dp), range(pp), range(tp))
    return dict(enumerate(coords))


def expected_groups(dp: int, pp: int, tp: int, rank: int) -> dict[str, list[int]]:
    layout = expected_layout(dp, pp, tp)
    mine = layout[rank]
    groups = {}
    for axis, name in enumerate(("dp", "pp", "tp")):
        others = [i for i in range(3) if i != axis]
        members = [r for r, c in layout.items() if all(c[i] == mine[i] for i in others)]
        groups[name] = sorted(members, key=lambda r: layout[r][axis])
    return groups


def mesh_facts(comm, dp: int, pp: int, tp: int) -> dict:
    mesh = ProcessMesh(comm, dp=dp, pp=pp, tp=tp)
    facts = {"coords": mesh.coords, "first": mesh.is_first_stage, "last": mesh.is_last_stage,
             "next": mesh.next_stage_rank, "prev": mesh.prev_stage_rank}
    for name in ("dp", "pp", "tp"):
        sub = getattr(mesh, name)
        members = allgather(sub, np.array([comm.rank], dtype=np.int64))  # world ranks, in sub-rank order
        facts[name] = [int(r) for r in members]
        facts[name + "_sub_rank"] = (sub.rank, getattr(mesh, name + "_rank"), sub.size)
        facts[name + "_group"] = getattr(mesh, name + "_group")
    return facts


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 2), (2, 1, 2), (2, 2, 1), (1, 4, 1), (3, 1, 1),
                                   (1, 3, 2)])
def test_mesh_groups_contain_exactly_the_right_ranks_in_coordinate_order(shape) -> None:
    dp, pp, tp = shape
    world_size = dp * pp * tp
    layout = expected_layout(*shape)
    for rank, facts in enumerate(run_local(lambda comm: mesh_facts(comm, *shape), world_size)):
        groups = expected_groups(*shape, rank)
        assert facts["coords"] == layout[rank]
        for name, size in (("dp", dp), ("pp", pp), ("tp", tp)):
            assert facts[name] == groups[name] == facts[name + "_group"]
            coordinate = layout[rank][("dp", "pp", "tp").index(name)]
            assert facts[name + "_sub_rank"] == (coordinate, coordinate, size)


def test_rank_formula_and_pipeline_neighbours_are_world_ranks() -> None:
    def body(comm):
        mesh = ProcessMesh(comm, dp=2, pp=2, tp=2)
        return mesh.rank_of(*mesh.coords), mesh.next_stage_rank, mesh.prev_stage_rank, \
            mesh.is_first_stage, mesh.is_last_stage

    for rank, (again, nxt, prev, first, last) in enumerate(run_local(body, 8)):
        dp_i, pp_i, tp_i = rank // 4, (rank // 2) % 2, rank % 2
        assert again == rank == (dp_i * 2 + pp_i) * 2 + tp_i
        assert first == (pp_i == 0) and last == (pp_i == 1)
        assert nxt == (rank + 2 if pp_i == 0 else None)  # next stage: + tp in the world
        assert prev == (rank - 2 if pp_i == 1 else None)


def test_a_mesh_whose_product_is_not_the_world_size_is_a_value_error_naming_both() -> None:
    with pytest.raises(ValueError, match=r"dp\*pp\*tp = 2\*2\*2 = 8 does not equal the world size 4"):
        run_local(lambda comm: ProcessMesh(comm, dp=2, pp=2, tp=2), 4)
    with pytest.raises(ValueError, match="tp must be a positive int, got 0"):
        run_local(lambda comm: ProcessMesh(comm, dp=2, tp=0), 2)
    with pytest.raises(ValueError, match="outside the mesh"):
        run_local(lambda comm: ProcessMesh(comm, dp=2).rank_of(2, 0, 0), 2)


def test_average_gradients_replaces_each_gradient_by_the_mean_over_the_group() -> None:
    def body(comm):
        a = nn.Parameter(np.zeros((2, 3)))
        b = nn.Parameter(np.zeros(4))
        a.grad = minipar.tensor(np.full((2, 3), float(comm.rank)))
        b.grad = None if comm.rank == 0 else minipar.tensor(np.arange(4.0) * comm.rank)  # None: zeros
        average_gradients([a, b], comm)
        return a.grad, b.grad

    for a_grad, b_grad in run_local(body, 3):
        np.testing.assert_allclose(a_grad, np.full((2, 3), 1.0))
        np.testing.assert_allclose(b_grad, np.arange(4.0) * (1 + 2) / 3)


# ----- hybrid training ---------------------------------------------------------------------------
STEPS, BATCH = 8, 16


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(STEPS, BATCH, 6)), rng.normal(size=(STEPS, BATCH, 6))


def build_model() -> nn.Sequential:
    minipar.manual_seed(0)
    d = np.float64
    return nn.Sequential(nn.Linear(6, 8, dtype=d), nn.ReLU(), nn.Linear(8, 8, dtype=d), nn.ReLU(),
                         nn.Linear(8, 6, dtype=d))


def train_one_process() -> tuple[list[float], nn.Sequential]:
    model = build_model()
    optimizer = SGD(model.parameters(), lr=0.1)
    losses = []
    for x, y in zip(*data()):
        loss = F.mse_loss(model(minipar.tensor(x)), minipar.tensor(y))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, model


def train_dp_pp(comm) -> dict:
    """dp=2 x pp=2: each replica a 2-stage 1F1B pipeline on its half of the batch."""
    mesh = ProcessMesh(comm, dp=2, pp=2)
    pipe = PipelineParallel(build_model(), mesh.pp, microbatches=4)
    optimizer = SGD(pipe.stage_module.parameters(), lr=0.1)
    losses = []
    half = BATCH // 2
    for x, y in zip(*data()):
        rows = slice(mesh.dp_rank * half, (mesh.dp_rank + 1) * half)
        loss = pipe.train_step(x[rows], y[rows], F.mse_loss)
        average_gradients(pipe.stage_module.parameters(), mesh.dp)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(allreduce(mesh.dp, np.array([loss]), op="mean")[0]))
    return {"losses": losses, "layers": list(pipe.layer_range),
            "params": [p.array for p in pipe.stage_module.parameters()]}


def train_dp_tp(comm) -> dict:
    """dp=2 x tp=2: a Megatron MLP sharded over tp, then a dense layer; replicas on batch halves."""
    mesh = ProcessMesh(comm, dp=2, tp=2)
    dense = build_model()
    model = nn.Sequential(ColumnParallelLinear.from_dense(dense[0], mesh.tp), nn.ReLU(),
                          RowParallelLinear.from_dense(dense[2], mesh.tp), nn.ReLU(), dense[4])
    optimizer = SGD(model.parameters(), lr=0.1)
    losses = []
    half = BATCH // 2
    for x, y in zip(*data()):
        rows = slice(mesh.dp_rank * half, (mesh.dp_rank + 1) * half)
        loss = F.mse_loss(model(minipar.tensor(x[rows])), minipar.tensor(y[rows]))
        loss.backward()
        average_gradients(model.parameters(), mesh.dp)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(allreduce(mesh.dp, np.array([loss.item()]), op="mean")[0]))
    return {"losses": losses, "tp_rank": mesh.tp_rank,
            "params": [p.array for p in model.parameters()]}


@pytest.mark.timeout(60)
def test_dp2_x_pp2_on_4_ranks_trains_identically_to_one_process() -> None:
    reference_losses, reference = train_one_process()
    for result in run_local(train_dp_pp, 4):
        np.testing.assert_allclose(result["losses"], reference_losses, rtol=0, atol=TOL)
        want = [p.array for i in result["layers"] for p in reference[i].parameters()]
        for got, expected in zip(result["params"], want):
            np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@pytest.mark.timeout(60)
def test_dp2_x_tp2_on_4_ranks_trains_identically_to_one_process() -> None:
    reference_losses, reference = train_one_process()
    for result in run_local(train_dp_tp, 4):
        np.testing.assert_allclose(result["losses"], reference_losses, rtol=0, atol=TOL)
        rows = np.array_split(np.arange(8), 2)[result["tp_rank"]]
        w1, b1, w2, b2, w3, b3 = result["params"]
        for got, want in ((w1, reference[0].weight.array[rows]), (b1, reference[0].bias.array[rows]),
                          (w2, reference[2].weight.array[:, rows]), (b2, reference[2].bias.array),
                          (w3, reference[4].weight.array), (b3, reference[4].bias.array)):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


# ----- one real launch ---------------------------------------------------------------------------
@requires_mpi
@pytest.mark.timeout(90)
def test_mesh_groups_and_hybrid_training_under_mpiexec_on_4_ranks() -> None:
    result = run_mpi("""
        import numpy as np
        import test_mesh as t
        from minipar.comm import world
        comm = world()
        facts = t.mesh_facts(comm, 2, 2, 1)
        groups = t.expected_groups(2, 2, 1, comm.rank)
        assert all(facts[name] == groups[name] for name in ("dp", "pp", "tp")), facts
        reference_losses, reference = t.train_one_process()
        for name, train in (("dp x pp", t.train_dp_pp), ("dp x tp", t.train_dp_tp)):
            r = train(comm)
            error = np.array([np.abs(np.array(r["losses"]) - reference_losses).max()])
            worst = t.allreduce(comm, error, op="max")[0]  # one line from rank 0: no interleaving
            if comm.rank == 0:
                print(f"{name}: {comm.size} ranks, worst loss error {worst:.1e}", flush=True)
    """, n=4, timeout=60, env={"PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}"})
    out = assert_ok(result)
    for name in ("dp x pp", "dp x tp"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert line.startswith(f"{name}: 4 ranks") and float(line.split()[-1]) < TOL, out


@pytest.mark.timeout(60)
def test_ranks_asking_for_different_meshes_fail_at_construction_naming_each_shape() -> None:
    """D8: a rank built with dp=2, pp=2 and one with dp=4 used to get mismatched groups."""

    def body(comm):
        if comm.rank == 3:
            return ProcessMesh(comm, dp=4)
        return ProcessMesh(comm, dp=2, pp=2)

    with pytest.raises(ValueError, match=r"different meshes \(rank 0: dp=2, pp=2, tp=1, .*rank 3: dp=4"):
        run_local(body, 4)
