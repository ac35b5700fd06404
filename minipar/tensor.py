"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs to differentiate it.

    >>> import minipar
    >>> x = minipar.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> y = (x * x).sum()          # y = sum(x_i^2)
    >>> y.backward()
    >>> x.grad                     # dy/dx = 2x
    array([2., 4., 6.], dtype=float32)

``.data`` is the raw array and may be reassigned; ``.grad`` is an array of the
same shape (or None). A tensor made by an operation remembers the call that
made it (``._node``, a ``Function`` ctx) when a gradient is wanted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minipar.backend import device_of, get_array_module, to_device


class Tensor:
    """An n-dimensional array that can record operations for backward."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "_hooks",
                 "_post_accumulate_hooks", "__weakref__", "__dict__")
    __array_priority__ = 1000  # ndarray op Tensor -> Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._hooks = None
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype {data.dtype}")

    # ----- facts --------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(to_device(self.data, "cpu"), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{grad})"

    __hash__ = object.__hash__  # comparisons are elementwise, identity hashes

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                "use .any() or .all() on .data"
            )
        return bool(self.data)

    def item(self) -> Any:
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.data.item()

    # ----- autograd -------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Back-propagate from this tensor; ``grad`` defaults to 1 for a scalar."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True (or it ran under no_grad())"
            )
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape "
                    f"{self.shape}; pass grad= an array of that shape (e.g. ones)"
                )
            grad = xp.ones_like(self.data)
        else:
            # a copy: the caller's array must not become some leaf's .grad (optimizers write into it)
            grad = xp.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward() gradient shape {grad.shape} does not match the tensor's "
                    f"shape {self.shape}"
                )
        _autograd.backward(self, grad, retain_graph=retain_graph)

    def register_hook(self, hook: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``hook(grad_array)`` when this tensor's gradient is ready.

        The hook may return a replacement array. Returns a function that
        removes the hook again.
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
        return lambda: hooks.remove(hook) if hook in hooks else None

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> None:
        """Call ``hook(self)`` after backward has added into this leaf's ``.grad``."""
        _autograd.register_post_accumulate_grad_hook(self, hook)

    def detach(self) -> Tensor:
        """Same data (shared, not copied), cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU when needed)."""
        return to_device(self.data, "cpu")

    def to(self, device: str) -> Tensor:
        """This tensor on ``device`` ("cpu" or "cuda"); self when already there."""
        moved = to_device(self.data, device)
        if moved is self.data:
            return self
        return _ops.ToDevice.apply(self, device)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def astype(self, dtype: Any) -> Tensor:
        """A differentiable cast (the gradient is cast back)."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "biufc":
            raise TypeError(f"astype needs a bool, integer, float or complex dtype, got {dtype}")
        return _ops.Cast.apply(self, dtype)

    def float(self) -> Tensor:
        return self.astype(np.float32)

    def double(self) -> Tensor:
        return self.astype(np.float64)

    def half(self) -> Tensor:
        return self.astype(np.float16)

    # ----- arithmetic -----------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __pow__(self, exponent: Any) -> Tensor:
        return _ops.power(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return _ops.power(base, self)

    def __neg__(self) -> Tensor:
        return _ops.Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(other, self)

    # comparisons: no gradient, boolean results
    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _ops.unwrap(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _ops.unwrap(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _ops.unwrap(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _ops.unwrap(other))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data == _ops.unwrap(other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data != _ops.unwrap(other))

    def __getitem__(self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    # ----- elementwise functions and reductions -------------------------------
    def exp(self) -> Tensor:
        return _ops.Exp.apply(self)

    def log(self) -> Tensor:
        return _ops.Log.apply(self)

    def relu(self) -> Tensor:
        return _ops.ReLU.apply(self)

    def tanh(self) -> Tensor:
        return _ops.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return _ops.Sigmoid.apply(self)

    def sqrt(self) -> Tensor:
        return _ops.power(self, 0.5)

    def abs(self) -> Tensor:
        return _ops.Abs.apply(self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.Sum.apply(self, _ops.normalize_axis(axis, self.ndim), keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.Mean.apply(self, _ops.normalize_axis(axis, self.ndim), keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.Max.apply(self, _ops.normalize_axis(axis, self.ndim), keepdims)

    # ----- shape ------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0) -> Tensor:
        start = start_dim % max(self.ndim, 1)
        return self.reshape(*self.shape[:start], -1)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.transpose(self, axes or None)

    @property
    def T(self) -> Tensor:  # noqa: N802 (NumPy's and PyTorch's name)
        return _ops.transpose(self, None)


# Bottom imports: ops and autograd need the Tensor class defined above.
from minipar import autograd as _autograd  # noqa: E402
from minipar import ops as _ops  # noqa: E402
