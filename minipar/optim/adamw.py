"""AdamW: Adam with the weight decay taken out of the gradient (decoupled).

    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minipar.optim.adam import Adam


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019), PyTorch's algorithm: Adam's update (see ``Adam``) but
    weight decay shrinks the weights directly, before the moments are updated,

        p = p * (1 - lr * weight_decay)

    instead of adding ``weight_decay * p`` to the gradient. With L2-in-the-gradient the
    decay is divided by sqrt(v) like the gradient, so weights with large gradients are
    barely decayed; decoupled, every weight shrinks by the same factor. Default
    ``weight_decay=1e-2``, as in PyTorch. Same state keys as ``Adam``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, blocked: bool = True) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, blocked=blocked)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; the decay stays decoupled whatever the saved groups say."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
