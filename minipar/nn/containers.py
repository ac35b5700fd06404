"""Containers: ``Sequential`` (layers applied in order), ``ModuleList``, ``ModuleDict``, ``Identity``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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


class ModuleList(Module):
    """A list of modules whose parameters the parent sees; children are named "0", "1", ...

    It has no ``forward``: the parent calls its items, e.g. ``for block in self.blocks: x = block(x)``.
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _checked(self, module: Any) -> Module:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        return module

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def _position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"ModuleList of {len(self)} modules has no index {index}")
        return index % len(self)

    def __getitem__(self, index: int | slice) -> Any:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(layers[index])
        return layers[self._position(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        setattr(self, str(self._position(index)), self._checked(module))

    def append(self, module: Module) -> ModuleList:
        setattr(self, str(len(self)), self._checked(module))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        layers = list(self._modules.values())
        layers.insert(index, self._checked(module))
        self._modules.clear()
        for position, layer in enumerate(layers):
            setattr(self, str(position), layer)


class ModuleDict(Module):
    """A dict of modules, by name, in insertion order; the parent sees their parameters."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict keys are strings, got {type(key).__name__}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict holds Modules, got {type(module).__name__} for {key!r}")
        setattr(self, key, module)

    def __delitem__(self, key: str) -> None:
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Any:
        return self._modules.keys()

    def values(self) -> Any:
        return self._modules.values()

    def items(self) -> Any:
        return self._modules.items()

    def pop(self, key: str) -> Module:
        module = self._modules[key]
        delattr(self, key)
        return module

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        for key, module in pairs:
            self[key] = module


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a removed head); takes any arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x
