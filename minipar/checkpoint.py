"""Gradient checkpointing: keep a block's input, forget its inside, recompute it in backward.

Plain backprop stores every activation a block makes so that backward can use
it. ``checkpoint(fn, x)`` runs ``fn`` without recording (``no_grad``) and keeps
only its inputs (and the RNG state); when the gradient arrives, backward runs
``fn`` once more, this time recording, and back-propagates through that fresh
graph. Memory falls, compute grows by one extra forward of ``fn``.

For a chain of n equal layers cut into k segments (``checkpoint_sequential``):

    stored activations  ~  k boundaries  +  n/k inside the segment being recomputed
    minimised at k = sqrt(n):  2 sqrt(n)  instead of n       (Chen et al. 2016)
    extra compute: one more forward of every checkpointed segment (~ +1/3 of a step)

    from minipar.checkpoint import checkpoint, checkpoint_sequential
    y = checkpoint(block, x)                      # one block, any callable
    y = checkpoint_sequential(model, 8, x)        # a Sequential in 8 segments

Limitations: ``fn`` must return a single Tensor (not a tuple); a parameter used
both inside and outside a checkpointed call (tied weights) receives its two
gradient parts in two accumulations, so its post-accumulate hooks fire twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from minipar import autograd as _autograd
from minipar.autograd import Function, enable_grad, is_grad_enabled, no_grad
from minipar.observe import trace
from minipar.random import get_rng_state, set_rng_state
from minipar.tensor import Tensor, recording_anchor

# A leaf that requires grad, passed to every checkpointed call whose tensor inputs
# all lack requires_grad. Without it ``Function.apply`` would record nothing and the
# parameters inside ``fn`` (which ``no_grad`` hides) would never get gradients. Its
# gradient is always None, so nothing is ever written into it.
_LEADING = 4  # fn, preserve_rng_state, tensor_mask, anchor come before the inputs


class CheckpointFunction(Function):
    """forward: ``fn`` under no_grad, inputs saved. backward: recompute, back-propagate.

    ``Function.apply`` hands forward the *arrays* behind tensors, so forward
    rebuilds tensors from them (``tensor_mask`` says which positions were
    tensors) and backward gives the recomputation fresh leaves that share those
    arrays, with ``requires_grad`` as the originals had (``ctx.needs_input_grad``).
    Parameters captured by ``fn`` are leaves of the recomputed graph, so the inner
    backward adds into their ``.grad`` once, as a plain backward would.
    """

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., Any], preserve_rng_state: bool,
                tensor_mask: tuple[bool, ...], anchor: Any, *args: Any) -> Any:
        ctx.fn, ctx.tensor_mask = fn, tensor_mask
        ctx.rng_state = get_rng_state() if preserve_rng_state else None
        ctx.save_for_backward(*args)  # the only activations a checkpointed block keeps
        inputs = [Tensor(a) if is_tensor else a for a, is_tensor in zip(args, tensor_mask)]
        with no_grad(), trace.span("checkpoint forward", "compute"):
            out = fn(*inputs)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"checkpoint: fn must return a single Tensor, got {type(out).__name__} "
                "(tuples of outputs are not supported: checkpoint each output's function)"
            )
        return out.array

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        needs = ctx.needs_input_grad[_LEADING:]
        inputs = [Tensor(a, requires_grad=need) if is_tensor else a
                  for a, is_tensor, need in zip(ctx.saved_tensors, ctx.tensor_mask, needs)]
        start = time.perf_counter()
        if ctx.rng_state is not None:  # replay the same dropout masks, then put the RNG back
            state_now = get_rng_state()
            set_rng_state(ctx.rng_state)
        try:
            with enable_grad():
                out = ctx.fn(*inputs)
        finally:
            if ctx.rng_state is not None:
                set_rng_state(state_now)
        trace.add_span("checkpoint recompute", "compute", start, time.perf_counter())
        if isinstance(out, Tensor) and out.requires_grad:
            # Walk from the output's node, not the tensor: holding the tensor would pin its
            # array for the whole backward of the segment, where plain backprop frees it early.
            root = out if out._node is None else out._node  # the walk reads root._node only
            del out
            with trace.span("checkpoint backward", "compute"):
                _backward_within(root, grad)  # adds into captured parameters' .grad, once
        input_grads = tuple(t.grad.array if need and t.grad is not None else None
                            for t, need in zip(inputs, needs))
        return (None,) * _LEADING + input_grads


def _backward_within(out: Any, grad: Any) -> None:
    """Back-propagate as part of the backward already running on this thread.

    The engine's walk is called directly (not ``Tensor.backward``) so that
    callbacks queued by hooks here (DDP's "all buckets done") run when the
    *outer* backward ends, not when this recomputed segment does.
    """
    _autograd.walk(out, grad, False)


def checkpoint(fn: Callable[..., Tensor], *args: Any, preserve_rng_state: bool = True) -> Tensor:
    """``fn(*args)`` without storing its intermediate activations; same value and gradients.

    ``args`` may mix tensors (with or without ``requires_grad``) and other values
    (passed through untouched). With ``preserve_rng_state`` the recomputation
    draws the same random numbers (dropout masks) as the first run, and the RNG is
    left afterwards exactly as backward found it. Under ``no_grad`` this is just
    ``fn(*args)``. When no input requires grad the output still requires grad
    (parameters inside ``fn`` may need it); if none does, its backward is a no-op.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable, got {type(fn).__name__}")
    if not is_grad_enabled():
        return fn(*args)
    tensor_mask = tuple(isinstance(a, Tensor) for a in args)
    any_grad = any(isinstance(a, Tensor) and a.requires_grad for a in args)
    anchor = None if any_grad else recording_anchor()
    return CheckpointFunction.apply(fn, preserve_rng_state, tensor_mask, anchor, *args)


class _Segment:
    """Calls layers one after another (a picklable, printable stand-in for a closure)."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __repr__(self) -> str:
        return f"_Segment({len(self.layers)} layers)"


def checkpoint_sequential(module: Any, segments: int, x: Tensor,
                          preserve_rng_state: bool = True) -> Tensor:
    """Run a ``Sequential`` in ``segments`` pieces, storing only the pieces' boundary activations.

    As in PyTorch, each of the first ``segments - 1`` pieces holds ``len // segments``
    layers and is checkpointed; the last piece (the rest) runs normally, because
    its backward comes first and would recompute at once what it just computed.
    Memory: O(segments + n/segments) activations, O(sqrt(n)) at segments = sqrt(n);
    compute: one extra forward of the checkpointed pieces.
    """
    layers = list(module)
    if isinstance(segments, bool) or not isinstance(segments, (int, np.integer)):
        raise TypeError(f"checkpoint_sequential: segments must be an int, got {type(segments).__name__}")
    if not 1 <= segments <= len(layers):
        raise ValueError(
            f"checkpoint_sequential: segments must be between 1 and the number of layers "
            f"({len(layers)}), got {segments}"
        )
    size = len(layers) // segments
    for index in range(segments - 1):
        piece = _Segment(layers[index * size:(index + 1) * size])
        x = checkpoint(piece, x, preserve_rng_state=preserve_rng_state)
    return _Segment(layers[(segments - 1) * size:])(x)


def checkpoint_stage(stage: Any, x: Tensor, preserve_rng_state: bool = True) -> Tensor:
    """GPipe's re-materialisation: run a whole pipeline stage keeping only its input.

    For ``PipelineParallel(..., checkpoint=True)``: call ``out = checkpoint_stage(
    stage_module, x)`` for each micro-batch in place of ``stage_module(x)``, keep
    ``x`` and ``out`` as usual, and later ``out.backward(grad_from_next_stage)``;
    the stage's activations are recomputed then and ``x.grad`` is filled (when
    ``x`` requires grad) for the previous stage. Stored per micro-batch: its input
    instead of every activation of the stage.
    """
    return checkpoint(stage, x, preserve_rng_state=preserve_rng_state)
