"""``Function(ctx)``: a differentiable operation, its forward and backward side by side.

Every differentiable operation is a ``Function`` subclass with two static
methods::

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):               # arrays in, one array out
            out = get_array_module(x).exp(x)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad):           # d(loss)/d(out) in, d(loss)/d(x) out
            (out,) = ctx.saved_tensors
            return grad * out

``Exp.apply(t)`` unwraps tensors to their arrays (``t.array``), runs ``forward``,
and -- when a gradient is wanted -- returns a tensor that remembers the call. The
call itself is the *ctx*: a node of the graph holding its inputs and what it saved.
Forward and backward see raw arrays (NumPy or CuPy), never Tensors.

Rules for ``backward`` implementations: never modify ``grad`` in place (the
same array may be handed to several inputs), return one gradient per
positional argument of ``forward`` (``None`` where there is none), and skip
work for inputs whose ``ctx.needs_input_grad[i]`` is False.

The graph, for tools that read it (``checkpoint``, ``observe.memory``): a node's
``inputs`` holds, per argument, the producing node (for a tensor made by an
operation), the leaf tensor itself, or the plain value; ``held_arrays()`` lists
what the node keeps alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minipar.autograd.grad_mode import modes

# The Tensor class, bound once by ``minipar.tensor`` when it is defined (tensor.py
# imports this package, never the reverse): ``apply`` wraps its results in it.
Tensor: Any = None

# The active profiler (``minipar.observe.profiler`` sets it; None: off). Function.apply and
# the backward walk test it once per call; when set, ``profiler.record(name, fn, *args)``
# runs ``fn(*args)`` and times it.
profiler: Any = None

_ENGINE_FIELDS = frozenset(("saved_tensors", "inputs", "needs_input_grad", "hooks"))


class Function:
    """Base class of differentiable operations; an instance is one call's ctx.

    Attributes a backward may read: ``ctx.saved_tensors`` (what forward saved),
    ``ctx.needs_input_grad`` (one bool per positional argument). The engine
    also keeps ``ctx.inputs`` (the arguments, with each non-leaf tensor replaced
    by the node that made it, so its array is not kept alive unless saved) and
    ``ctx.hooks`` (hooks registered on the output tensor).
    """

    saved_tensors: tuple[Any, ...] = ()

    @property
    def _node(self) -> Function:
        """A node stands for its output in ``inputs``: ``arg._node`` is the producer for both."""
        return self

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep arrays (or anything) for ``backward``; freed after it runs."""
        self.saved_tensors = arrays

    def held_arrays(self) -> Iterator[Any]:
        """Everything this node keeps for its backward: saved values and attributes forward set
        (a mask, a shape), not its graph edges."""
        yield from self.saved_tensors
        for name, value in vars(self).items():
            if name not in _ENGINE_FIELDS:
                yield value

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Any:
        """Run ``forward`` on the arrays behind ``args``; record the call if needed."""
        ctx = cls.__new__(cls)
        needs_grad = False
        arrays = []
        edges = []  # what backward needs of each input: a leaf tensor, a producer node, or a value
        for arg in args:
            if isinstance(arg, Tensor):
                arrays.append(arg.array)
                if arg.requires_grad:
                    needs_grad = True
                producer = arg._node
                edges.append(arg if producer is None else producer)
            else:
                arrays.append(arg)
                edges.append(arg)
        needs_grad = needs_grad and modes.grad_enabled
        if needs_grad:
            ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        else:
            ctx.needs_input_grad = (False,) * len(args)
        if profiler is None:
            out = cls.forward(ctx, *arrays)
        else:  # profiling: the one test the hot path pays when off
            out = profiler.record(cls.__name__, cls.forward, ctx, *arrays)
        if type(out) is not np.ndarray or out.dtype.hasobject:  # rare: one check on the hot path
            out = _checked_output(cls, out, args)
        result = Tensor.__new__(Tensor)  # Tensor._wrap(out), written out: this is the hot path
        result.array = out
        result._grad = result._hooks = result._post_accumulate_hooks = None
        if needs_grad:
            ctx.inputs = edges  # no input arrays: PyTorch's graph, too, keeps only what is saved
            ctx.hooks = None
            result.requires_grad = True
            result._node = ctx
        else:
            result.requires_grad = False
            result._node = None
        return result


def _checked_output(cls: type, out: Any, args: tuple[Any, ...]) -> Any:
    """Make ``forward``'s result an array: NumPy returns 0-d results as scalars."""
    if isinstance(out, (np.generic, int, float, complex)):
        out = np.asarray(out)
    if getattr(getattr(out, "dtype", None), "hasobject", False):
        raise TypeError(
            f"{cls.__name__}: expected tensors, arrays or numbers, got "
            f"({', '.join(type(arg).__name__ for arg in args)}) that NumPy combined into an object array"
        )
    return out
