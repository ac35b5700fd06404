"""Messages between pipeline stages, as autograd Functions (used by pipeline.py).

Stage s sends its output for each micro-batch to stage s+1 and later receives
the gradient of that output back. ``SendForward`` and ``RecvForward`` put both
directions in one place: forward sends/receives the activation, backward
receives/sends its gradient, so one ``backward()`` per micro-batch drives the
whole exchange::

    stage s:    out = stage(x);  handle = SendForward(out)  --activation-->  stage s+1: RecvForward()
                handle.backward(): recv grad  <--gradient--  RecvForward.backward: send grad

Shapes. Before the first activation of a step, a header (int64: ndim, dtype
code, shape, padded to ``MAX_NDIM``) tells the receiver what to allocate; all
micro-batches of a step share that shape, and a gradient has the shape of the
activation its receiver sent, so nothing else needs a header.

Deadlock. Sends are non-blocking (``isend``) and waited for at the end of the
step (``finish_step``): in 1F1B's steady state stage s sends an activation
forward while stage s+1 sends a gradient back, and two blocking sends facing
each other can deadlock under MPI's rendezvous protocol. Receives block.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module

TAG_ACTIVATION, TAG_GRADIENT, TAG_HEADER, TAG_LOSS, TAG_OUTPUT = 1100, 1101, 1102, 1103, 1104
MAX_NDIM = 8


def make_header(array: Any) -> np.ndarray:
    """int64 [ndim, ord(dtype char), *shape, 0...]: all a receiver needs to allocate."""
    if array.ndim > MAX_NDIM:
        raise ValueError(f"pipeline activations may have at most {MAX_NDIM} dims, got {array.shape}")
    return np.array([array.ndim, ord(array.dtype.char), *array.shape]
                    + [0] * (MAX_NDIM - array.ndim), dtype=np.int64)


def read_header(header: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
    ndim = int(header[0])
    return tuple(int(n) for n in header[2:2 + ndim]), np.dtype(chr(int(header[1])))


class StageLink:
    """This stage's messages to its neighbours; every one is timed into the step's timeline."""

    def __init__(self, comm: Any, record: Any, xp: Any) -> None:
        self.comm, self.record, self.xp = comm, record, xp
        self.prev = comm.rank - 1
        self.next = comm.rank + 1
        self.pending: list[tuple[Any, Any]] = []  # (request, array) of sends in flight
        self.incoming: tuple[tuple[int, ...], np.dtype] | None = None
        self.header_sent = False

    def start_step(self) -> None:
        self.incoming, self.header_sent = None, False

    def finish_step(self) -> None:
        for request, _ in self.pending:
            request.wait()
        self.pending.clear()

    def isend(self, array: Any, dest: int, tag: int, microbatch: int) -> None:
        array = get_array_module(array).ascontiguousarray(array)
        start = time.perf_counter()
        self.pending.append((self.comm.isend(array, dest, tag), array))  # keep array alive
        self.record("send", microbatch, start, time.perf_counter())

    def recv(self, shape: tuple[int, ...], dtype: Any, source: int, tag: int, microbatch: int,
             xp: Any = None) -> Any:
        buffer = (xp or self.xp).empty(shape, dtype=dtype)
        start = time.perf_counter()
        self.comm.recv(buffer, source, tag)
        self.record("recv", microbatch, start, time.perf_counter())
        return buffer

    def send_activation(self, array: Any, microbatch: int) -> None:
        if not self.header_sent:
            self.isend(make_header(array), self.next, TAG_HEADER, microbatch)
            self.header_sent = True
        self.isend(array, self.next, TAG_ACTIVATION, microbatch)

    def recv_activation(self, microbatch: int) -> Any:
        if self.incoming is None:  # the step's first activation: its shape and dtype first
            header = self.recv((MAX_NDIM + 2,), np.int64, self.prev, TAG_HEADER, microbatch, xp=np)
            self.incoming = read_header(header)
        return self.recv(*self.incoming, self.prev, TAG_ACTIVATION, microbatch)


class SendForward(Function):
    """Forward: send this stage's output to the next stage. Backward: receive its gradient.

    Returns a scalar handle: ``handle.backward()`` waits for d loss / d output from
    stage s+1 and back-propagates it through this stage. ``anchor`` (a leaf that
    requires grad) makes autograd record the call even when ``x`` needs no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: Any, anchor: Any, link: StageLink, microbatch: int) -> Any:
        link.send_activation(x, microbatch)
        ctx.link, ctx.microbatch, ctx.shape, ctx.dtype = link, microbatch, x.shape, x.dtype
        return get_array_module(anchor).zeros((), dtype=anchor.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
        grad_x = ctx.link.recv(ctx.shape, ctx.dtype, ctx.link.next, TAG_GRADIENT, ctx.microbatch)
        return (grad_x if ctx.needs_input_grad[0] else None), None, None, None


class RecvForward(Function):
    """Forward: receive the previous stage's output. Backward: send its gradient back."""

    @staticmethod
    def forward(ctx: Any, anchor: Any, link: StageLink, microbatch: int) -> Any:
        activation = link.recv_activation(microbatch)
        ctx.link, ctx.microbatch, ctx.dtype = link, microbatch, activation.dtype
        return activation

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[None, None, None]:
        grad = grad.astype(ctx.dtype, copy=False)  # the sender expects its activation's dtype
        ctx.link.isend(grad, ctx.link.prev, TAG_GRADIENT, ctx.microbatch)
        return None, None, None  # the anchor never gets a gradient
