"""``Sequential``: layers applied in order; iterable, indexable, sliceable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minipar.nn.module import Module


class Sequential(Module):
    """``Sequential(a, b, c)(x) == c(b(a(x)))``; children are named "0", "1", ..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential takes Modules, got {type(layer).__name__} at position {index}"
                )
            setattr(self, str(index), layer)

    def forward(self, x: Any) -> Any:
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        if not -len(layers) <= index < len(layers):
            raise IndexError(f"Sequential of {len(layers)} layers has no index {index}")
        return layers[index]

    def append(self, layer: Module) -> Sequential:
        setattr(self, str(len(self)), layer)
        return self
