"""A parameter server: workers pull parameters and push gradients; servers apply each on arrival.

    mpiexec -n 4 python -m mpi4py lessons/17_async_and_local_sgd.py

The last ``num_servers`` ranks are servers, the others workers (rank 0 is a worker, so
it can print). The flat parameters (every parameter, in ``parameters()`` order) are
split by ``numpy.array_split`` into one shard per server. Asynchronous SGD (Dean et
al. 2012, "Downpour"; TensorFlow's ParameterServerStrategy):

    worker w, forever:   theta <- pull()                        from every server
                         g_w   <- grad L_w(theta)               its own batch
                         push(g_w)                              to every server
    server, per push:    shard <- shard - (lr / W) * g_w[shard] on arrival, in any order

W workers each take one step per push, so W pushes move the parameters as one
data-parallel step on the mean gradient would; but worker w's gradient was computed
on parameters ``staleness`` updates old: the updates other workers applied between its
pull and its push. ``staleness`` (a Counter: staleness -> pushes) records it per push.

The staleness bound (stale-synchronous parallel, Ho et al. 2013). A worker's clock c_w
is the number of pushes it has made. With ``max_staleness=s`` a server answers a pull
from worker w only when ``c_w - min_v c_v <= s``: nobody runs more than s pushes
ahead of the slowest worker (the pull waits, under the comm deadline). ``s = None`` is
fully asynchronous. ``s = 0`` is bulk-synchronous: the server keeps each round's pushes
until every worker's has come, then applies them at once in rank order,

    shard <- shard - lr * (g_1 + g_2 + ... + g_W) / W

which is exactly synchronous data-parallel SGD (every worker's staleness is 0).

The messages (tags below ``USER_TAG_LIMIT``): a worker sends a header
``[kind, clock]`` (int64) to each server: PULL (the server answers with its shard),
PUSH (the gradient shard follows, tag GRADIENT) or STOP. A server takes headers from
any worker as they come (``recv(header, ANY_SOURCE, TAG_HEADER)``), then the gradient
from that worker; it returns from ``serve()`` when every worker has sent STOP.
Workers post their receives for the servers' shards before asking, so a server's
reply never waits for a worker; every wait has the communicator's deadline.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from minipar.comm import ANY_SOURCE, Communicator, allreduce, require_communicator
from minipar.nn.module import Module
from minipar.parallel.data_parallel.naive import broadcast_module
from minipar.parallel.flat_buffer import FlatBuffer

TAG_HEADER, TAG_GRADIENT, TAG_PARAMS = 29901, 29902, 29903
PULL, PUSH, STOP = 0, 1, 2


class ParameterServer:
    """Servers hold shards of the flat parameters; workers pull, compute, push (see above).

    ``ps = ParameterServer(model, comm, num_servers=1, lr=0.1, max_staleness=None)`` is
    collective (rank 0's parameters are broadcast). Then::

        if ps.is_server:
            ps.serve()                       # until every worker has called stop()
        else:
            for x, y in batches:
                ps.pull()                    # model's parameters <- the servers' shards
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
                ps.push()                    # the gradients -> the servers
            ps.pull()                        # the final parameters
            ps.stop()
    """

    def __init__(self, module: Module, comm: Communicator, num_servers: int = 1, lr: float = 0.1,
                 max_staleness: int | None = None) -> None:
        require_communicator(comm, "ParameterServer")
        if not isinstance(module, Module):
            raise TypeError(f"ParameterServer needs a minipar.nn.Module, got {type(module).__name__}")
        if isinstance(num_servers, bool) or not isinstance(num_servers, int) \
                or not 1 <= num_servers < comm.size:
            raise ValueError(f"num_servers must be an int in [1, {comm.size - 1}] (at least one rank "
                             f"must be a worker) with {comm.size} ranks, got {num_servers!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if max_staleness == math.inf:
            max_staleness = None
        if max_staleness is not None and (isinstance(max_staleness, bool)
                                          or not isinstance(max_staleness, int) or max_staleness < 0):
            raise ValueError(f"max_staleness must be None (no bound) or an int >= 0, got {max_staleness!r}")
        self.params = list(module.parameters())
        dtypes = {param.array.dtype for param in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"ParameterServer packs every parameter into one flat array, so they need "
                             f"one dtype; got {sorted(str(d) for d in dtypes)}")
        self.comm, self.lr, self.max_staleness = comm, float(lr), max_staleness
        self.num_workers = comm.size - num_servers
        self.worker_ranks = list(range(self.num_workers))
        self.server_ranks = list(range(self.num_workers, comm.size))
        self.is_server = comm.rank >= self.num_workers
        broadcast_module(module, comm)  # everyone starts from rank 0's parameters
        self.buffer = FlatBuffer([param.shape for param in self.params], dtypes.pop())
        self.buffer.pack([param.array for param in self.params])
        bounds = np.cumsum([0] + [len(s) for s in np.array_split(self.buffer.flat, num_servers)])
        self.shard_bounds = [(int(lo), int(hi)) for lo, hi in zip(bounds, bounds[1:])]
        self.header = np.zeros(2, dtype=np.int64)
        self.staleness: Counter[int] = Counter()  # on servers: staleness -> pushes applied
        self.updates = 0  # on servers: pushes applied; on workers: pushes made
        if self.is_server:
            lo, hi = self.shard_bounds[comm.rank - self.num_workers]
            self.shard = self.buffer.flat[lo:hi].copy()
            self.version = 0  # updates applied to this shard
        else:
            for param, view in zip(self.params, self.buffer.views):
                param.array = view  # the model's parameters live in the flat buffer: pull fills them
            self.grads = FlatBuffer([param.shape for param in self.params], self.buffer.flat.dtype)
            self.clock = 0

    # ----- the worker's side ---------------------------------------------------------
    def _require_worker(self, what: str) -> None:
        if self.is_server:
            raise RuntimeError(f"ParameterServer.{what}() is for workers; rank {self.comm.rank} is a "
                               "server (call serve())")

    def _tell_servers(self, kind: int) -> None:
        self.header[:] = (kind, self.clock)
        for server in self.server_ranks:
            self.comm.send(self.header, server, TAG_HEADER)

    def pull(self) -> None:
        """Fill the model's parameters with every server's shard (waits under the staleness bound)."""
        self._require_worker("pull")
        replies = [self.comm.irecv(self.buffer.flat[lo:hi], server, TAG_PARAMS)
                   for server, (lo, hi) in zip(self.server_ranks, self.shard_bounds)]
        self._tell_servers(PULL)
        for reply in replies:
            reply.wait()

    def push(self) -> None:
        """Send the model's gradients (None counts as zeros) to the servers; the clock ticks."""
        self._require_worker("push")
        flat = self.grads.pack([None if param.grad is None else param.grad.array
                                for param in self.params])
        self._tell_servers(PUSH)
        for server, (lo, hi) in zip(self.server_ranks, self.shard_bounds):
            self.comm.send(flat[lo:hi], server, TAG_GRADIENT)
        self.clock += 1
        self.updates += 1

    def stop(self) -> None:
        """Tell every server this worker is done (its last call)."""
        self._require_worker("stop")
        self._tell_servers(STOP)

    # ----- the server's side ---------------------------------------------------------
    def serve(self) -> Counter[int]:
        """Answer pulls and apply pushes until every worker has stopped; returns ``staleness``."""
        if not self.is_server:
            raise RuntimeError(f"ParameterServer.serve() is for servers; rank {self.comm.rank} is a "
                               "worker (call pull/push/stop)")
        comm = self.comm
        active = set(self.worker_ranks)
        clocks = dict.fromkeys(self.worker_ranks, 0)  # pushes received from each worker
        pulled_at: dict[int, int] = dict.fromkeys(self.worker_ranks, 0)  # version each last pulled
        waiting: list[tuple[int, int]] = []  # pulls not yet allowed: (worker, its clock)
        self._round: dict[int, Any] = {}  # bulk-synchronous: this round's pushes by worker
        gradient = np.empty_like(self.shard)
        while active:
            status = comm.recv(self.header, ANY_SOURCE, TAG_HEADER)
            worker, (kind, clock) = status.source, self.header.tolist()
            if kind == PULL:
                waiting.append((worker, clock))
            elif kind == PUSH:
                comm.recv(gradient, worker, TAG_GRADIENT)
                self.staleness[self.version - pulled_at[worker]] += 1
                clocks[worker] = clock + 1
                if self.max_staleness == 0:
                    self._round[worker] = gradient.copy()
                else:  # asynchronous: on arrival
                    self.shard -= (self.lr / self.num_workers) * gradient
                    self.version += 1
                    self.updates += 1
            elif kind == STOP:
                active.discard(worker)
            else:
                raise ValueError(f"server rank {comm.rank}: unknown message kind {kind} from rank {worker}")
            if self.max_staleness == 0 and self._round and active <= self._round.keys():
                self._apply_round()
            slowest = min((clocks[w] for w in active), default=math.inf)
            still_waiting = []
            for worker, clock in waiting:
                if self.max_staleness is None or clock - slowest <= self.max_staleness:
                    comm.send(self.shard, worker, TAG_PARAMS)
                    pulled_at[worker] = self.version
                else:
                    still_waiting.append((worker, clock))
            waiting = still_waiting
        return self.staleness

    def _apply_round(self) -> None:
        """Bulk-synchronous: the round's gradients summed in rank order, one step on their mean."""
        workers = sorted(self._round)
        total = self._round[workers[0]].copy()
        for worker in workers[1:]:
            total += self._round[worker]
        self.shard -= self.lr * (total / len(workers))
        self._round.clear()
        self.version += 1
        self.updates += len(workers)

    # ----- after training ------------------------------------------------------------
    def staleness_counts(self, bins: int = 32) -> np.ndarray:
        """Collective: pushes by staleness 0..bins-1 (the last bin: ``>= bins - 1``), summed over servers."""
        counts = np.zeros(bins, dtype=np.int64)
        for staleness, pushes in self.staleness.items():
            counts[min(staleness, bins - 1)] += pushes
        return allreduce(self.comm, counts, op="sum")
