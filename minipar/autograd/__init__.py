"""Reverse-mode automatic differentiation, in three files read in this order:

- ``grad_mode.py``: per-thread modes (``no_grad``, ``enable_grad``, the autocast cast);
- ``function.py``: ``Function(ctx)``, a differentiable operation's forward and backward
  side by side, and how ``apply`` records the graph;
- ``graph.py``: the backward walk over the graph -- the reference picture, then the production walk.
"""

from minipar.autograd.function import Function
from minipar.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from minipar.autograd.graph import (
    accumulate_leaf,
    backward,
    backward_reference,
    queue_callback,
    register_post_accumulate_grad_hook,
    walk,
)

__all__ = [
    "Function", "accumulate_leaf", "backward", "backward_reference", "enable_grad", "is_grad_enabled",
    "no_grad", "queue_callback", "register_post_accumulate_grad_hook", "set_grad_enabled", "walk",
]
