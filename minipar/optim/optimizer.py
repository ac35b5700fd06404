"""Optimizers with PyTorch's exact update rules and state-dict layout.

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss.backward(); opt.step(); opt.zero_grad()

A state dict is ``{"state": {index: {...arrays...}}, "param_groups": [{...,
"params": [indices]}]}`` as in PyTorch, so it saves without pickling.

Cache blocking. A step is a few elementwise passes (scale the momentum, add
the gradient, scale, subtract) over every parameter. Written over whole
arrays (each optimizer's readable ``_step_readable``, ``blocked=False``), each
pass streams the parameter's arrays through main memory and makes a
gradient-sized temporary. The blocked form (``_step_block``, the default) runs
the passes block by block (``BLOCK_ELEMENTS`` elements, 512 KiB of float32 per
array), in place or into two reused scratch blocks: after the first pass a
block is still in cache, and main memory sees each array about once. The
arithmetic is the same, element by element, so the results are bit-identical.
What it buys, measured (``benchmarks/optimizer_step.py``, MLP 784-1024³-10,
11.7 MB, one process on this 2-core machine): Adam 1.23-1.39x faster blocked;
SGD with momentum 0.90-0.95x, i.e. slightly *slower* alone (three light passes
fit the memory bandwidth one core gets); its gain shows when two ranks step at
once and share the memory bus (DDP at p = 2: 0.8 ms per step, the first round's
measurement). CuPy arrays and non-contiguous parameters take whole-array blocks.

PyTorch's implementation switches ``foreach``, ``fused``, ``capturable`` and
``differentiable`` are accepted by every optimizer (so torch-spelled calls run)
and ignored: minipar has one implementation, on NumPy or CuPy arrays, and its
steps are never recorded by autograd. They are kept in the parameter groups, so
a state dict has PyTorch's keys.

Writing your own, as in PyTorch::

    class SignSGD(optim.Optimizer):
        def __init__(self, params, lr=0.01):
            super().__init__(params, dict(lr=lr))

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.state[p]["steps"] = self.state[p].get("steps", 0) + 1
                        p.array -= group["lr"] * np.sign(p.grad.array)
"""

from __future__ import annotations

import copy
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from minipar.autograd import enable_grad
from minipar.backend import get_array_module
from minipar.tensor import Tensor

BLOCK_ELEMENTS = 1 << 17  # elements per cache block of an optimizer step (see the module docstring)


def _blocks(*arrays: Any) -> Iterator[list[Any]]:
    """Matching 1-D blocks of equally shaped arrays (whole arrays for CuPy, non-contiguous or
    differently shaped ones)."""
    shape = arrays[0].shape
    if not all(type(a) is np.ndarray and a.flags.c_contiguous and a.shape == shape for a in arrays):
        yield list(arrays)
        return
    flat = [a.reshape(-1) for a in arrays]
    for start in range(0, flat[0].size, BLOCK_ELEMENTS):
        yield [a[start : start + BLOCK_ELEMENTS] for a in flat]


class _Scratch:
    """Two reusable temporaries shaped like a block: no allocation per pass."""

    def __init__(self) -> None:
        self.arrays: dict[Any, tuple[Any, Any]] = {}

    def pair(self, like: Any) -> tuple[Any, Any]:
        if type(like) is not np.ndarray or like.ndim != 1:  # a whole array: fresh temporaries
            xp = get_array_module(like)
            return xp.empty_like(like), xp.empty_like(like)
        pair = self.arrays.get(like.dtype)
        if pair is None or pair[0].size < like.size:
            pair = self.arrays[like.dtype] = (np.empty(max(like.size, BLOCK_ELEMENTS), like.dtype),
                                              np.empty(max(like.size, BLOCK_ELEMENTS), like.dtype))
        return pair[0][: like.size], pair[1][: like.size]


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses define ``step``.

    ``params`` is an iterable of Parameters or of parameter groups (dicts with a
    ``"params"`` list and any settings of ``defaults`` to override for that group).
    ``self.state`` maps a parameter to its state dict and, as in PyTorch, makes an
    empty one on first access (``self.state[p]`` never raises KeyError).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        groups = list(params)
        if len(groups) == 0:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{type(self).__name__}: a parameter group is a dict with a 'params' "
                             f"list, got {group!r:.80}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(
                    f"{type(self).__name__} expects Tensors/Parameters, got "
                    f"{type(param).__name__} at position {index}"
                )
            if not param.requires_grad:
                raise ValueError(f"parameter {index} does not require grad: nothing to optimize")
        if len({id(p) for p in params}) != len(params):  # each would be stepped twice
            raise ValueError(f"{type(self).__name__}: a parameter group lists the same parameter "
                             "more than once (e.g. a weight shared by two layers, passed twice)")
        seen = {id(p) for other in self.param_groups for p in other["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{type(self).__name__}: some parameters appear in more than one "
                             "parameter group")
        for key, value in group.items():
            if key in ("lr", "weight_decay", "momentum", "eps") and not (
                    isinstance(value, (int, float)) and value == value and value >= 0):
                raise ValueError(f"{type(self).__name__}: group {key} must be a number >= 0, got {value!r}")
        full = {**self.defaults, **group, "params": params}
        self.param_groups.append(full)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none or param.grad is None:
                    param.grad = None
                else:
                    param.grad.array[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given."""
        raise NotImplementedError(f"{type(self).__name__} must define step(closure=None)")

    def _stepped_params(self) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any]]]:
        """(param, its group, its state) for every parameter with a gradient, ``state["step"]`` counted.

        A parameter seen for the first time starts from ``self._new_state(param, group)``
        (``step=0`` and zeroed running averages), lazily, as PyTorch's optimizers do.
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state.update(self._new_state(param, group))
                state["step"] += 1
                yield param, group, state

    def _new_state(self, param: Any, group: dict[str, Any]) -> dict[str, Any]:
        """The state of a parameter before its first step (optimizers using ``_stepped_params``)."""
        raise NotImplementedError(f"{type(self).__name__} must define _new_state(param, group)")

    @staticmethod
    def _evaluate(closure: Callable[[], Any] | None) -> Any:
        """PyTorch's closure: re-run forward and backward (with grad enabled) and return the loss."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def state_dict(self) -> dict[str, Any]:
        """Parameters become indices in group order; state arrays are copied."""
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
                indices.append(index_of[id(param)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index_of[id(param)]] = {k: _snapshot(v) for k, v in self.state[param].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(groups)} parameter groups, optimizer has "
                f"{len(self.param_groups)}"
            )
        params = [p for group in self.param_groups for p in group["params"]]
        saved_count = sum(len(g["params"]) for g in groups)
        if saved_count != len(params):
            raise ValueError(f"state dict holds {saved_count} parameters, optimizer has {len(params)}")
        for index, (group, saved) in enumerate(zip(self.param_groups, groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"state dict group {index} holds {len(saved['params'])} parameters, "
                                 f"the optimizer's group {index} has {len(group['params'])}")
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = defaultdict(dict)
        for key, value in state_dict["state"].items():
            param = params[int(key)]
            self.state[param] = {k: copy.deepcopy(v) for k, v in value.items()}


def _check_number(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")


def _snapshot(value: Any) -> Any:
    """A copy of one state entry: Tensors (a custom optimizer's state) cloned, arrays copied."""
    if isinstance(value, Tensor):
        return value.clone()
    return value.copy() if hasattr(value, "copy") else value


def _check_flags(name: str, **flags: Any) -> None:
    """PyTorch's switches that minipar accepts and ignores must at least be bools (or None)."""
    for flag, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name}: {flag} must be a bool or None, got {value!r}")


def _check_betas(name: str, betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        _check_number(f"betas[{index}]", beta, 0.0)
        if not beta < 1:
            raise ValueError(f"{name} betas[{index}] must be in [0, 1), got {beta!r}")
