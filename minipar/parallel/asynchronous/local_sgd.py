"""Local SGD and DiLoCo: replicas step alone for H steps, then meet.

    mpiexec -n 4 python -m mpi4py lessons/17_async_and_local_sgd.py

Data parallelism averages gradients every step: 2(p-1)/p * N * itemsize bytes per rank
and step (ring all-reduce of N parameters). Local SGD (Stich 2019; Lin et al. 2020,
"post-local SGD") lets each replica take H optimizer steps on its own data, then
averages the parameters once:

    every step:        theta_r <- inner_step(theta_r, grad L_r(theta_r))     no messages
    every H-th step:   theta_r <- (1/p) sum_q theta_q                        one all-reduce

so it sends the same all-reduce 1/H as often: bytes per step are 1/H of DDP's. With
H = 1 and plain SGD, mean_q(theta - lr g_q) = theta - lr mean_q(g_q): DDP's step.

DiLoCo (Douillard et al. 2023) keeps a copy of the global parameters theta and treats
what the replicas learned in H steps as a gradient for an outer optimizer (Nesterov
momentum, e.g. ``SGD(lr=0.7, momentum=0.9, nesterov=True)``):

    outer gradient:    delta = theta - (1/p) sum_q theta_q         (the averaged change, negated)
    outer step:        theta <- outer_optimizer(theta, delta);   every theta_r <- theta

An outer ``SGD(lr=1)`` without momentum gives back plain local SGD (theta - delta is the
average). ``outer_optimizer`` is a function of the global parameters that returns the
optimizer, e.g. ``functools.partial(optim.SGD, lr=0.7, momentum=0.9, nesterov=True)``,
since those parameters are created here.

    local = LocalSGD(model, comm, sync_every=16, outer_optimizer=None)
    opt = optim.SGD(model.parameters(), lr=0.1)
    for x, y in my_batches:
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
        local.step()                         # every 16th call: average (or the outer step)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minipar.comm import Communicator, allreduce, require_communicator
from minipar.nn.module import Module, Parameter
from minipar.optim.optimizer import Optimizer
from minipar.parallel.data_parallel.naive import broadcast_module
from minipar.parallel.flat_buffer import FlatBuffer
from minipar.tensor import Tensor


class LocalSGD:
    """Average the replicas' parameters every ``sync_every`` calls of ``step()`` (see above).

    Construction is collective: rank 0's parameters and buffers are broadcast. Call
    ``step()`` once after every inner optimizer step, on every rank; it returns True on
    the steps that synchronised. ``sync()`` synchronises now (e.g. before evaluating).
    """

    def __init__(self, module: Module, comm: Communicator, sync_every: int = 4,
                 outer_optimizer: Callable[[list[Parameter]], Optimizer] | None = None) -> None:
        require_communicator(comm, "LocalSGD")
        if not isinstance(module, Module):
            raise TypeError(f"LocalSGD needs a minipar.nn.Module, got {type(module).__name__}")
        if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"sync_every must be an int >= 1 (steps between averages), got {sync_every!r}")
        if outer_optimizer is not None and not callable(outer_optimizer):
            raise TypeError("outer_optimizer must be a function of the global parameters returning an "
                            "optimizer, e.g. functools.partial(optim.SGD, lr=0.7, momentum=0.9, "
                            f"nesterov=True); got {type(outer_optimizer).__name__}")
        self.module, self.comm, self.sync_every = module, comm, sync_every
        self.params = list(module.parameters())
        dtypes = {param.array.dtype for param in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"LocalSGD averages every parameter in one flat all-reduce, so they need "
                             f"one dtype; got {sorted(str(d) for d in dtypes)}")
        broadcast_module(module, comm)
        self.buffer = FlatBuffer([param.shape for param in self.params], dtypes.pop())
        self.local_steps = 0
        self.syncs = 0
        self.global_params: list[Parameter] | None = None
        self.outer: Optimizer | None = None
        if outer_optimizer is not None:  # DiLoCo: the outer optimizer owns a copy of theta
            self.global_params = [Parameter(param.array.copy()) for param in self.params]
            self.outer = outer_optimizer(self.global_params)
            if not isinstance(self.outer, Optimizer):
                raise TypeError(f"outer_optimizer(params) must return a minipar.optim Optimizer, got "
                                f"{type(self.outer).__name__}")

    def step(self) -> bool:
        """Count one local step; on every ``sync_every``-th, synchronise. True if it did."""
        self.local_steps += 1
        if self.local_steps % self.sync_every:
            return False
        self.sync()
        return True

    def sync(self) -> None:
        """Average the replicas now (local SGD), or take the outer step on the average (DiLoCo)."""
        flat = self.buffer.pack([param.array for param in self.params])
        allreduce(self.comm, flat, op="mean", algorithm="ring")  # (N,): the average of theta_r
        self.syncs += 1
        if self.outer is None:
            for param, average in zip(self.params, self.buffer.views):
                param.array[...] = average
            return
        assert self.global_params is not None
        for global_param, average in zip(self.global_params, self.buffer.views):
            global_param.grad = Tensor(global_param.array - average)  # delta = theta - mean theta_r
        self.outer.step()
        for param, global_param in zip(self.params, self.global_params):
            param.array[...] = global_param.array

    def state_dict(self) -> dict[str, Any]:
        """Steps taken, syncs done and (DiLoCo) the outer optimizer's state, for a snapshot."""
        state: dict[str, Any] = {"local_steps": self.local_steps, "syncs": self.syncs}
        if self.outer is not None:
            state["outer_optimizer"] = self.outer.state_dict()
        return state
