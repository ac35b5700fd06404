"""Tensor facts and shape methods with PyTorch's names and meanings, bound onto ``Tensor`` by
``minipar.ops`` like ``methods.py``:

    x.size()            (2, 3)       a tuple (``minipar.Size``); x.size(1) -> 3
    x.dim(), x.numel()  2, 6         (x.ndim is the same as x.dim())
    x.transpose(0, 1)                swaps two dimensions; x.permute(1, 0) reorders all of them
    x.unsqueeze(0)      (1, 2, 3)    x.squeeze() drops every length-1 dimension
    x.expand(4, 2, 3)                a broadcast view (-1 keeps a length); x.repeat(2, 1) copies
    x.chunk(2, dim=1), x.split([1, 2], dim=1)   tuples of pieces (views, differentiable)

Every one is differentiable: it is a reshape, a transpose, a broadcast or an indexing,
whose backward (in ``shape.py`` and ``selection.py``) puts the gradient back in place.
"""

from __future__ import annotations

from typing import Any

from minipar.ops.reduction import check_dim
from minipar.ops.selection import Contiguous, Expand, Repeat
from minipar.ops.shape import getitem, reshape, transpose
from minipar.tensor import Tensor


class Size(tuple):
    """A shape, as ``torch.Size``: a tuple of ints that also knows its element count."""

    def numel(self) -> int:
        count = 1
        for n in self:
            count *= n
        return count


_SIZE_IS_A_METHOD = ("Tensor.size is a method, as in PyTorch: x.size() is the shape (a tuple), "
                     "x.size(d) the length of dimension d, x.numel() the element count "
                     "(what NumPy's .size gives)")


class _BoundSize:
    """What ``x.size`` gives: call it; using it as a number raises a TypeError that says so."""

    __slots__ = ("_tensor",)

    def __init__(self, tensor: Tensor) -> None:
        self._tensor = tensor

    def __call__(self, dim: int | None = None) -> Any:
        shape = self._tensor.shape
        if dim is None:
            return Size(shape)
        return shape[check_dim(dim, len(shape))] if shape else 1

    def __repr__(self) -> str:
        return f"<method Tensor.size of a tensor of shape {self._tensor.shape}>"

    def _misused(self, *args: Any) -> Any:
        raise TypeError(_SIZE_IS_A_METHOD)

    __int__ = __index__ = __float__ = __bool__ = _misused
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _misused
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = _misused
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _misused
    __hash__ = object.__hash__


class _SizeMethod:
    """The descriptor behind ``Tensor.size`` (a method with a helpful misuse error)."""

    def __get__(self, tensor: Tensor | None, owner: type) -> Any:
        return self if tensor is None else _BoundSize(tensor)


def _sizes(args: tuple[Any, ...]) -> tuple[int, ...]:
    """``f(2, 3)`` and ``f((2, 3))`` alike, as PyTorch's ``*size`` arguments."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


class ShapeMethods:
    """Facts and shape methods of ``Tensor`` (see the module docstring)."""

    size = _SizeMethod()

    def dim(self) -> int:
        return self.array.ndim

    def numel(self) -> int:
        return int(self.array.size)

    def nelement(self) -> int:
        return int(self.array.size)

    def reshape(self, *shape: Any) -> Tensor:
        return reshape(self, _sizes(shape))

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        return reshape(self, other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dimensions start_dim..end_dim (inclusive) into one."""
        if self.ndim == 0:
            return reshape(self, (1,))
        start, end = check_dim(start_dim, self.ndim), check_dim(end_dim, self.ndim)
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        return reshape(self, self.shape[:start] + (-1,) + self.shape[end + 1:])

    def unsqueeze(self, dim: int) -> Tensor:
        position = check_dim(dim, self.ndim + 1)
        return reshape(self, self.shape[:position] + (1,) + self.shape[position:])

    def squeeze(self, dim: Any = None) -> Tensor:
        """Drop length-1 dimensions (all of them, or those named; others are left as they are)."""
        if dim is None:
            drop = {i for i, n in enumerate(self.shape) if n == 1}
        else:
            dims = dim if isinstance(dim, (tuple, list)) else (dim,)
            drop = {d for d in (check_dim(d, self.ndim) for d in dims) if self.ndim and self.shape[d] == 1}
        return reshape(self, tuple(n for i, n in enumerate(self.shape) if i not in drop))

    def permute(self, *dims: Any) -> Tensor:
        dims = _sizes(dims)
        if len(dims) != self.ndim:
            raise ValueError(f"permute needs {self.ndim} dimensions for shape {self.shape}, got {dims}")
        return transpose(self, tuple(check_dim(d, self.ndim) for d in dims))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two dimensions (PyTorch's transpose; ``permute`` reorders them all)."""
        order = list(range(self.ndim))
        a, b = check_dim(dim0, self.ndim), check_dim(dim1, self.ndim)
        if self.ndim == 0:
            return self.view_as(self)
        order[a], order[b] = order[b], order[a]
        return transpose(self, tuple(order))

    swapaxes = transpose

    def t(self) -> Tensor:
        """The transpose of a 2-D tensor (1-D and 0-D come back as they are)."""
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dimensions, got shape {self.shape}; "
                             "use transpose(d0, d1) or permute")
        return transpose(self, None) if self.ndim == 2 else self.view_as(self)

    @property
    def T(self) -> Tensor:  # noqa: N802 (NumPy's and PyTorch's name)
        return transpose(self, None)

    @property
    def mT(self) -> Tensor:  # noqa: N802 (PyTorch's name)
        """The last two dimensions swapped (a batch of matrix transposes)."""
        return self.transpose(-2, -1)

    def expand(self, *sizes: Any) -> Tensor:
        """A broadcast to ``sizes`` (new leading dimensions allowed; -1 keeps a length)."""
        sizes = _sizes(sizes)
        if len(sizes) < self.ndim:
            raise ValueError(f"expand: {len(sizes)} sizes given for a tensor of shape {self.shape}")
        own = (None,) * (len(sizes) - self.ndim) + self.shape
        target = tuple(mine if n == -1 and mine is not None else n for n, mine in zip(sizes, own))
        return Expand.apply(self, target)

    def expand_as(self, other: Tensor) -> Tensor:
        return Expand.apply(self, tuple(other.shape))

    def repeat(self, *repeats: Any) -> Tensor:
        """Tile the tensor: ``repeats[i]`` copies along dimension i (a copy, unlike expand)."""
        return Repeat.apply(self, _sizes(repeats))

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of ``split_size`` along ``dim`` (the last may be shorter), or of the listed lengths."""
        axis = check_dim(dim, self.ndim)
        length = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split_size must be a positive int, got {split_size_or_sections}")
            sections = [min(split_size_or_sections, length - start)
                        for start in range(0, length, split_size_or_sections)] or [0]
        else:
            sections = list(split_size_or_sections)
            if sum(sections) != length:
                raise ValueError(f"split sections {sections} add up to {sum(sections)}, "
                                 f"dimension {dim} has length {length}")
        pieces, start = [], 0
        for n in sections:
            index = (slice(None),) * axis + (slice(start, start + n),)
            pieces.append(getitem(self, index))
            start += n
        return tuple(pieces)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """``chunks`` pieces along ``dim`` of ceil(length / chunks) each (fewer when it divides so)."""
        if not isinstance(chunks, int) or chunks <= 0:
            raise ValueError(f"chunk needs a positive number of chunks, got {chunks!r}")
        length = self.shape[check_dim(dim, self.ndim)]
        return self.split(max(-(-length // chunks), 1), dim)

    def contiguous(self) -> Tensor:
        """Self when already C-contiguous, else a contiguous copy (differentiable)."""
        if self.array.flags.c_contiguous:
            return self
        return Contiguous.apply(self)

    def is_contiguous(self) -> bool:
        return bool(self.array.flags.c_contiguous)

    def tolist(self) -> Any:
        """The values as (nested) Python lists of Python numbers; a 0-d tensor gives a number."""
        return self.numpy().tolist()
