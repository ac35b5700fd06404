"""ZeRO stage 1: shard the optimizer's state -- and its update -- over the data-parallel ranks.

    mpiexec -n 4 python -m mpi4py lessons/05_zero.py

Plain data parallelism keeps p identical copies of the optimizer state. ZeRO
(Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", 2020) notes that each rank only needs to update 1/p of the
parameters if it then shares the result. Flatten the Ψ parameter elements into
one array; rank r owns the contiguous shard ``[b_r, b_{r+1})`` with
``numpy.array_split`` boundaries. Each step:

1. copy the local gradients into a flat buffer and **reduce-scatter** it (op
   "mean"): rank r receives the averaged gradient of its shard only;
2. the wrapped optimizer steps **one flat Parameter**, a view of the shard of
   the flat parameter buffer, so its state covers Ψ/p elements, not Ψ;
3. **all-gather** the updated shards into the flat parameter buffer, of which
   every model parameter's ``.array`` is a view: all ranks hold the new weights.

Bytes sent per rank and step: reduce-scatter (p-1)/p Ψ + all-gather (p-1)/p Ψ
= 2(p-1)/p Ψ elements, exactly a ring all-reduce, i.e. what DDP sends.

Optimizer memory per rank (Adam, state ``exp_avg`` and ``exp_avg_sq``):
plain data parallel 2 * 4Ψ = 8Ψ bytes in fp32; ZeRO-1 8Ψ/p. (The paper's
``K Ψ / N_d`` with K = 12 counts mixed precision, where the fp32 master copy of
the weights, 4Ψ, is optimizer state too; here the weights are the model's own
fp32/fp64 arrays, so K = 2 * itemsize: 8 in fp32, 16 in fp64.)

Wrap a plain module's parameters, not a DDP-wrapped module's: the
reduce-scatter replaces DDP's all-reduce. After ``step`` the model's own
``.grad`` arrays still hold the local (not averaged) gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.comm import (
    Communicator,
    allgather,
    broadcast,
    chunk_bounds,
    reduce_scatter,
    require_communicator,
)
from minipar.nn.module import Parameter
from minipar.optim import Optimizer
from minipar.parallel.flat_buffer import FlatBuffer
from minipar.tensor import Tensor


class ZeroOptimizer:
    """``ZeroOptimizer(optim.Adam, model.parameters(), comm, lr=1e-3)``: the optimizer interface,
    with state and update sharded over ``comm`` (see the module docstring).

    Construction broadcasts rank 0's parameters and makes every parameter's
    ``.array`` a view of one flat buffer. If ``.array`` is later replaced (e.g. by
    ``load_state_dict``), the next ``step`` copies the new values in first. A
    parameter with no gradient on a rank counts as a zero gradient there.
    """

    def __init__(self, optimizer_class: type[Optimizer], params: Iterable[Any], comm: Communicator,
                 **optimizer_kwargs: Any) -> None:
        require_communicator(comm, "ZeroOptimizer")
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError("ZeroOptimizer's first argument is an optimizer class such as optim.Adam, "
                            f"got {optimizer_class!r}")
        unique: dict[int, Tensor] = {}
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(f"ZeroOptimizer expects a list of Parameters (parameter groups are not "
                                f"supported), got {type(param).__name__} at position {index}")
            if not param.requires_grad:
                raise ValueError(f"parameter {index} does not require grad: nothing to optimize")
            unique.setdefault(id(param), param)
        self.params = list(unique.values())
        if not self.params:
            raise ValueError("ZeroOptimizer got an empty parameter list")
        first = self.params[0]
        for param in self.params:
            if param.dtype != first.dtype or param.device != first.device:
                raise ValueError(f"ZeroOptimizer flattens parameters into one array, so they must share "
                                 f"dtype and device: got {first.dtype} on {first.device} and "
                                 f"{param.dtype} on {param.device}")
        self.comm = comm
        xp = get_array_module(first.array)
        shapes = [param.shape for param in self.params]
        self._params_buffer = FlatBuffer(shapes, first.dtype, xp)  # every parameter a view of it
        self._grads_buffer = FlatBuffer(shapes, first.dtype, xp)
        self.flat_params, self.flat_grads = self._params_buffer.flat, self._grads_buffer.flat
        self._param_views = self._params_buffer.views
        self.total_length = len(self.flat_params)
        self._params_buffer.pack([param.array for param in self.params])
        broadcast(comm, self.flat_params)  # rank 0's weights everywhere, as DDP does
        for param, view in zip(self.params, self._param_views):
            param.array = view
        bounds = chunk_bounds(self.total_length, comm.size)
        self.shard_bounds = (bounds[comm.rank], bounds[comm.rank + 1])
        self._shard_view = self.flat_params[self.shard_bounds[0]:self.shard_bounds[1]]
        self.shard = Parameter(self._shard_view)  # the one parameter the wrapped optimizer sees
        self.optimizer = optimizer_class([self.shard], **optimizer_kwargs)
        self.param_groups = self.optimizer.param_groups  # shared: a learning-rate change applies
        self._join: Any = None  # the active join() (uneven inputs), if any

    def __repr__(self) -> str:
        lo, hi = self.shard_bounds
        return (f"ZeroOptimizer({type(self.optimizer).__name__}, rank {self.comm.rank} of "
                f"{self.comm.size} owns elements [{lo}, {hi}) of {self.total_length})")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad.array[...] = 0
        self.shard.grad = None

    def join(self, divide_by_initial_world_size: bool = False, enable: bool = True) -> Any:
        """``with zero.join():`` -- ranks may run out of batches at different steps
        (``parallel/data_parallel/join.py``): a rank that has joined keeps stepping its shard."""
        from minipar.parallel.data_parallel.join import Join

        return Join(self, divide_by_initial_world_size=divide_by_initial_world_size, enable=enable)

    def _shadow(self, divisor: int) -> None:
        self._step(divisor, zeros=True)

    def _join_finished(self, longest: int) -> None:
        pass  # every rank took part in every all-gather: the models already agree

    def step(self) -> None:
        """Reduce-scatter the gradients, update this rank's shard, all-gather the parameters."""
        join = getattr(self, "_join", None)
        self._step(join.active_ranks() if join is not None else None)

    def _step(self, divisor: int | None, zeros: bool = False) -> None:
        """One step; ``divisor``: average over that many ranks (inside join), else over all."""
        for param, view in zip(self.params, self._param_views):
            if param.array is not view:  # .array was replaced: take the new values in
                view[...] = param.array
                param.array = view
        self._grads_buffer.pack([None if zeros or param.grad is None else param.grad.array
                                 for param in self.params])
        # flat (Ψ,) -> averaged shard (Ψ/p,), a view into flat_grads; (p-1)/p Ψ elements sent
        if divisor is None:
            shard = reduce_scatter(self.comm, self.flat_grads, op="mean")
        else:
            shard = reduce_scatter(self.comm, self.flat_grads, op="sum")
            shard /= divisor
        self.shard.grad = Tensor(shard)
        self.optimizer.step()
        if self.shard.array is not self._shard_view:  # an optimizer that rebinds .array
            self._shard_view[...] = self.shard.array
            self.shard.array = self._shard_view
        # shard (Ψ/p,) -> flat (Ψ,) in place, every parameter a view of it; (p-1)/p Ψ elements sent
        allgather(self.comm, self._shard_view, out=self.flat_params)

    # ----- state: this rank's shard only ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict (arrays of this shard's length) plus ``"zero"``:
        world size, rank, every rank's shard bounds and the total length, enough to re-split."""
        inner = self.optimizer.state_dict()
        return {**inner, "zero": {
            "stage": 1, "world_size": self.comm.size, "rank": self.comm.rank,
            "shard_bounds": chunk_bounds(self.total_length, self.comm.size),
            "total_length": self.total_length,
        }}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by the same rank at the same world size and model size."""
        meta = state_dict.get("zero")
        if not isinstance(meta, dict):
            raise ValueError("not a ZeroOptimizer state dict: the 'zero' entry is missing")
        expected = (self.comm.size, self.comm.rank, self.total_length)
        got = (meta.get("world_size"), meta.get("rank"), meta.get("total_length"))
        if got != expected:
            raise ValueError(
                f"this ZeroOptimizer state dict was saved as (world size, rank, total length) = {got}, "
                f"expected {expected}; re-split the ranks' state dicts with reshard_state_dicts first")
        self.optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != "zero"})


def reshard_state_dicts(state_dicts: list[dict[str, Any]], world_size: int) -> list[dict[str, Any]]:
    """Every rank's ZeroOptimizer state dict (by rank) -> the state dicts for ``world_size`` ranks.

    Array entries (one element per shard element) are concatenated in rank
    order and re-cut at the new ``array_split`` boundaries; other entries
    (``step``, hyper-parameters) are the same on every rank and are kept.
    """
    if not state_dicts:
        raise ValueError("reshard_state_dicts needs the state dicts of all ranks, got none")
    metas = [sd.get("zero", {}) for sd in state_dicts]
    old_size, total = metas[0].get("world_size"), metas[0].get("total_length")
    if [m.get("rank") for m in metas] != list(range(len(state_dicts))) or old_size != len(state_dicts):
        raise ValueError(f"expected the state dicts of ranks 0..{len(state_dicts) - 1} in order, "
                         f"got ranks {[m.get('rank') for m in metas]}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    bounds = chunk_bounds(total, world_size)
    merged: dict[Any, dict[str, Any]] = {}
    for key, entry in state_dicts[0]["state"].items():
        merged[key] = {}
        for name, value in entry.items():
            if hasattr(value, "shape") and getattr(value, "ndim", 0) == 1:
                xp = get_array_module(value)
                merged[key][name] = xp.concatenate([sd["state"][key][name] for sd in state_dicts])
            else:
                merged[key][name] = value
    result = []
    for rank in range(world_size):
        lo, hi = bounds[rank], bounds[rank + 1]
        state = {key: {name: (value[lo:hi].copy() if hasattr(value, "shape") and value.ndim == 1
                              and value.shape[0] == total else value) for name, value in entry.items()}
                 for key, entry in merged.items()}
        result.append({"state": state, "param_groups": state_dicts[0]["param_groups"],
                       "zero": {**metas[0], "world_size": world_size, "rank": rank,
                                "shard_bounds": bounds}})
    return result
