"""ParameterServer: bulk-synchronous equals SGD on the mean gradient; async applies every push.

The oracle is one process in float64. With ``max_staleness=0`` the servers apply each
round's pushes at once, so W workers must take exactly the steps one process takes on
the mean of their gradients (1e-12 after 8 steps), for one server and for sharded
servers. Asynchronous runs are checked for what holds whatever the timing: every push
applied and counted, the SSP bound on staleness, clean termination. Ranks are threads.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from mpirun import assert_ok, requires_mpi, run_mpi

import minipar
from minipar import nn, optim
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import ParameterServer

pytestmark = pytest.mark.timeout(120)
STEPS, BATCH, LR = 8, 6, 0.2
RNG = np.random.default_rng(7)
X = RNG.normal(size=(STEPS, 4, BATCH, 5))  # (step, worker, batch, features)
Y = RNG.integers(0, 3, size=(STEPS, 4, BATCH))


def make_model() -> nn.Module:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8, dtype=np.float64), nn.Tanh(), nn.Linear(8, 3, dtype=np.float64))


def worker_loop(ps: ParameterServer, model: nn.Module, worker: int, steps: int, pause: float = 0.0):
    for step in range(steps):
        ps.pull()
        model.zero_grad()
        F.cross_entropy(model(minipar.tensor(X[step, worker])), Y[step, worker]).backward()
        if pause:
            time.sleep(pause)
        ps.push()
    ps.pull()
    ps.stop()
    return [param.array.copy() for param in model.parameters()]


def train(world_size: int, num_servers: int, max_staleness, steps=None, pauses=None):
    def body(comm):
        model = make_model()
        ps = ParameterServer(model, comm, num_servers=num_servers, lr=LR, max_staleness=max_staleness)
        if ps.is_server:
            ps.serve()
            return {"updates": ps.updates, "staleness": dict(ps.staleness), "version": ps.version,
                    "counts": ps.staleness_counts(8)}
        rank = comm.rank
        final = worker_loop(ps, model, rank, STEPS if steps is None else steps[rank],
                            0.0 if pauses is None else pauses[rank])
        return {"params": final, "counts": ps.staleness_counts(8)}

    return run_local(body, world_size)


def one_process_sgd(workers: int) -> list[np.ndarray]:
    model = make_model()
    opt = optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        batch = X[step, :workers].reshape(workers * BATCH, 5)  # the union of the workers' batches
        opt.zero_grad()
        F.cross_entropy(model(minipar.tensor(batch)), Y[step, :workers].reshape(-1)).backward()
        opt.step()
    return [param.array for param in model.parameters()]


@pytest.mark.parametrize("world_size,num_servers", [(2, 1), (4, 1), (4, 2), (3, 2)])
def test_bulk_synchronous_server_equals_sgd_on_the_mean_gradient(world_size, num_servers) -> None:
    workers = world_size - num_servers
    results = train(world_size, num_servers, max_staleness=0)
    expected = one_process_sgd(workers)
    for worker in range(workers):
        for got, want in zip(results[worker]["params"], expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for server in results[workers:]:
        assert server["staleness"] == {0: workers * STEPS}  # bulk-synchronous: never stale
        assert server["version"] == STEPS  # one update per round


def test_one_asynchronous_worker_is_plain_sgd() -> None:
    results = train(2, 1, max_staleness=None)
    for got, want in zip(results[0]["params"], one_process_sgd(1)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert results[1]["staleness"] == {0: STEPS}


@pytest.mark.parametrize("max_staleness", [None, 1, 4])
def test_asynchronous_servers_apply_and_count_every_push(max_staleness) -> None:
    results = train(4, 2, max_staleness)
    for server in results[2:]:
        assert server["updates"] == server["version"] == 2 * STEPS
        assert sum(server["staleness"].values()) == 2 * STEPS
    counts = results[0]["counts"]  # the collective histogram: every push, on both servers
    assert counts.sum() == 2 * 2 * STEPS
    assert all(np.array_equal(result["counts"], counts) for result in results)


@pytest.mark.parametrize("max_staleness", [0, 1, 2])
def test_staleness_never_exceeds_the_ssp_bound_with_a_slow_worker(max_staleness) -> None:
    workers = 3
    results = train(4, 1, max_staleness, pauses=[0.02, 0.0, 0.0, 0.0])
    # Between worker w's pull and push, each other worker pushes at most 2s + 1 times.
    bound = (workers - 1) * (2 * max_staleness + 1) if max_staleness else 0
    assert max(results[3]["staleness"]) <= bound
    assert sum(results[3]["staleness"].values()) == workers * STEPS


@pytest.mark.parametrize("max_staleness", [0, 2, None])
def test_workers_with_different_step_counts_end_cleanly(max_staleness) -> None:
    results = train(4, 1, max_staleness, steps=[3, 8, 5, None])
    assert results[3]["updates"] == 3 + 8 + 5
    if max_staleness == 0:  # each round averages over the workers still training
        model = make_model()
        opt = optim.SGD(model.parameters(), lr=LR)
        for step in range(8):
            active = [worker for worker, count in enumerate([3, 8, 5]) if step < count]
            opt.zero_grad()
            F.cross_entropy(model(minipar.tensor(X[step, active].reshape(-1, 5))),
                            Y[step, active].reshape(-1)).backward()
            opt.step()
        for got, want in zip(results[1]["params"], model.parameters()):
            np.testing.assert_allclose(got, want.array, rtol=0, atol=1e-12)


def test_bad_arguments_raise_naming_what_was_expected() -> None:
    def body(comm):
        model = make_model()
        for kwargs, text in [({"num_servers": 0}, "num_servers must be an int in \\[1, 1\\]"),
                             ({"num_servers": 2}, "at least one rank"),
                             ({"lr": 0}, "lr must be a positive"),
                             ({"max_staleness": -1}, "max_staleness must be None")]:
            with pytest.raises(ValueError, match=text):
                ParameterServer(model, comm, **kwargs)
        ps = ParameterServer(model, comm)
        if ps.is_server:
            with pytest.raises(RuntimeError, match="is a server"):
                ps.pull()
            ps.serve()
        else:
            with pytest.raises(RuntimeError, match="is a worker"):
                ps.serve()
            ps.stop()
        return True

    assert run_local(body, 2) == [True, True]
    with pytest.raises(TypeError, match="Module"):
        run_local(lambda comm: ParameterServer("model", comm), 2)


MPI_SCRIPT = """
import numpy as np
import minipar
from minipar import nn, optim
from minipar.comm import world
from minipar.nn import functional as F
from minipar.parallel import ParameterServer
comm = world()
rng = np.random.default_rng(3)
X, Y = rng.normal(size=(6, 3, 4, 5)), rng.integers(0, 3, size=(6, 3, 4))
def model():
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6, dtype=np.float64), nn.Tanh(), nn.Linear(6, 3, dtype=np.float64))
net = model()
ps = ParameterServer(net, comm, num_servers=1, lr=0.3, max_staleness=0)
if ps.is_server:
    ps.serve()
else:
    for step in range(6):
        ps.pull(); net.zero_grad()
        F.cross_entropy(net(minipar.tensor(X[step, comm.rank])), Y[step, comm.rank]).backward(); ps.push()
    ps.pull(); ps.stop()
if comm.rank == 0:
    alone = model(); opt = optim.SGD(alone.parameters(), lr=0.3)
    for step in range(6):
        opt.zero_grad()
        F.cross_entropy(alone(minipar.tensor(X[step, :2].reshape(8, 5))), Y[step, :2].reshape(-1)).backward()
        opt.step()
    gap = max(float(np.abs(a.array - b.array).max()) for a, b in zip(net.parameters(), alone.parameters()))
    assert gap < 1e-12, gap
    print("OK bulk-synchronous under mpiexec", gap, flush=True)
"""


@requires_mpi
def test_bulk_synchronous_server_under_mpiexec_equals_one_process() -> None:
    result = run_mpi(MPI_SCRIPT, n=3, timeout=60, env={"MINIPAR_COMM_TIMEOUT": "30"})
    assert "OK bulk-synchronous under mpiexec" in assert_ok(result)
