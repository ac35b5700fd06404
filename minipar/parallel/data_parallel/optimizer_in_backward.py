"""The optimizer step inside DDP's backward, overlapped with the last buckets' all-reduces.

    ddp = DistributedDataParallel(model, comm=comm)
    ddp.apply_optimizer_in_backward(optim.SGD, lr=0.01, momentum=0.9)
    for x, y in batches:
        ddp.zero_grad()
        F.cross_entropy(ddp(x), y).backward()  # averages the gradients AND steps the weights

Why. With a plain optimizer, ``loss.backward()`` returns once the *last* bucket is
averaged and only then does ``opt.step()`` update all N parameters, while the link is
idle. Here every bucket gets an optimizer of its own, and at the end of backward the
main thread, which would otherwise only wait, steps bucket k as soon as its average
has arrived, while the communication thread is still reducing buckets k+1, ... So
the step costs only the last bucket's share of it (PyTorch's
``_apply_optimizer_in_backward`` and DDP's fused optimizer do the same).

Exactness. Each parameter is updated by the same formula, from the same averaged
gradient, as one optimizer over all parameters would (every optimizer in
``minipar.optim`` updates each parameter from its own gradient and state only), so
training equals one process (``tests/test_ddp_optimizer_in_backward.py``). With
``find_unused_parameters=True`` the steps wait for the whole sync (which decides
which gradients become None); inside ``no_sync()`` nothing is stepped.
"""

from __future__ import annotations

from typing import Any

from minipar import autograd
from minipar.nn.module import Parameter


def apply_optimizer_in_backward(ddp: Any, optimizer_class: type, **optimizer_kwargs: Any) -> list[Any]:
    """Give every bucket an ``optimizer_class(bucket's parameters, **kwargs)``; returns them."""
    if not isinstance(optimizer_class, type):
        raise TypeError(f"apply_optimizer_in_backward takes an optimizer class (e.g. optim.SGD), got "
                        f"{optimizer_class!r}")
    if ddp.bucket_optimizers:
        raise RuntimeError("apply_optimizer_in_backward was already called on this wrapper")
    if ddp.buckets:
        ddp.bucket_optimizers = [optimizer_class(bucket.params, **optimizer_kwargs)
                                 for bucket in ddp.buckets]
        return ddp.bucket_optimizers
    # One rank: no buckets, no hooks. Step once per synchronising backward, at its end.
    params = [param for param in ddp.module.parameters() if param.requires_grad]
    ddp.bucket_optimizers = [optimizer_class(params, **optimizer_kwargs)]
    queued = [False]

    def step_at_the_end() -> None:
        queued[0] = False
        ddp.bucket_optimizers[0].step()

    def hook(param: Parameter) -> None:
        if ddp._sync_enabled and not queued[0]:
            queued[0] = True
            autograd.queue_callback(step_at_the_end)

    for param in params:
        param.register_post_accumulate_grad_hook(hook)
    return ddp.bucket_optimizers


def wait_and_step(ddp: Any, thread: Any) -> None:
    """End of backward: wait for the buckets in order, stepping each one's optimizer as it lands.

    ``thread``: the communication thread (None without overlap: everything has landed).
    ``bucket.job`` is the job number of the bucket's all-reduce on that thread.
    """
    if not ddp.bucket_optimizers or ddp.find_unused_parameters:
        if thread is not None:
            thread.wait()
        return
    for bucket, optimizer in zip(ddp.buckets, ddp.bucket_optimizers):
        if thread is not None:
            thread.wait(until=bucket.job)  # bucket's average is in; later ones still travel
        optimizer.step()
    if thread is not None:
        thread.wait()
