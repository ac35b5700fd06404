"""SGD with PyTorch's momentum, dampening, Nesterov, weight decay and ``maximize``.

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

Two forms of the same update, chosen by ``blocked``: the readable one first (whole
arrays, the formula line by line), then the cache-blocked one (``optimizer.py`` says
what blocking buys). They perform the same float operations in the same order, so
their results are bit-identical (``tests/test_optim.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.optim.optimizer import Optimizer, _blocks, _check_flags, _check_number, _Scratch


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's algorithm:

        g = -grad if maximize else grad                (maximize: ascend the objective)
        g = g + weight_decay * p
        b = g (first step), else b = momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b
        p = p - lr * g

    State per parameter: ``momentum_buffer`` (PyTorch's key), only with momentum.
    ``foreach``, ``differentiable`` and ``fused`` are accepted and ignored (``optimizer.py``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None, blocked: bool = True) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("dampening", dampening)):
            _check_number(name, value, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        _check_flags("SGD", maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused)
        self.blocked = bool(blocked)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, fused=fused))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._evaluate(closure)
        scratch = _Scratch()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.setdefault(param, {}) if group["momentum"] != 0 else {}
                first_buffer = group["momentum"] != 0 and "momentum_buffer" not in state
                if not self.blocked or first_buffer:  # a new buffer is a copy: whole arrays
                    self._step_readable(param.array, param.grad.array, state, group)
                else:
                    arrays = [param.array, param.grad.array]
                    if group["momentum"] != 0:
                        arrays.append(state["momentum_buffer"])
                    for block in _blocks(*arrays):
                        self._step_block(block, *scratch.pair(block[0]), group)
        return loss

    @staticmethod
    def _step_readable(p: Any, g: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        """The formula on whole arrays: ``p`` and the momentum buffer change in place."""
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:  # first step: the buffer starts as the (decayed) gradient
                buffer = state["momentum_buffer"] = g.copy()
            else:
                buffer *= momentum
                buffer += (1 - dampening) * g
            g = g + momentum * buffer if group["nesterov"] else buffer
        p -= lr * g

    @staticmethod
    def _step_block(block: list[Any], t: Any, u: Any, group: dict[str, Any]) -> None:
        """The same update on one cache block of ``p, g`` (and buffer ``b``); ``t``, ``u`` scratch."""
        p, g = block[0], block[1]
        lr, momentum = group["lr"], group["momentum"]
        weight_decay, dampening = group["weight_decay"], group["dampening"]
        xp = get_array_module(p)
        if group["maximize"]:
            g = xp.negative(g, out=t)
        if weight_decay != 0:
            g = xp.add(g, xp.multiply(weight_decay, p, out=u), out=t)  # g + wd * p
        if momentum != 0:
            b = block[2]
            b *= momentum
            b += xp.multiply(1 - dampening, g, out=u)  # b + (1 - dampening) * g
            g = xp.add(g, xp.multiply(momentum, b, out=u), out=u) if group["nesterov"] else b
        p -= xp.multiply(lr, g, out=u)
