"""``Module`` and ``Parameter``: PyTorch's way of holding weights, in a page.

A module registers every ``Parameter`` and sub-``Module`` assigned to it as an
attribute, in assignment order, so names come out as PyTorch's
(``0.weight`` inside a ``Sequential``) and a PyTorch state dict's arrays load
unchanged::

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    [name for name, _ in model.named_parameters()]
    # ['0.weight', '0.bias', '2.weight', '2.bias']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from minipar.backend import device_of, to_device
from minipar.tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a module's weight: requires grad unless told otherwise."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.array
        if not hasattr(data, "dtype"):
            data = np.asarray(data, dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models. Subclasses define ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        """Register Parameters and Modules by name, as PyTorch does.

        Re-assigning a name that is already registered keeps its place in the
        table (``layer.weight = Parameter(...)`` stays first in ``named_parameters()``,
        as PyTorch's OrderedDict does); a buffer name takes a new array (or None).
        """
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before "
                f"assigning attributes (assigning {name!r})"
            )
        parameters, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            buffers.pop(name, None)
            modules.pop(name, None)
            parameters[name] = value  # an existing key keeps its position
        elif isinstance(value, Module):
            parameters.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in parameters:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} of "
                    f"{type(self).__name__} (nn.Parameter or None expected)"
                )
            del parameters[name]
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} of "
                    f"{type(self).__name__} (nn.Module or None expected)"
                )
            del modules[name]
        elif name in buffers:
            buffers[name] = value.array if isinstance(value, Tensor) else value
            value = buffers[name]
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any) -> None:
        """State that is not a parameter (no gradient) but is saved and broadcast.

        ``array`` is an ndarray (a Tensor's array is kept) or None: a None buffer
        is a declared slot that is neither saved nor loaded (BatchNorm's running
        statistics with ``track_running_stats=False``).
        """
        if isinstance(array, Tensor):
            array = array.array
        if array is not None and not hasattr(array, "dtype"):
            raise TypeError(f"buffer {name!r} must be an array or None, got {type(array).__name__}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ----- walking the tree ---------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter once (a shared one under its first name), in registration order."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    # ----- modes, gradients, devices -------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; returns the module, as PyTorch's."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget accumulated gradients (``None``, as PyTorch does by default)."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad.array[...] = 0

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in self.modules():
            fn(module)
        return self

    def _map_arrays(self, fn: Callable[[Any], Any]) -> Module:
        for module in self.modules():
            for param in module._parameters.values():
                param.array = fn(param.array)
                if param.grad is not None:
                    param.grad.array = fn(param.grad.array)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module.register_buffer(name, fn(buffer))
        return self

    def to(self, device_or_dtype: Any) -> Module:
        """Move every parameter to a device ("cpu"/"cuda") or cast to a float dtype."""
        if isinstance(device_or_dtype, str) and device_or_dtype.split(":")[0] in ("cpu", "cuda"):
            return self._map_arrays(lambda a: to_device(a, device_or_dtype))
        dtype = np.dtype(device_or_dtype)
        return self._map_arrays(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    def half(self) -> Module:
        return self.to(np.float16)

    # ----- state ------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Any]:
        """Name -> array (the live arrays, as PyTorch shares storage); parameters then buffers."""
        state: OrderedDict[str, Any] = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = param.array
        for name, buffer in self.named_buffers():
            state[name] = buffer
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays (or tensors) into this module's parameters and buffers.

        Values keep each parameter's dtype and device; shapes must match exactly.
        With ``strict`` missing and unexpected keys are a KeyError naming them.
        """
        own = dict(self.named_parameters())
        buffers = {name: module for name, module in self._buffer_owners()}
        if strict:
            missing = [k for k in list(own) + list(buffers) if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own and k not in buffers]
            if missing or unexpected:
                raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        for name, value in state_dict.items():
            array = value.array if isinstance(value, Tensor) else value
            if hasattr(array, "detach"):  # a torch tensor, without importing torch
                array = array.detach().cpu().numpy()
            if name in own:
                param = own[name]
                if tuple(array.shape) != param.shape:
                    raise ValueError(
                        f"{name}: expected shape {param.shape}, got {tuple(array.shape)}"
                    )
                host = np.array(to_device(array, "cpu"), dtype=param.dtype)  # a copy
                param.array = to_device(host, param.device)
            elif name in buffers:
                module = buffers[name]
                local = name.rsplit(".", 1)[-1]
                current = module._buffers[local]
                if tuple(array.shape) != tuple(current.shape):
                    raise ValueError(
                        f"{name}: expected shape {tuple(current.shape)}, got {tuple(array.shape)}"
                    )
                host = np.array(to_device(array, "cpu"), dtype=current.dtype)  # a copy
                module.register_buffer(local, to_device(host, device_of(current)))

    def _buffer_owners(self) -> Iterator[tuple[str, Module]]:
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), module

    # ----- printing -----------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ")
                 for name, module in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"
