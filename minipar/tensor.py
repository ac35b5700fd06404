"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs to differentiate it.

    >>> import minipar
    >>> x = minipar.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> y = (x * x).sum()          # y = sum(x_i^2)
    >>> y.backward()
    >>> x.grad                     # dy/dx = 2x
    tensor([2., 4., 6.], dtype=float32)

PyTorch's data model:

- ``.array`` is the raw ndarray: what collectives move, what ``Function.forward``
  receives, what a learner inspects; it may be reassigned.
- ``.data`` is a Tensor *without history* sharing that array: ``p.data.normal_(0, 0.02)``
  or ``p.data.add_(p.grad, alpha=-lr)`` change ``p`` without being recorded.
  Assigning ``p.data = t`` (a Tensor or an array) replaces ``p``'s array.
- ``.grad`` is a Tensor without history (or None); ``p.grad.array`` is the gradient array.

A tensor made by an operation remembers the call that made it (``._node``, a
``Function`` ctx) when a gradient is wanted. This file holds the tensor itself: its
storage, facts, gradient and in-place updates. Its arithmetic, reductions and shape
methods (``size()``, ``dim()``, ``numel()`` among them) are defined next to the operations,
in ``ops/methods*.py``, bound onto the class when ``minipar.ops`` is imported (tensor.py
never imports the ops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minipar import autograd
from minipar.autograd import function as _function
from minipar.autograd.grad_mode import modes
from minipar.backend import device_of, get_array_module, to_device
from minipar.random import generator


class Tensor:
    """An n-dimensional array that can record operations for backward."""

    __slots__ = ("array", "_grad", "requires_grad", "_node", "_hooks",
                 "_post_accumulate_hooks", "__weakref__", "__dict__")
    __array_priority__ = 1000  # ndarray op Tensor -> Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.array
        self.array = data
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._hooks = None
        self._post_accumulate_hooks = None
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {data.dtype}")

    @staticmethod
    def _wrap(array: Any) -> Tensor:
        """A history-free Tensor around ``array`` (no checks: the engine's fast path)."""
        t = Tensor.__new__(Tensor)
        t.array = array
        t._grad = None
        t.requires_grad = False
        t._node = t._hooks = t._post_accumulate_hooks = None
        return t

    # ----- the data model -----------------------------------------------------------
    @property
    def data(self) -> Tensor:
        """This tensor's array as a Tensor without history (changes to it are not recorded)."""
        return Tensor._wrap(self.array)

    @data.setter
    def data(self, value: Any) -> None:
        array = value.array if isinstance(value, Tensor) else value
        if not hasattr(array, "dtype") or not hasattr(array, "shape"):
            raise TypeError(f".data must be set to a Tensor or an array, got {type(value).__name__}")
        self.array = array

    @property
    def grad(self) -> Tensor | None:
        """The gradient backward accumulated here, a Tensor without history, or None."""
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None, got "
                                f"{type(value).__name__} (wrap an array: minipar.tensor(array))")
            if value.shape != self.shape:
                raise ValueError(f"assigned grad has shape {value.shape}, the tensor has shape {self.shape}")
        self._grad = value

    # ----- facts --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> Any:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def device(self) -> str:
        return device_of(self.array)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(to_device(self.array, "cpu"), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{grad})"

    __hash__ = object.__hash__  # comparisons are elementwise, identity hashes

    def __bool__(self) -> bool:
        if self.array.size != 1:
            raise ValueError(
                f"the truth value of a tensor with {self.array.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.array)

    def item(self) -> Any:
        """The single value of a one-element tensor as a Python number."""
        if self.array.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.array.item()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """NumPy's view of a (CPU) tensor: ``np.asarray(t)``, ``np.testing`` on tensors."""
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def numpy(self) -> np.ndarray:
        """The array as a NumPy array (copied from the GPU when needed)."""
        return to_device(self.array, "cpu")

    # ----- autograd -----------------------------------------------------------------
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Back-propagate from this tensor; ``gradient`` defaults to 1 for a scalar."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True (or it ran under no_grad())"
            )
        xp = get_array_module(self.array)
        if gradient is None:
            if self.array.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape "
                    f"{self.shape}; pass a gradient of that shape (e.g. ones)"
                )
            gradient = xp.ones_like(self.array)
        else:
            # a copy: the caller's array must not become some leaf's .grad (optimizers write into it)
            gradient = xp.array(gradient.array if isinstance(gradient, Tensor) else gradient,
                                dtype=self.dtype)
            if gradient.shape != self.shape:
                raise ValueError(f"backward() gradient shape {gradient.shape} does not match the "
                                 f"tensor's shape {self.shape}")
        autograd.backward(self, gradient, retain_graph=retain_graph)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Callable[[], None]:
        """Call ``hook(grad)`` (a Tensor) when this tensor's gradient is ready.

        The hook may return a replacement of the same shape. Returns a handle whose
        ``remove()`` (or calling it) takes the hook off again, as PyTorch's does.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        owner = self._node if self._node is not None else self
        if owner is self:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if owner.hooks is None:
                owner.hooks = []
            hooks = owner.hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> None:
        """Call ``hook(self)`` after backward has added into this leaf's ``.grad``."""
        autograd.register_post_accumulate_grad_hook(self, hook)

    def detach(self) -> Tensor:
        """Same array (shared, not copied), cut from the graph."""
        return Tensor._wrap(self.array)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.array.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    # ----- in-place updates: never recorded, so not on tensors that record ---------------
    def _writable(self, name: str) -> Any:
        if self.requires_grad and modes.grad_enabled:
            raise RuntimeError(
                f"{name}() on a tensor that requires grad would not be recorded by autograd: "
                f"update its .data instead (p.data.{name}(...)) or run it under minipar.no_grad()")
        return self.array

    def __setitem__(self, index: Any, value: Any) -> None:
        self._writable("__setitem__")[_array_of(index)] = _array_of(value)

    def zero_(self) -> Tensor:
        self._writable("zero_")[...] = 0
        return self

    def fill_(self, value: Any) -> Tensor:
        self._writable("fill_")[...] = _array_of(value)
        return self

    def copy_(self, source: Any) -> Tensor:
        self._writable("copy_")[...] = _array_of(source)
        return self

    def add_(self, other: Any, alpha: Any = 1) -> Tensor:
        """``self += alpha * other``, in place (PyTorch's ``add_(other, alpha=)``)."""
        array, other = self._writable("add_"), _array_of(other)
        array += other if alpha == 1 else alpha * other
        return self

    def sub_(self, other: Any, alpha: Any = 1) -> Tensor:
        array, other = self._writable("sub_"), _array_of(other)
        array -= other if alpha == 1 else alpha * other
        return self

    def mul_(self, other: Any) -> Tensor:
        array = self._writable("mul_")
        array *= _array_of(other)
        return self

    def div_(self, other: Any) -> Tensor:
        array = self._writable("div_")
        array /= _array_of(other)
        return self

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 (PyTorch's names)
        array = self._writable("clamp_")
        get_array_module(array).clip(array, min, max, out=array)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        """Fill with draws from N(mean, std^2), from minipar's generator."""
        array = self._writable("normal_")
        array[...] = generator().normal(mean, std, size=array.shape)
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:
        """Fill with draws from U(a, b), from minipar's generator."""
        array = self._writable("uniform_")
        array[...] = generator().uniform(a, b, size=array.shape)
        return self

    def clone(self) -> Tensor:
        """A copy with its own array; differentiable (the gradient passes straight through)."""
        if self.requires_grad and modes.grad_enabled:
            return self + 0  # recorded: d clone / d self = 1
        return Tensor._wrap(self.array.copy())


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` takes the hook off (twice is fine)."""

    def __init__(self, hooks: list[Any], hook: Any) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)

    __call__ = remove


_ANCHORS: dict[tuple[Any, Any], Tensor] = {}


def recording_anchor(dtype: Any = np.float64, xp: Any = np) -> Tensor:
    """A 0-d leaf that requires grad and never receives a gradient (one per dtype and device).

    Passed to ``Function.apply`` as an extra argument, it makes autograd record a call
    none of whose real inputs needs a gradient: a pipeline stage's receive (its backward
    sends the gradient on), a checkpointed segment whose trainable tensors are all inside.
    """
    key = (np.dtype(dtype), xp)
    if key not in _ANCHORS:
        _ANCHORS[key] = Tensor(xp.zeros((), dtype=dtype), requires_grad=True)
    return _ANCHORS[key]


def _array_of(value: Any) -> Any:
    return value.array if isinstance(value, Tensor) else value


# The autograd package builds its results as Tensors: give it the class (it never imports us).
_function.Tensor = Tensor
