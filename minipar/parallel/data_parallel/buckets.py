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

from minipar.backend import get_array_module
from minipar.nn.module import Parameter
from minipar.parallel.flat_buffer import FlatBuffer

MiB = 1024 * 1024  # bucket_cap_mb counts mebibytes, as PyTorch does
Named = list[tuple[str, Parameter]]


class Bucket:
    """Parameters whose gradients travel together in one flat array, in two forms.

    - The plain, copying bucket (``in_place=False``): ``put`` copies each gradient into
      the parameter's view of one flat buffer (``flat_buffer.FlatBuffer``) and returns
      the view, which becomes ``param.grad.array`` (gradient-as-bucket-view: the averaged
      result needs no copy back). ``flat`` is the buffer, all-reduced as one message.
    - In place (``in_place=True``, the default): a bucket of *one* parameter needs no
      buffer: the gradient array itself (if C-contiguous) is all-reduced, saving one
      gradient-sized copy per step. Safe even while backward is still running, by the one
      promise the engine makes about ``.grad`` (``autograd.graph.accumulate_leaf``).
      Bigger buckets copy, as in the plain form. ``tests/test_data_parallel.py`` checks
      that both forms train identically.
    """

    def __init__(self, index: int, named: Named, in_place: bool = True) -> None:
        self.index = index
        self.names = [name for name, _ in named]
        self.params = [param for _, param in named]
        self.in_place = bool(in_place)
        self.nbytes = sum(param.array.nbytes for param in self.params)
        self.buffer: FlatBuffer | None = None  # allocated on the first copy
        self.flat: Any = None  # the array this step's all-reduce works on
        self.ready = [False] * len(self.params)
        self.pending = 0
        self.job = 0  # this step's all-reduce: its number on the communication thread

    def put(self, position: int, grad: Any) -> Any:
        """Place parameter ``position``'s gradient for this step; returns what ``.grad.array`` becomes."""
        param = self.params[position]
        if grad.shape != param.shape or grad.dtype != param.dtype:
            raise ValueError(
                f"gradient of {self.names[position]} has shape {grad.shape} and dtype {grad.dtype}, "
                f"but its bucket holds {param.shape} {param.dtype}; wrap the module after changing "
                "its parameters (e.g. after .double())")
        if self.in_place and len(self.params) == 1 and grad.flags.c_contiguous:
            self.flat = grad
            return grad
        if self.buffer is None:
            self.buffer = FlatBuffer([p.shape for p in self.params], param.dtype,
                                     get_array_module(param.array))
        view = self.buffer.views[position]
        if grad is not view:  # .grad zeroed in place (or accumulated) is already the view
            view[...] = grad
        self.flat = self.buffer.flat
        return view


def assign_buckets(named: Named, cap_bytes: float) -> list[Named]:
    """Greedy packing in the given order; a new bucket at the cap or a dtype/device change."""
    groups: list[Named] = []
    size = 0
    for name, param in named:
        current = groups[-1] if groups else None
        fits = (current is not None and size + param.array.nbytes <= cap_bytes
                and current[0][1].dtype == param.dtype and current[0][1].device == param.device)
        if fits:
            current.append((name, param))
            size += param.array.nbytes
        else:
            groups.append([(name, param)])
            size = param.array.nbytes
    return groups


class CommThread:
    """DDP's communication thread: runs submitted jobs in order, keeps the first error.

    One thread serves every backward of its DDP (started on the first, reused after):
    ``submit`` queues a job, ``wait`` returns once every job submitted so far has run
    and re-raises the first error of those jobs here. After an error the remaining
    jobs of that step are skipped (the ranks are out of step); the next step's run.
    ``close`` (or the owner being garbage-collected) ends the thread. Reusing it saves a
    thread start and join per step (``benchmarks/cluster_ddp.py`` measures both).
    """

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.submitted = 0  # jobs submitted, ever
        self.finished = 0  # jobs run (or skipped), ever
        self.done = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:  # after a failure the ranks are out of step: skip the rest
                try:
                    job()
                except BaseException as error:  # noqa: B036 - handed to the main thread
                    self.error = error
            del job  # holds its owner (the wrapper) alive while the thread waits otherwise
            with self.done:
                self.finished += 1
                self.done.notify_all()

    def submit(self, job: Callable[[], None]) -> int:
        """Queue ``job``; returns its number (1, 2, ... over the thread's life) for ``wait``."""
        self._raise_if_failed()  # fail fast, mid-backward
        if not self.thread.is_alive():
            raise RuntimeError(f"{self.thread.name} was closed: no more jobs can run on it")
        self.submitted += 1
        self.jobs.put(job)
        return self.submitted

    def wait(self, until: int | None = None) -> None:
        """Wait until job number ``until`` (default: every submitted job) has run; re-raise
        the first error of the jobs run so far here."""
        until = self.submitted if until is None else until
        with self.done:
            while self.finished < until and self.error is None:
                self.done.wait(0.1)  # short waits keep Ctrl-C working
        self._raise_if_failed()

    def close(self) -> None:
        """Let the queued jobs run, then end the thread (idempotent)."""
        self.jobs.put(None)
        if self.thread is not threading.current_thread():
            self.thread.join()

    def _raise_if_failed(self) -> None:
        if self.error is None:
            return
        with self.done:  # the jobs queued behind the failed one are skipped: let them pass
            while self.finished < self.submitted and self.thread.is_alive():
                self.done.wait(0.1)
        error, self.error = self.error, None
        if hasattr(error, "add_note"):
            error.add_note("(raised in DistributedDataParallel's communication thread)")
        raise error
