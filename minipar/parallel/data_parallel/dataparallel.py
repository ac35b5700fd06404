"""``DataParallel``: PyTorch's single-process data parallelism, one replica per device.

    model = nn.DataParallel(model, device_ids=[0, 1, 2, 3])    # 4 CPU replicas (threads)
    loss = F.cross_entropy(model(x), y); loss.backward()      # gradients land in model.module

Every forward, in one process:

1. **Broadcast**: each parameter is copied to every device -- the replicas' parameters
   are *outputs* of a ``Broadcast`` Function, so their gradients flow back into the
   original parameter and add up there (backward: the sum over replicas);
2. **Scatter**: the batch is cut along ``dim`` into one chunk per replica (``chunk``'s
   sizes: ceil(N / n) rows each, the last smaller; fewer replicas when N < n);
3. the replicas run their forwards **in parallel**, one thread each (NumPy releases the
   GIL inside matmuls; with CuPy, one replica per GPU);
4. **Gather**: the outputs are concatenated on ``output_device`` (backward: the gradient
   is split again, chunk by chunk).

Backward is the autograd engine's one walk over the whole graph (not one per replica):
the engine sums each original parameter's gradient from its replicas' Broadcast edges.

Why PyTorch recommends DDP instead (lesson 15 measures each): the module is re-replicated
every step; replica threads share one interpreter (the GIL) for everything but the BLAS
calls; the outputs, the loss and the whole backward run on ``output_device``'s thread.

Replica threads inherit the caller's grad mode and autocast state; each draws from its
own generator seeded from the caller's stream before the threads start (one seed per
replica, drawn in replica order), so a run is deterministic. On CPU, ``device_ids=None``
means one replica per core, and a list of distinct integers that many replicas (the
integers only label them).
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.autograd.grad_mode import modes
from minipar.backend import cupy_available, device_of, get_array_module, to_device
from minipar.nn.module import Module
from minipar.random import generator, manual_seed
from minipar.tensor import Tensor


# ----- the three communication Functions, forward and backward side by side --------------------
class Broadcast(Function):
    """Forward: a parameter's copy on ``device``. Backward: the replica's gradient, moved back."""

    @staticmethod
    def forward(ctx: Any, param: Any, device: str) -> Any:
        ctx.home = device_of(param)
        return to_device(param, device)  # on CPU: the same array, shared (read only by replicas)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        return to_device(grad, ctx.home), None  # the engine sums the replicas' contributions


class Scatter(Function):
    """Forward: rows [start, stop) of the batch along ``dim``, on ``device``. Backward: that
    chunk's gradient placed into zeros shaped like the whole batch."""

    @staticmethod
    def forward(ctx: Any, batch: Any, start: int, stop: int, dim: int, device: str) -> Any:
        ctx.shape, ctx.home, ctx.where = batch.shape, device_of(batch), (start, stop, dim)
        index = [slice(None)] * batch.ndim
        index[dim] = slice(start, stop)
        return to_device(batch[tuple(index)], device)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None, None]:
        start, stop, dim = ctx.where
        grad = to_device(grad, ctx.home)
        full = get_array_module(grad).zeros(ctx.shape, dtype=grad.dtype)
        index = [slice(None)] * len(ctx.shape)
        index[dim] = slice(start, stop)
        full[tuple(index)] = grad
        return full, None, None, None, None


class Gather(Function):
    """Forward: the replicas' outputs concatenated along ``dim`` on ``device``. Backward: the
    gradient cut back into each replica's rows, each on its replica's device."""

    @staticmethod
    def forward(ctx: Any, dim: int, device: str, *outputs: Any) -> Any:
        ctx.dim, ctx.sizes = dim, [o.shape[dim] for o in outputs]
        ctx.devices = [device_of(o) for o in outputs]
        moved = [to_device(o, device) for o in outputs]
        return get_array_module(moved[0]).concatenate(moved, axis=dim)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        bounds = np.cumsum([0] + ctx.sizes).tolist()
        index = [slice(None)] * grad.ndim
        pieces = []
        for lo, hi, device in zip(bounds, bounds[1:], ctx.devices):
            index[ctx.dim] = slice(lo, hi)
            pieces.append(to_device(grad[tuple(index)], device))
        return (None, None, *pieces)


# ----- the wrapper ------------------------------------------------------------------------------
def _devices(device_ids: Any) -> tuple[list[int], bool]:
    """(replica labels, on GPUs?) from ``device_ids``, checked."""
    on_gpu = cupy_available()
    if device_ids is None:
        if on_gpu:
            import cupy

            return list(range(cupy.cuda.runtime.getDeviceCount())), True
        return list(range(os.cpu_count() or 1)), False
    if isinstance(device_ids, (int, str)) or not hasattr(device_ids, "__iter__"):
        raise TypeError(f"DataParallel device_ids must be a list of device indices such as [0, 1], "
                        f"got {device_ids!r}")
    ids = []
    for value in device_ids:
        if isinstance(value, str) and value.startswith(("cuda:", "cpu:")) and value[4:].lstrip(":").isdigit():
            value = int(value.split(":")[1])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"DataParallel device_ids must be non-negative integers, got {value!r} in "
                             f"{list(device_ids)!r}")
        ids.append(int(value))
    if not ids:
        raise ValueError("DataParallel device_ids is empty: give at least one device")
    if len(set(ids)) != len(ids):
        raise ValueError(f"DataParallel device_ids must be distinct, got {ids}")
    if on_gpu:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if max(ids) >= count:
            raise ValueError(f"DataParallel device_ids {ids} name a GPU that does not exist "
                             f"({count} visible)")
    return ids, on_gpu


def replicate(module: Module, device: str) -> Module:
    """A copy of ``module``'s tree whose parameters are ``Broadcast`` outputs on ``device``
    (buffers are shared arrays; configuration attributes are shared)."""
    replica = copy.copy(module)
    object.__setattr__(replica, "_parameters", OrderedDict())
    object.__setattr__(replica, "_modules", OrderedDict())
    object.__setattr__(replica, "_buffers", OrderedDict(module._buffers))
    for name, param in module._parameters.items():
        copied = None if param is None else Broadcast.apply(param, device)
        replica._parameters[name] = copied
        object.__setattr__(replica, name, copied)
    for name, child in module._modules.items():
        copied_child = replicate(child, device)
        replica._modules[name] = copied_child
        object.__setattr__(replica, name, copied_child)
    return replica


class DataParallel(Module):
    """``DataParallel(module, device_ids=None, output_device=None, dim=0)`` (see the module doc)."""

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel wraps a minipar.nn.Module, got {type(module).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"DataParallel dim must be an integer, got {dim!r}")
        self.module = module
        self.device_ids, self._on_gpu = _devices(device_ids)
        if output_device is None:
            output_device = self.device_ids[0]
        if isinstance(output_device, str) and ":" in output_device:
            output_device = int(output_device.split(":")[1])
        if isinstance(output_device, bool) or not isinstance(output_device, (int, np.integer)) \
                or output_device < 0:
            raise ValueError(f"DataParallel output_device must be a device index, got {output_device!r}")
        self.output_device, self.dim = int(output_device), int(dim)

    def _device(self, index: int) -> str:
        return f"cuda:{index}" if self._on_gpu else "cpu"

    def _scatter(self, value: Any, n: int) -> list[Any]:
        """``value`` cut into ``n`` chunks along dim (Tensors), or repeated (anything else)."""
        if isinstance(value, Tensor):
            dim = self.dim % max(value.ndim, 1)
            rows = value.shape[dim]
            step = -(-rows // n)
            return [Scatter.apply(value, lo, min(lo + step, rows), dim, self._device(self.device_ids[i]))
                    for i, lo in enumerate(range(0, rows, step))]
        if isinstance(value, (tuple, list)) and value and any(isinstance(v, Tensor) for v in value):
            columns = [self._scatter(v, n) for v in value]
            count = min(len(c) for c in columns if isinstance(c, list))
            return [type(value)(c[i] if isinstance(c, list) else c for c in columns) for i in range(count)]
        return [value] * n

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        batch = next((v for v in (*inputs, *kwargs.values()) if isinstance(v, Tensor)), None)
        if batch is None:
            raise ValueError("DataParallel needs at least one Tensor input to scatter along dim")
        rows = batch.shape[self.dim % max(batch.ndim, 1)]
        n = min(len(self.device_ids), max(rows, 1))
        if n == 1:
            return self.module(*inputs, **kwargs)
        step = -(-rows // n)
        n = len(range(0, rows, step))  # chunk sizes ceil(N/n): maybe fewer chunks than replicas
        chunks = [self._scatter(value, n) for value in inputs]
        kw_chunks = {key: self._scatter(value, n) for key, value in kwargs.items()}
        replicas = [replicate(self.module, self._device(self.device_ids[i])) for i in range(n)]
        outputs = _parallel_apply(replicas, [[c[i] for c in chunks] for i in range(n)],
                                  [{k: v[i] for k, v in kw_chunks.items()} for i in range(n)],
                                  [self._device(self.device_ids[i]) for i in range(n)], self._on_gpu)
        if not all(isinstance(out, Tensor) for out in outputs):
            raise TypeError("DataParallel gathers Tensor outputs; the module returned "
                            f"{type(outputs[0]).__name__}")
        return Gather.apply(self.dim % max(outputs[0].ndim, 1), self._device(self.output_device), *outputs)


def _parallel_apply(replicas: list[Module], inputs: list[list[Any]], kwargs: list[dict[str, Any]],
                    devices: list[str], on_gpu: bool) -> list[Any]:
    """Run replica i on inputs i in thread i, with the caller's modes; results in replica order."""
    grad_enabled, autocast = modes.grad_enabled, modes.autocast
    seeds = [int(s) for s in generator().integers(0, 2**63 - 1, size=len(replicas))]  # in replica order
    results: list[Any] = [None] * len(replicas)
    errors: list[BaseException | None] = [None] * len(replicas)

    def work(i: int) -> None:
        modes.grad_enabled, modes.autocast = grad_enabled, autocast
        manual_seed(seeds[i])
        try:
            if on_gpu:
                import cupy

                with cupy.cuda.Device(int(devices[i].split(":")[1])):
                    results[i] = replicas[i](*inputs[i], **kwargs[i])
            else:
                results[i] = replicas[i](*inputs[i], **kwargs[i])
        except BaseException as error:  # noqa: B036 - re-raised on the caller's thread
            errors[i] = error

    threads = [threading.Thread(target=work, args=(i,), name=f"dataparallel-replica-{i}")
               for i in range(1, len(replicas))]
    for thread in threads:
        thread.start()
    saved_state = generator().bit_generator.state
    work(0)  # replica 0 on the caller's thread
    generator().bit_generator.state = saved_state  # the caller's stream moved only by the seeds
    for thread in threads:
        thread.join()
    for i, error in enumerate(errors):
        if error is not None:
            if hasattr(error, "add_note"):
                error.add_note(f"(raised in DataParallel replica {i} on {devices[i]})")
            raise error
    return results
