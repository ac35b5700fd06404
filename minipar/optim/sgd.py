"""SGD with PyTorch's momentum, dampening, Nesterov and weight decay."""


from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _blocks, _Scratch


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum and weight decay.

    g = grad + weight_decay * p
    b = g (first step), else b = momentum * b + (1 - dampening) * g
    g = g + momentum * b if nesterov else b
    p = p - lr * g
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      dampening=dampening, nesterov=nesterov))

    def step(self) -> None:
        scratch = _Scratch()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            weight_decay = group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if momentum == 0:
                    buffer = None
                else:
                    state = self.state.setdefault(param, {})
                    buffer = state.get("momentum_buffer")
                    if buffer is None:  # first step: the buffer starts as the (decayed) gradient
                        if weight_decay != 0:
                            grad = grad + weight_decay * param.data
                        buffer = state["momentum_buffer"] = grad.copy()
                        param.data -= lr * (grad + momentum * buffer if group["nesterov"] else buffer)
                        continue
                arrays = (param.data, grad) if buffer is None else (param.data, grad, buffer)
                for block in _blocks(*arrays):
                    self._update(block, *scratch.pair(block[0]), group)

    @staticmethod
    def _update(block: list[Any], t: Any, u: Any, group: dict[str, Any]) -> None:
        """One block: ``p, g`` (and momentum buffer ``b``) in place; ``t``, ``u`` are scratch."""
        p, g = block[0], block[1]
        lr, momentum = group["lr"], group["momentum"]
        weight_decay, dampening = group["weight_decay"], group["dampening"]
        xp = get_array_module(p)
        if weight_decay != 0:
            g = xp.add(g, xp.multiply(p, weight_decay, out=t), out=t)  # g + wd * p
        if momentum != 0:
            b = block[2]
            b *= momentum
            b += g if dampening == 0 else xp.multiply(g, 1 - dampening, out=u)
            g = xp.add(g, xp.multiply(b, momentum, out=u), out=u) if group["nesterov"] else b
        p -= xp.multiply(g, lr, out=u)


