"""Gradient buckets and the communication thread that all-reduces them (DDP's machinery).

A ``Bucket`` is one flat contiguous array holding the gradients of a few
parameters, each parameter owning a view of it: one message of many
parameters instead of many small ones (the ring costs 2(p-1) latencies per
all-reduce, whatever its size). ``assign_buckets`` packs parameters greedily
in the order given; ``CommThread`` runs jobs (bucket all-reduces) one after
another on a background thread and hands any exception back to the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.backend import get_array_module
from minipar.nn.module import Parameter

MiB = 1024 * 1024  # bucket_cap_mb counts mebibytes, as PyTorch does
Named = list[tuple[str, Parameter]]


class Bucket:
    """Parameters whose gradients travel together in one flat array.

    ``put`` copies a gradient into the parameter's view of the flat buffer and
    returns the view, which becomes ``param.grad`` (gradient-as-bucket-view: the
    averaged result needs no copy back). A one-parameter bucket needs no
    buffer: the gradient array itself (if C-contiguous) is all-reduced in
    place, with no copy. That is safe even while backward is still running
    because the engine promises that a leaf's ``.grad`` is its own array and
    is never read again once the leaf's post-accumulate hooks have run
    (``autograd._accumulate_leaf``). ``flat`` is the array this step's
    all-reduce works on.
    """

    def __init__(self, index: int, named: list[tuple[str, Parameter]]) -> None:
        self.index = index
        self.names = [name for name, _ in named]
        self.params = [param for _, param in named]
        self.nbytes = sum(param.data.nbytes for param in self.params)
        self.buffer: Any = None  # allocated on first copy
        self.views: list[Any] = []
        self.flat: Any = None
        self.ready = [False] * len(self.params)
        self.pending = 0

    def put(self, position: int, grad: Any) -> Any:
        """Place parameter ``position``'s gradient for this step; returns what ``.grad`` becomes."""
        param = self.params[position]
        if grad.shape != param.shape or grad.dtype != param.dtype:
            raise ValueError(
                f"gradient of {self.names[position]} has shape {grad.shape} and dtype {grad.dtype}, "
                f"but its bucket holds {param.shape} {param.dtype}; wrap the module after changing "
                "its parameters (e.g. after .double())")
        if len(self.params) == 1 and grad.flags.c_contiguous:
            self.flat = grad
            return grad
        if self.buffer is None:
            xp = get_array_module(param.data)
            sizes = [p.data.size for p in self.params]
            self.buffer = xp.empty(sum(sizes), dtype=param.dtype)
            offsets = np.cumsum([0] + sizes).tolist()
            self.views = [self.buffer[lo:hi].reshape(p.shape)
                          for lo, hi, p in zip(offsets, offsets[1:], self.params)]
        if grad is not self.views[position]:  # .grad zeroed in place is already the view
            self.views[position][...] = grad
        self.flat = self.buffer
        return self.views[position]


def assign_buckets(named: Named, cap_bytes: float) -> list[Named]:
    """Greedy packing in the given order; a new bucket at the cap or a dtype/device change."""
    groups: list[Named] = []
    size = 0
    for name, param in named:
        current = groups[-1] if groups else None
        fits = (current is not None and size + param.data.nbytes <= cap_bytes
                and current[0][1].dtype == param.dtype and current[0][1].device == param.device)
        if fits:
            current.append((name, param))
            size += param.data.nbytes
        else:
            groups.append([(name, param)])
            size = param.data.nbytes
    return groups


class CommThread:
    """One backward's communication thread: runs submitted jobs in order, keeps the first error."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:  # after a failure the ranks are out of step: skip the rest
                try:
                    job()
                except BaseException as error:  # noqa: B036 - handed to the main thread
                    self.error = error

    def submit(self, job: Callable[[], None]) -> None:
        self._raise_if_failed()  # fail fast, mid-backward
        self.jobs.put(job)

    def finish(self) -> None:
        """Wait for every submitted job; re-raise the thread's exception here."""
        self.jobs.put(None)
        while self.thread.is_alive():
            self.thread.join(0.1)  # short joins keep Ctrl-C working
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            if hasattr(error, "add_note"):
                error.add_note("(raised in DistributedDataParallel's communication thread)")
            raise error
