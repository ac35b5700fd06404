"""``ModuleWrapper``: a parallel wrapper that still looks like the module it wraps.

``DistributedDataParallel(model, comm=comm)`` is called, trained, saved and loaded as
``model`` itself would be; this base class passes those calls through to
``.module`` so that each wrapper only writes what it adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minipar.nn.module import Module, Parameter


class ModuleWrapper:
    """What both data-parallel wrappers share: the module's interface, passed through."""

    module: Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def parameters(self) -> Iterator[Parameter]:
        return self.module.parameters()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        return self.module.named_parameters(prefix)

    def state_dict(self) -> Any:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        self.module.load_state_dict(state_dict, strict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.module.zero_grad(set_to_none)

    def train(self, mode: bool = True) -> ModuleWrapper:
        self.module.train(mode)
        return self

    def eval(self) -> ModuleWrapper:
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.module.training

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n  (module): " + repr(self.module).replace("\n", "\n  ") + "\n)"
