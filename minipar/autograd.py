"""Reverse-mode automatic differentiation: ``Function(ctx)`` and the backward walk.

Every differentiable operation is a ``Function`` subclass with two static
methods, side by side::

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

``Exp.apply(t)`` unwraps tensors to arrays, runs ``forward``, and (when a
gradient is wanted) returns a tensor that remembers the call. The call itself
is the *ctx*: a node of the graph holding its inputs and what it saved.

``backward(root)`` walks that graph once, in an order where a node runs only
after every consumer of its output has handed in its gradient (a topological
order found by counting consumers). Each input's gradient therefore arrives
whole, hooks see it once, and a leaf's ``.grad`` is written as soon as it is
final -- which is what lets data parallelism start all-reducing the last
layer's gradients while earlier layers are still being differentiated.

Rules for ``backward`` implementations: never modify ``grad`` in place (the
same array may be handed to several inputs), return one gradient per
positional argument of ``forward`` (``None`` where there is none), and skip
work for inputs whose ``ctx.needs_input_grad[i]`` is False.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from minipar.tensor import Tensor


class _GradMode(threading.local):
    """Grad mode is per thread, as in PyTorch (``run_local`` ranks are threads)."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return _grad_mode.enabled


@contextmanager
def no_grad() -> Iterator[None]:
    """Run a block without recording a graph: outputs never require grad."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


@contextmanager
def enable_grad() -> Iterator[None]:
    """Record a graph inside a block even when an outer ``no_grad`` is active."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = True
    try:
        yield
    finally:
        _grad_mode.enabled = previous


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

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Tensor:
        """Run ``forward`` on the arrays behind ``args``; record the call if needed."""
        ctx = cls.__new__(cls)
        needs_grad = False
        arrays = []
        edges = []  # what backward needs of each input: a leaf tensor, a producer node, or a value
        for arg in args:
            if isinstance(arg, Tensor):
                arrays.append(arg.data)
                if arg.requires_grad:
                    needs_grad = True
                producer = arg._node
                edges.append(arg if producer is None else producer)
            else:
                arrays.append(arg)
                edges.append(arg)
        needs_grad = needs_grad and _grad_mode.enabled
        if needs_grad:
            ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        else:
            ctx.needs_input_grad = (False,) * len(args)
        out = cls.forward(ctx, *arrays)
        if type(out) is not np.ndarray or out.dtype.hasobject:  # rare: one check on the hot path
            out = _checked_output(cls, out, args)
        result = Tensor.__new__(Tensor)
        result.data = out
        result.grad = None
        if needs_grad:
            ctx.inputs = edges  # no input arrays: PyTorch's graph, too, keeps only what is saved
            ctx.hooks = None
            result.requires_grad = True
            result._node = ctx
        else:
            result.requires_grad = False
            result._node = None
        result._hooks = None
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


def _accumulate_leaf(leaf: Tensor, grad: Any, fresh: bool) -> None:
    """Leaf gradient is final for this backward: run hooks, add into ``.grad``.

    A leaf's ``.grad`` is always its own array, and once the leaf's
    post-accumulate hooks have run the engine never reads it again, so hooks
    may modify it in place (DDP all-reduces it while backward goes on).
    ``fresh`` says the walk can prove nobody else holds ``grad``: a new array
    that no node passed on unchanged or gave to two inputs. Then it becomes
    ``.grad`` as it is (as PyTorch's AccumulateGrad "steals" an unshared
    gradient); otherwise it is copied.
    """
    if leaf._hooks is not None:
        for hook in leaf._hooks:
            replaced = hook(grad)
            if replaced is not None:
                grad, fresh = replaced, False  # a hook's array may be kept elsewhere
    if grad.dtype != leaf.data.dtype:  # a float32 weight gets a float32 gradient, always
        grad, fresh = grad.astype(leaf.data.dtype), True
    if leaf.grad is None:
        leaf.grad = grad if fresh else grad.copy()
    elif leaf.grad.flags.writeable and leaf.grad.shape == grad.shape:
        leaf.grad += grad  # in place, as PyTorch accumulates: no second gradient-sized array
    else:
        leaf.grad = leaf.grad + grad
    post = getattr(leaf, "_post_accumulate_hooks", None)
    if post:
        for hook in post:
            hook(leaf)


class _FinalCallbacks(threading.local):
    """Callbacks queued during the backward running on this thread (None: no backward)."""

    queue: list[Callable[[], None]] | None = None


_final_callbacks = _FinalCallbacks()


def queue_callback(callback: Callable[[], None]) -> None:
    """Run ``callback()`` once the backward running on this thread has finished.

    For hooks that need to know "backward is over": DDP waits for its last
    all-reduces there, as PyTorch's reducer does with the engine's callback queue.
    """
    if _final_callbacks.queue is None:
        raise RuntimeError("queue_callback() can only be called during a backward (e.g. from a hook)")
    _final_callbacks.queue.append(callback)


def backward(root: Tensor, grad: Any, retain_graph: bool = False) -> None:
    """Back-propagate ``grad`` (d loss / d root) to every leaf that requires grad.

    Callbacks queued with ``queue_callback`` during the walk run after it, in order.
    """
    outer = _final_callbacks.queue  # a hook may itself run a backward: keep the outer queue
    _final_callbacks.queue = queued = []
    try:
        _walk(root, grad, retain_graph)
    finally:
        _final_callbacks.queue = outer
    for callback in queued:
        callback()


def _walk(root: Tensor, grad: Any, retain_graph: bool) -> None:
    """The backward walk: count consumers, then run nodes whose gradient is complete."""
    root_node = root._node
    if root_node is None:  # backward on a leaf: its gradient is ``grad`` itself
        _accumulate_leaf(root, grad, False)  # the caller's array: copied
        return
    if root_node.inputs is None:
        raise RuntimeError(
            "trying to backward through the graph a second time: its saved arrays were "
            "freed by the first backward (pass retain_graph=True to keep them)"
        )

    # 1. Count, for every node and every leaf, how many gradient contributions
    #    it will receive (one per edge from a consumer that needs it). An input
    #    edge is the producing node itself, or the leaf tensor: either is the key.
    pending: dict[Any, int] = {}
    stack = [root_node]
    while stack:
        node = stack.pop()
        for edge, needed in zip(node.inputs, node.needs_input_grad):
            if not needed:
                continue
            count = pending.get(edge)
            if count is None:
                pending[edge] = 1
                if isinstance(edge, Function):
                    if edge.inputs is None:
                        raise RuntimeError(
                            "trying to backward through a part of the graph whose saved "
                            "arrays were freed (use retain_graph=True on the first backward)"
                        )
                    stack.append(edge)
            else:
                pending[edge] = count + 1

    # 2. Run nodes whose output gradient is complete; sum contributions per input.
    #    Each pending gradient carries a flag: "fresh" (a new array only this
    #    edge holds) or not (passed on unchanged, or handed to two inputs).
    grads: dict[Any, tuple[Any, bool]] = {root_node: (grad, False)}
    ready = [root_node]
    while ready:
        node = ready.pop()
        out_grad, _ = grads.pop(node)
        if node.hooks is not None:
            for hook in node.hooks:
                replaced = hook(out_grad)
                if replaced is not None:
                    out_grad = replaced
        input_grads = type(node).backward(node, out_grad)
        if type(input_grads) is not tuple:
            input_grads = (input_grads,)
        inputs, needs = node.inputs, node.needs_input_grad
        if not retain_graph:  # free what forward saved, as PyTorch does
            node.saved_tensors = ()
            node.inputs = None
        for edge, needed, input_grad in zip(inputs, needs, input_grads):
            if not needed:
                continue
            if input_grad is not None:
                previous = grads.get(edge)
                if previous is None:
                    grads[edge] = (input_grad, _is_fresh(input_grad, out_grad, input_grads))
                else:
                    grads[edge] = (previous[0] + input_grad, True)
            count = pending[edge] - 1
            pending[edge] = count
            if count == 0:
                total = grads.get(edge)
                if total is None:
                    continue  # every consumer said "no gradient": nothing flows on
                if isinstance(edge, Function):
                    ready.append(edge)
                else:
                    del grads[edge]
                    _accumulate_leaf(edge, total[0], total[1])
        input_grads = input_grad = total = previous = None  # let handed-on arrays go before the next node


def _is_fresh(grad: Any, out_grad: Any, siblings: tuple) -> bool:
    """True if ``grad`` is a new array that no other returned gradient shares or views."""
    if grad is out_grad or getattr(grad, "base", None) is not None:
        return False
    count = 0
    for other in siblings:
        if other is grad:
            count += 1
        elif other is not None and getattr(other, "base", None) is grad:
            return False  # another input's gradient is a view of this one
    return count == 1


def register_post_accumulate_grad_hook(tensor: Tensor, hook: Callable[[Tensor], None]) -> None:
    """Call ``hook(tensor)`` after a backward has added into ``tensor.grad``."""
    if tensor._node is not None:
        raise ValueError("post-accumulate-grad hooks are for leaf tensors (parameters) only")
    hooks = getattr(tensor, "_post_accumulate_hooks", None)
    if hooks is None:
        tensor._post_accumulate_hooks = hooks = []
    hooks.append(hook)


# Bottom import: tensor.py imports this module too; Function must exist first.
from minipar.tensor import Tensor  # noqa: E402,F811
