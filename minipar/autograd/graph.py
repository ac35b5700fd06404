"""The backward walk, twice: the reference picture first, then the engine's production walk.

    loss.backward()      # = minipar.autograd.backward(loss, ones)

Both give every leaf ``x`` that requires grad ``x.grad += d loss / d x``, summing the
contributions of every path from ``loss`` to ``x`` (the chain rule, one node at a time).

1. ``backward_reference`` is the micrograd picture: list the graph's nodes depth-first so
   that every node comes after all the nodes that consume its output (a topological
   order), run each node's ``backward`` once in that order, add up each input's
   gradient contributions, and at the very end copy every leaf's total into its ``.grad``.
   Simple, and slow only in what it keeps: every gradient stays alive until the end.
2. ``backward`` (production) finds the same order by *counting consumers*: first count,
   for every node and leaf, how many gradient contributions it will receive; then run a
   node as soon as its count reaches zero. Each input's gradient therefore arrives whole
   (hooks see it once), intermediate gradients are freed as soon as they are used, and a
   leaf's ``.grad`` is written the moment it is final -- which is what lets data
   parallelism start all-reducing the last layer's gradients while earlier layers are
   still being differentiated (``parallel/data_parallel/ddp.py``).

``tests/test_autograd_engines.py`` checks on random graphs (shared inputs, views,
pass-through gradients, hooks) that both give the same gradients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from minipar.autograd import function
from minipar.autograd.function import Function


# ----- hooks and leaves: shared by both walks --------------------------------------------------
def _run_hooks(hooks: list[Callable[[Any], Any]], grad: Any, who: str) -> tuple[Any, bool]:
    """Call each hook with the gradient as a Tensor; a hook may return a replacement
    (a Tensor or an array of the same shape). Returns (gradient array, replaced?)."""
    replaced = False
    for hook in hooks:
        result = hook(function.Tensor._wrap(grad))
        if result is not None:
            array = result.array if isinstance(result, function.Tensor) else result
            if getattr(array, "shape", None) != grad.shape:
                raise ValueError(f"a gradient hook on {who} must return None or a gradient of shape "
                                 f"{grad.shape}, got {type(result).__name__} of shape "
                                 f"{getattr(array, 'shape', None)}")
            grad, replaced = array, True
    return grad, replaced


def accumulate_leaf(leaf: Any, grad: Any, fresh: bool) -> None:
    """A leaf's gradient is final for this backward: run its hooks, add it into ``.grad``.

    **The one promise the engine makes about ``.grad``** (stated here, where it is kept):
    a leaf's ``.grad.array`` is always its own array -- never an array that a node,
    another leaf or the caller still holds -- and once the leaf's post-accumulate hooks
    have run, the engine never reads that array again. So a hook may modify it in place
    (DDP all-reduces it while backward goes on). To keep the promise without copying
    every gradient, ``fresh`` says the walk can prove nobody else holds ``grad`` (a new
    array that no node passed on unchanged or gave to two inputs): then it becomes
    ``.grad`` as it is, as PyTorch's AccumulateGrad "steals" an unshared gradient;
    otherwise it is copied.
    """
    if leaf._hooks is not None:
        grad, replaced = _run_hooks(leaf._hooks, grad, f"a leaf of shape {leaf.shape}")
        fresh = fresh and not replaced  # a hook's array may be kept elsewhere
    if grad.dtype != leaf.array.dtype:  # a float32 weight gets a float32 gradient, always
        grad, fresh = grad.astype(leaf.array.dtype), True
    current = leaf._grad
    if current is None:
        leaf._grad = function.Tensor._wrap(grad if fresh else grad.copy())
    elif current.array.flags.writeable and current.array.shape == grad.shape:
        current.array += grad  # in place, as PyTorch accumulates: no second gradient-sized array
    else:
        current.array = current.array + grad
    post = leaf._post_accumulate_hooks
    if post:
        for hook in post:
            hook(leaf)


def _check_not_freed(node: Function) -> None:
    if node.inputs is None:
        raise RuntimeError(
            "trying to backward through the graph a second time, or through a part of it whose "
            "saved arrays were freed by an earlier backward (pass retain_graph=True to keep them)"
        )


def _run_node(node: Function, out_grad: Any, retain_graph: bool) -> tuple[Any, ...]:
    """Hooks on the node's output, then its ``backward``; frees what forward saved."""
    if node.hooks is not None:
        out_grad, _ = _run_hooks(node.hooks, out_grad, f"the output of {type(node).__name__}")
    if function.profiler is None:
        input_grads = type(node).backward(node, out_grad)
    else:
        input_grads = function.profiler.record(f"{type(node).__name__}Backward", type(node).backward,
                                               node, out_grad)
    if type(input_grads) is not tuple:
        input_grads = (input_grads,)
    if not retain_graph:  # free what forward saved, as PyTorch does
        node.saved_tensors = ()
        node.inputs = None
    return input_grads


# ----- 1. the reference walk -------------------------------------------------------------------
def backward_reference(root: Any, grad: Any, retain_graph: bool = False) -> None:
    """Depth-first topological order, one pass over it, every leaf gradient copied at the end."""
    if root._node is None:
        accumulate_leaf(root, grad, fresh=False)
        return
    # Post-order depth-first search: a node is listed after every node it consumes.
    order: list[Function] = []
    visited: set[Function] = set()
    stack: list[tuple[Function, bool]] = [(root._node, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if node in visited:
            continue
        _check_not_freed(node)
        visited.add(node)
        stack.append((node, True))
        for edge, needed in zip(node.inputs, node.needs_input_grad):
            if needed and isinstance(edge, Function) and edge not in visited:
                stack.append((edge, False))
    # Reversed, every consumer runs before the nodes it consumes: each gradient is complete.
    node_grads: dict[Function, Any] = {root._node: grad}
    leaf_grads: dict[Any, Any] = {}  # leaf tensor -> the sum of its contributions
    for node in reversed(order):
        if node not in node_grads:
            continue  # every consumer said "no gradient"
        inputs, needs = node.inputs, node.needs_input_grad
        input_grads = _run_node(node, node_grads.pop(node), retain_graph)
        for edge, needed, input_grad in zip(inputs, needs, input_grads):
            if needed and input_grad is not None:
                sums = node_grads if isinstance(edge, Function) else leaf_grads
                sums[edge] = input_grad if edge not in sums else sums[edge] + input_grad
    for leaf, total in leaf_grads.items():
        accumulate_leaf(leaf, total, fresh=False)  # always copied: the plain, safe rule


# ----- 2. the production walk ------------------------------------------------------------------
def walk(root: Any, grad: Any, retain_graph: bool = False) -> None:
    """Count consumers, then run each node the moment its gradient is complete.

    Public for code that back-propagates *inside* a running backward (``checkpoint``
    recomputes a segment and walks it): unlike ``backward`` it does not run the
    queued final callbacks, so those still run when the outer backward ends.
    """
    root_node = root._node
    if root_node is None:  # backward on a leaf: its gradient is ``grad`` itself
        accumulate_leaf(root, grad, fresh=False)  # the caller's array: copied
        return
    _check_not_freed(root_node)

    # 1. Count, for every node and every leaf, how many gradient contributions it will
    #    receive (one per edge from a consumer that needs it). An input edge is the
    #    producing node itself, or the leaf tensor: either is the key.
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
                    _check_not_freed(edge)
                    stack.append(edge)
            else:
                pending[edge] = count + 1

    # 2. Run nodes whose output gradient is complete; sum contributions per input. Each
    #    pending gradient carries the flag ``accumulate_leaf`` needs: fresh or shared.
    grads: dict[Any, tuple[Any, bool]] = {root_node: (grad, False)}
    ready = [root_node]
    while ready:
        node = ready.pop()
        out_grad, _ = grads.pop(node)
        inputs, needs = node.inputs, node.needs_input_grad
        input_grads = _run_node(node, out_grad, retain_graph)
        for edge, needed, input_grad in zip(inputs, needs, input_grads):
            if not needed:
                continue
            if input_grad is not None:
                previous = grads.get(edge)
                if previous is None:
                    grads[edge] = (input_grad, _is_fresh(input_grad, out_grad, input_grads))
                else:
                    grads[edge] = (previous[0] + input_grad, True)  # a sum is a new array
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
                    accumulate_leaf(edge, total[0], total[1])
        input_grads = input_grad = total = previous = out_grad = None  # free before the next node


def _is_fresh(grad: Any, out_grad: Any, siblings: tuple) -> bool:
    """True if ``grad`` is a new array: not the node's incoming gradient passed on, not a
    view, returned once, and no sibling gradient is a view of it."""
    if grad is out_grad or getattr(grad, "base", None) is not None:
        return False
    count = 0
    for other in siblings:
        if other is grad:
            count += 1
        elif other is not None and getattr(other, "base", None) is grad:
            return False
    return count == 1


# ----- the entry point and its end-of-backward callbacks ---------------------------------------
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


def backward(root: Any, grad: Any, retain_graph: bool = False, reference: bool = False) -> None:
    """Back-propagate ``grad`` (the array d loss / d root) to every leaf that requires grad.

    ``reference=True`` takes ``backward_reference`` instead of the production walk (same
    gradients; every leaf's arrives at the end). Callbacks queued with ``queue_callback``
    during the walk run after it, in order.
    """
    outer = _final_callbacks.queue  # a hook may itself run a backward: keep the outer queue
    _final_callbacks.queue = queued = []
    try:
        (backward_reference if reference else walk)(root, grad, retain_graph)
    finally:
        _final_callbacks.queue = outer
    for callback in queued:
        callback()


def register_post_accumulate_grad_hook(tensor: Any, hook: Callable[[Any], None]) -> None:
    """Call ``hook(tensor)`` after a backward has added into ``tensor.grad``."""
    if tensor._node is not None:
        raise ValueError("post-accumulate-grad hooks are for leaf tensors (parameters) only")
    if tensor._post_accumulate_hooks is None:
        tensor._post_accumulate_hooks = []
    tensor._post_accumulate_hooks.append(hook)
