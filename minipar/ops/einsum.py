"""``einsum``: sums of products named by index letters, and its backward.

    einsum("ij,jk->ik", a, b)        # a @ b
    einsum("bhqd,bhkd->bhqk", q, k)  # attention scores
    einsum("...ij,...jk->...ik", a, b)

Backward of operand i is the same kind of einsum: the upstream gradient (indexed by the
output letters) times every other operand, summed down to operand i's letters::

    out = einsum("ij,jk->ik", a, b)   =>   d a = einsum("ik,jk->ij", g, b)

A letter that only operand i has (summed away in forward) gets the gradient broadcast
back along it. ``...`` is rewritten to spare letters first, so the rule above covers it.
"""

from __future__ import annotations

import string
from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module


def explicit(equation: str, ndims: list[int]) -> tuple[list[str], str]:
    """Each operand's letters and the output's, with ``...`` spelled out and ``->`` filled in."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    subs = inputs.split(",")
    if len(subs) != len(ndims):
        raise ValueError(f"einsum: {equation!r} names {len(subs)} operands, got {len(ndims)}")
    spare = [c for c in string.ascii_letters if c not in equation]
    widths = [ndim - len(sub.replace("...", "")) for sub, ndim in zip(subs, ndims)]
    width = max([w for w, sub in zip(widths, subs) if "..." in sub], default=0)
    ellipsis = "".join(spare[:width])
    letters = []
    for sub, ndim, w in zip(subs, ndims, widths):
        if "..." in sub:
            sub = sub.replace("...", ellipsis[width - w:] if w else "")
        if len(sub) != ndim:
            raise ValueError(f"einsum: subscripts {sub!r} do not match an operand of {ndim} dimensions")
        letters.append(sub)
    if arrow:
        out = output.replace("...", ellipsis)
    else:  # NumPy's implicit output: the ellipsis, then the letters seen once, in order
        joined = "".join(letters)
        out = ellipsis + "".join(sorted(c for c in set(joined) if joined.count(c) == 1 and c not in ellipsis))
    return letters, out


class Einsum(Function):
    @staticmethod
    def forward(ctx: Any, equation: str, *operands: Any) -> Any:
        letters, out = explicit(equation, [a.ndim for a in operands])
        ctx.letters, ctx.out = letters, out
        ctx.save_for_backward(*operands)
        return get_array_module(operands[0]).asarray(
            get_array_module(operands[0]).einsum(",".join(letters) + "->" + out, *operands))

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        xp = get_array_module(grad)
        operands = ctx.saved_tensors
        grads: list[Any] = [None]
        for i, (operand, sub) in enumerate(zip(operands, ctx.letters)):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            if len(set(sub)) != len(sub):
                raise NotImplementedError(f"einsum backward with a repeated letter in one operand ({sub!r})")
            others = [s for j, s in enumerate(ctx.letters) if j != i]
            seen = set(ctx.out).union(*others)
            kept = "".join(c for c in sub if c in seen)
            rest = [a for j, a in enumerate(operands) if j != i]
            g = xp.einsum(",".join([ctx.out, *others]) + "->" + kept, grad, *rest)
            g = g.reshape([g.shape[kept.index(c)] if c in seen else 1 for c in sub])  # letters only i had
            stretched = tuple(k for k in range(operand.ndim) if operand.shape[k] == 1 and g.shape[k] != 1)
            if stretched:  # a length-1 dimension broadcast against the others: sum it back
                g = g.sum(axis=stretched, keepdims=True)
            grads.append(xp.broadcast_to(g, operand.shape).astype(operand.dtype, copy=False))
        return tuple(grads)


def einsum(equation: str, *operands: Any) -> Any:
    """``torch.einsum(equation, *operands)`` (operands may also come as one list)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum needs the equation string first, got {type(equation).__name__}")
    return Einsum.apply(equation, *operands)
