"""Data parallelism: every rank holds the whole model, runs its own share of the batch,
and the ranks average their gradients before the optimizer step.

    mpiexec -n 4 python -m mpi4py lessons/04_data_parallel.py

Why averaging is exact. With the loss a mean over a global batch of p*b samples
and each rank's loss L_r the mean over its b samples, L = (1/p) sum_r L_r, so
grad L = (1/p) sum_r grad L_r: p ranks that average their gradients take exactly
the step one process takes on the whole batch (up to float rounding).

Two forms, the naive one first:

- ``allreduce_gradients`` / ``NaiveDataParallel``: after backward, one ring
  all-reduce per parameter. Bytes sent per rank and step: 2(p-1)/p * N * itemsize
  (N parameter elements), in 2(p-1) messages *per parameter*, none of it
  overlapping computation.
- ``DistributedDataParallel``: the same bytes, in 2(p-1) messages per *bucket*,
  each started as soon as its gradients are final, while backward is still
  computing the earlier layers' gradients.

How DDP works, step by step:

1. Construction broadcasts rank 0's parameters and buffers (ranks may start
   different). Parameters are packed, in reverse registration order (the order
   backward finishes them: last layer first), into buckets of at most
   ``bucket_cap_mb`` MiB; a parameter bigger than that gets a bucket of its own.
   A bucket of several parameters is one flat contiguous array, each parameter
   owning a view of it (``buckets.py``).
2. ``forward`` (outside ``no_sync()``) arms the next backward.
3. The autograd engine calls ``_grad_ready_hook(param)`` as soon as a leaf's
   ``.grad`` is final. The hook copies it into its bucket view and makes
   ``param.grad.array`` *that view* (gradient-as-bucket-view): the average lands
   in ``.grad`` with no copy back. Memory: the flat buffers hold N * itemsize
   bytes per rank and *are* the gradients (the engine's fresh arrays are freed
   after the copy). A one-parameter bucket skips the copy (``reduce_in_place``,
   see ``buckets.Bucket``).
4. When a bucket's last gradient arrives the bucket is ready. Ready buckets are
   launched strictly in bucket order (bucket k+1 waits for bucket k), so every
   rank issues the same collectives in the same order whatever order its hooks
   fire in. With ``overlap=True`` a communication thread runs each launched
   bucket's ring all-reduce (op "mean") while the main thread keeps
   differentiating: NumPy's matmuls and MPI's waits release the GIL. With
   ``overlap=False`` the main thread runs it at once, inside the hook, while
   the bucket's gradients are still in cache; backward pauses meanwhile.
5. At the end of backward (a callback queued with ``autograd.queue_callback``)
   parameters that got no gradient are handled, the remaining buckets are
   launched, and the main thread waits for the ones still in flight. So
   ``loss.backward()`` returns with averaged gradients and ``step`` waits for nothing
   (or, after ``apply_optimizer_in_backward``, it steps each bucket as its average
   lands, while the later buckets still travel: ``optimizer_in_backward.py``).

Thread rules. One communication thread per wrapper, started by the first
overlapped backward and reused by every later one (``buckets.CommThread``). From
a backward's first launch until backward has waited for its jobs that thread owns
the communicator (the main thread makes no calls on it meanwhile), so MPI sees
one caller at a time. An exception on that thread is re-raised on the main
thread, unchanged, at the latest when backward ends -- never swallowed. Every
rank holds bit-identical gradients, independent of timing (``ring.py``). What
overlap hides across hosts, and why not more: ``benchmarks/cluster_ddp.py``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np

from minipar import autograd
from minipar.backend import get_array_module
from minipar.comm import Communicator, allreduce, require_communicator
from minipar.nn.module import Module, Parameter
from minipar.observe import trace
from minipar.parallel.data_parallel.buckets import Bucket, CommThread, MiB, assign_buckets
from minipar.parallel.data_parallel.naive import (
    _check_same_trainable,
    _trace_rank,
    _trainable,
    broadcast_module,
    given_or_default_group,
)
from minipar.parallel.data_parallel.optimizer_in_backward import apply_optimizer_in_backward, wait_and_step
from minipar.parallel.data_parallel.wrapper import ModuleWrapper
from minipar.parallel.replicas import check_replicas
from minipar.tensor import Tensor


class DistributedDataParallel(ModuleWrapper):
    """Bucketed gradient averaging, overlapped with backward (see the module docstring).

    ``find_unused_parameters=False``: a parameter that gets no gradient in a
    synchronising backward raises a RuntimeError naming it (on every rank that
    lacks it), rather than leaving the other ranks waiting. With True such a
    parameter counts as a zero gradient on this rank, and one extra small
    all-reduce per step tells the ranks which parameters nobody used: those
    keep ``.grad`` None, exactly as on one process.

    ``check_every=N`` runs ``parallel.replicas.check_replicas`` before every N-th training
    forward (off by default): a diverged rank is named, not silently averaged.

    PyTorch's signature: ``device_ids``/``output_device`` (devices are the arrays' own here),
    ``process_group=`` (an alias of ``comm=``), ``dim``, ``broadcast_buffers``,
    ``gradient_as_bucket_view`` (always: the averaged gradients live in the buckets) and
    ``static_graph`` are accepted; ``comm`` defaults to the initialised process group
    (``minipar.distributed``).

    ``reduce_in_place=False``: the plain, copying bucket for all (``buckets.Bucket``).
    """

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None, *,
                 comm: Communicator | None = None, bucket_cap_mb: float = 25, overlap: bool = True,
                 find_unused_parameters: bool = False, reduce_in_place: bool = True,
                 check_every: int | None = None, process_group: Communicator | None = None,
                 dim: int = 0, broadcast_buffers: bool = True, gradient_as_bucket_view: bool = True,
                 static_graph: bool = False) -> None:
        if hasattr(device_ids, "rank") and hasattr(device_ids, "size"):
            raise TypeError("DistributedDataParallel(module, device_ids=None, output_device=None, *, "
                            "comm=...) has PyTorch's positional order: pass the communicator as a keyword: "
                            "DistributedDataParallel(module, comm=comm)")
        if device_ids is not None and not isinstance(device_ids, (list, tuple)):
            raise TypeError(f"DistributedDataParallel device_ids is a list of device indices (or None), got "
                            f"{type(device_ids).__name__}; the communicator goes in comm=")
        comm = given_or_default_group(comm if comm is not None else process_group)
        require_communicator(comm, "DistributedDataParallel")
        named = _trainable(module, "DistributedDataParallel")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number of MiB, got {bucket_cap_mb!r}")
        if overlap and comm.size > 1 and getattr(comm, "thread_multiple", True) is False:
            raise ValueError("overlap=True runs collectives on a second thread, which needs MPI "
                             "initialised with MPI_THREAD_MULTIPLE; pass overlap=False")
        self.module, self.comm = module, comm
        self.bucket_cap_mb, self.overlap = bucket_cap_mb, bool(overlap)
        self.find_unused_parameters = bool(find_unused_parameters)
        if check_every is not None and (isinstance(check_every, bool) or not isinstance(check_every, int)
                                        or check_every < 1):
            raise ValueError(f"check_every must be None or a positive number of steps, got {check_every!r}")
        self.check_every, self._forwards = check_every, 0
        self._divisor: int | None = None  # set per step inside join(): how many ranks have data
        self._join: Any = None
        broadcast_module(module, comm)
        _check_same_trainable(module, comm)
        self.bucket_layout = [[name for name, _ in group] for group in
                              assign_buckets(named[::-1], bucket_cap_mb * MiB)]
        self.buckets: list[Bucket] = []
        self._sync_enabled = True  # False inside no_sync()
        self._armed = False  # the next backward averages (set by forward)
        self._callback_queued = False
        self._next_launch = 0
        self._comm_thread: CommThread | None = None
        self._used = np.zeros(0)
        self.bucket_optimizers: list[Any] = []  # apply_optimizer_in_backward: one per bucket
        if comm.size == 1:
            return  # one rank: the local gradient is the average; nothing to do after the broadcast
        by_name = dict(named)
        for index, names in enumerate(self.bucket_layout):
            bucket = Bucket(index, [(name, by_name[name]) for name in names], reduce_in_place)
            self.buckets.append(bucket)
            for position, param in enumerate(bucket.params):
                param.register_post_accumulate_grad_hook(partial(self._grad_ready_hook, bucket, position))

    # ----- the training loop's side ---------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.check_every is not None and autograd.is_grad_enabled():
            if self._forwards % self.check_every == 0:  # before steps 0, N, 2N, ...: replicas agree?
                check_replicas(self.module, self.comm)
            self._forwards += 1
        if self._join is not None and autograd.is_grad_enabled():
            self._divisor = self._join.active_ranks()  # collective: the joined ranks shadow it
        if self.buckets and autograd.is_grad_enabled():
            if self._sync_enabled:
                self._prepare_for_backward()
            else:
                self._armed = False
        return self.module(*args, **kwargs)

    def join(self, divide_by_initial_world_size: bool = False, enable: bool = True) -> Any:
        """``with ddp.join():`` -- ranks may run out of batches at different steps (``join.py``)."""
        from minipar.parallel.data_parallel.join import Join

        return Join(self, divide_by_initial_world_size=divide_by_initial_world_size, enable=enable)

    def _shadow(self, divisor: int) -> None:
        from minipar.parallel.data_parallel.join import shadow_buckets

        shadow_buckets(self, divisor)

    def apply_optimizer_in_backward(self, optimizer_class: type, **optimizer_kwargs: Any) -> list[Any]:
        """From now on backward also steps the weights, bucket by bucket (``optimizer_in_backward.py``)."""
        return apply_optimizer_in_backward(self, optimizer_class, **optimizer_kwargs)

    def _join_finished(self, longest: int) -> None:
        from minipar.parallel.data_parallel.join import sync_final_model

        self._divisor = None
        sync_final_model(self, longest)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backwards of forwards run inside accumulate locally; the first one after syncs the sum."""
        previous, self._sync_enabled = self._sync_enabled, False
        try:
            yield
        finally:
            self._sync_enabled = previous

    def _prepare_for_backward(self) -> None:
        if self._comm_thread is not None:  # an earlier backward raised midway: settle it first
            self._comm_thread.wait()
        for bucket in self.buckets:
            bucket.ready = [False] * len(bucket.params)
            bucket.pending = len(bucket.params)
        self._next_launch = 0
        self._callback_queued = False
        self._armed = True

    # ----- during backward ------------------------------------------------------------------
    def _grad_ready_hook(self, bucket: Bucket, position: int, param: Parameter) -> None:
        """Called by the engine once ``param.grad`` is final for this backward."""
        if not self._armed:
            return  # no_sync(), or a backward this wrapper's forward did not start
        if not self._callback_queued:
            autograd.queue_callback(self._finish_gradient_sync)
            self._callback_queued = True
        param.grad.array = bucket.put(position, param.grad.array)  # the array that will hold the average
        bucket.ready[position] = True
        bucket.pending -= 1
        if bucket.pending == 0:
            self._launch_ready_buckets()

    def _launch_ready_buckets(self) -> None:
        """Launch buckets strictly in order: the same collective sequence on every rank."""
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            bucket = self.buckets[self._next_launch]
            bucket.job = self._launch(partial(self._allreduce_bucket, bucket))
            self._next_launch += 1

    def _launch(self, job: Callable[[], None]) -> int:
        """Run ``job`` now, or queue it on the communication thread; its job number there."""
        if not self.overlap:
            job()  # on this thread, now: the bucket is still in cache
            return 0
        if self._comm_thread is None:  # one thread for every backward; ends with this wrapper
            self._comm_thread = CommThread(f"ddp-comm-rank{self.comm.rank}")
            weakref.finalize(self, self._comm_thread.jobs.put, None)
        return self._comm_thread.submit(job)

    def _allreduce_bucket(self, bucket: Bucket) -> None:
        with trace.span(f"allreduce bucket {bucket.index}", "comm", rank=_trace_rank(self.comm),
                        bytes=bucket.nbytes, params=len(bucket.params)):
            self.reduce_bucket(bucket.flat)

    def reduce_bucket(self, flat: Any) -> Any:
        """DDP's reduce step, one replaceable function: a bucket's flat gradients in, their
        average over the ranks out (in place). Inside ``join()``, the average is over the
        ranks that still have data this step (``self._divisor`` of them)."""
        if self._divisor is None:
            return allreduce(self.comm, flat, op="mean", algorithm="ring")
        allreduce(self.comm, flat, op="sum", algorithm="ring")
        flat /= self._divisor
        return flat

    def _finish_gradient_sync(self) -> None:
        """End of backward: handle unused parameters, launch the rest, wait for what is in flight."""
        self._armed = self._callback_queued = False
        missing = [(bucket, i) for bucket in self.buckets for i, ready in enumerate(bucket.ready)
                   if not ready]
        if missing and not self.find_unused_parameters:
            self._comm_thread = None  # abandoned: this error ends the job (never wait on peers here)
            names = [bucket.names[i] for bucket, i in missing]
            raise RuntimeError(
                f"DistributedDataParallel: rank {self.comm.rank} got no gradient for {names} in this "
                "backward, so its bucket would never be all-reduced and the other ranks would wait. "
                "Pass find_unused_parameters=True if some steps do not use these parameters, or "
                "make every parameter take part in the loss")
        if self.find_unused_parameters:
            self._used = np.array([ready or param.grad is not None for bucket in self.buckets
                                   for ready, param in zip(bucket.ready, bucket.params)], dtype=np.int64)
            for bucket, i in missing:  # a zero (or an earlier accumulated) gradient from this rank
                param = bucket.params[i]
                if param.grad is None:
                    param.grad = Tensor(get_array_module(param.array).zeros_like(param.array))
                param.grad.array = bucket.put(i, param.grad.array)
                bucket.pending -= 1
            self._launch_ready_buckets()
            self._launch(partial(allreduce, self.comm, self._used, "sum", "auto"))
        with trace.span("wait for gradient all-reduces", "comm", rank=_trace_rank(self.comm)):
            wait_and_step(self, self._comm_thread)  # and step each bucket as it lands, if asked
        if self.find_unused_parameters:  # unused on every rank: None, as on one process
            flat = (param for bucket in self.buckets for param in bucket.params)
            for param, users in zip(flat, self._used.tolist()):
                if users == 0:
                    param.grad = None
            for optimizer in self.bucket_optimizers:  # only now: which grads are None is known
                optimizer.step()
