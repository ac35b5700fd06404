"""Losses computed element by element, then reduced: MSE, L1, smooth L1, binary cross-entropy.

With d = input - target, elementwise, then 'mean' (over all elements), 'sum' or 'none':

    mse:        d^2
    l1:         |d|
    smooth l1:  0.5 d^2 / beta  where |d| < beta,  |d| - 0.5 beta elsewhere   (beta = 0: l1)
    bce:        -w (t log x + (1 - t) log(1 - x)),  each log clamped at -100 as PyTorch
    bce logits: w ((1 - t) z + L softplus(-z)),  L = 1 + (pos_weight - 1) t
                (softplus(-z) = log(1 + exp(-|z|)) + max(-z, 0): no overflow for any z)

Shapes of input and target must match exactly (no silent broadcasting).
The gradients, written out in each Function's backward, go to input and to target.
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.functional_losses import check_reduction
from minipar.tensor import Tensor

_LOG_FLOOR = -100.0  # PyTorch clamps log(x) and log(1 - x) in binary_cross_entropy here
_BCE_EPS = 1e-12  # and keeps x (1 - x) above this in its gradient


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _checked(who: str, input: Any, target: Any, reduction: str, size_average: Any = None,
             reduce: Any = None) -> None:
    check_reduction(reduction, size_average, reduce)
    if not isinstance(input, Tensor):
        raise TypeError(f"{who} expects a Tensor input, got {type(input).__name__}")
    target_shape = tuple(getattr(target, "shape", ()))
    if tuple(input.shape) != target_shape:
        raise ValueError(
            f"{who} expects input and target of the same shape, got {tuple(input.shape)} "
            f"and {target_shape}"
        )


def _as_operand(value: Any, like: Tensor) -> Any:
    """A Tensor stays (its gradient may be wanted); anything else becomes an array of like's dtype."""
    if isinstance(value, Tensor):
        return value
    return get_array_module(like.array).asarray(value, dtype=like.dtype)


def _softplus(z: Any) -> Any:
    xp = get_array_module(z)
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(-z, 0)


def _sigmoid(z: Any) -> Any:
    xp = get_array_module(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


class SmoothL1Function(Function):
    """Elementwise smooth L1 of d = x - t; dl/dd = d / beta inside |d| < beta, sign(d) outside."""

    @staticmethod
    def forward(ctx: Any, x: Any, t: Any, beta: float) -> Any:
        xp = get_array_module(x)
        diff = x - t
        size = xp.abs(diff)
        inside = size < beta
        ctx.save_for_backward(diff, inside)
        ctx.beta = beta
        return xp.where(inside, 0.5 * diff * diff / (beta if beta else 1), size - 0.5 * beta)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None]:
        xp = get_array_module(grad)
        diff, inside = ctx.saved_tensors
        local = xp.where(inside, diff / (ctx.beta if ctx.beta else 1), xp.sign(diff)) * grad
        need_x, need_t = ctx.needs_input_grad[:2]
        return (local if need_x else None), (-local if need_t else None), None


class BinaryCrossEntropyFunction(Function):
    """-w (t log x + (1 - t) log(1 - x)) elementwise, logs clamped at -100."""

    @staticmethod
    def forward(ctx: Any, x: Any, t: Any, weight: Any) -> Any:
        xp = get_array_module(x)
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError("binary_cross_entropy expects input probabilities in [0, 1], got values "
                             f"from {float(x.min())} to {float(x.max())} "
                             "(use binary_cross_entropy_with_logits for logits)")
        with xp.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), _LOG_FLOOR)
            log_not_x = xp.maximum(xp.log(1 - x), _LOG_FLOOR)
        ctx.save_for_backward(x, t, weight, log_x, log_not_x)
        losses = -(t * log_x + (1 - t) * log_not_x)
        return losses if weight is None else losses * weight

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None]:
        xp = get_array_module(grad)
        x, t, weight, log_x, log_not_x = ctx.saved_tensors
        scale = grad if weight is None else grad * weight
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:  # (x - t) / (x (1 - x)), the denominator kept >= 1e-12
            grad_x = scale * (x - t) / xp.maximum(x * (1 - x), _BCE_EPS)
        if ctx.needs_input_grad[1]:
            grad_t = -scale * (log_x - log_not_x)
        return grad_x, grad_t, None


class BCEWithLogitsFunction(Function):
    """w ((1 - t) z + L softplus(-z)), L = 1 + (pos_weight - 1) t.

    dl/dz = w (L sigmoid(z) - L + 1 - t)   (= w (sigmoid(z) - t) without pos_weight)
    dl/dt = w (-z + (pos_weight - 1) softplus(-z))
    """

    @staticmethod
    def forward(ctx: Any, z: Any, t: Any, weight: Any, pos_weight: Any) -> Any:
        softplus = _softplus(z)
        scale = 1 if pos_weight is None else 1 + (pos_weight - 1) * t  # L
        losses = (1 - t) * z + scale * softplus
        ctx.save_for_backward(z, t, weight, pos_weight, softplus)
        return losses if weight is None else losses * weight

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None, None]:
        z, t, weight, pos_weight, softplus = ctx.saved_tensors
        upstream = grad if weight is None else grad * weight
        grad_z = grad_t = None
        if ctx.needs_input_grad[0]:
            if pos_weight is None:
                grad_z = upstream * (_sigmoid(z) - t)
            else:
                scale = 1 + (pos_weight - 1) * t
                grad_z = upstream * (scale * _sigmoid(z) - scale + 1 - t)
        if ctx.needs_input_grad[1]:
            extra = 0 if pos_weight is None else (pos_weight - 1) * softplus
            grad_t = upstream * (-z + extra)
        return grad_z, grad_t, None, None


def mse_loss(input: Tensor, target: Any, size_average: Any = None, reduce: Any = None,
             reduction: str = "mean") -> Tensor:
    """Mean squared error (input - target)^2, reduced."""
    _checked("mse_loss", input, target, reduction, size_average, reduce)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Any, size_average: Any = None, reduce: Any = None,
            reduction: str = "mean") -> Tensor:
    """Mean absolute error |input - target|, reduced."""
    _checked("l1_loss", input, target, reduction, size_average, reduce)
    return _reduce((input - target).abs(), reduction)


def smooth_l1_loss(input: Tensor, target: Any, size_average: Any = None, reduce: Any = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Huber-like loss: quadratic inside |d| < beta, linear outside (see the module docstring)."""
    _checked("smooth_l1_loss", input, target, reduction, size_average, reduce)
    if not beta >= 0:
        raise ValueError(f"smooth_l1_loss beta must be >= 0, got {beta!r}")
    return _reduce(SmoothL1Function.apply(input, _as_operand(target, input), float(beta)), reduction)


def _weight_array(weight: Any, input: Tensor, who: str, name: str) -> Any:
    if weight is None:
        return None
    array = get_array_module(input.array).asarray(weight.array if isinstance(weight, Tensor) else weight,
                                                  dtype=input.dtype)
    try:
        get_array_module(array).broadcast_shapes(array.shape, tuple(input.shape))
    except ValueError:
        raise ValueError(f"{who} {name} of shape {array.shape} does not broadcast to the input's "
                         f"shape {tuple(input.shape)}") from None
    return array


def binary_cross_entropy(input: Tensor, target: Any, weight: Any = None, size_average: Any = None,
                         reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities ``input`` in [0, 1] against ``target``."""
    _checked("binary_cross_entropy", input, target, reduction, size_average, reduce)
    weight = _weight_array(weight, input, "binary_cross_entropy", "weight")
    losses = BinaryCrossEntropyFunction.apply(input, _as_operand(target, input), weight)
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Any = None,
                                     size_average: Any = None, reduce: Any = None,
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    """sigmoid + binary cross-entropy in one stable step; ``pos_weight`` weighs the positives
    (one per class, broadcast along the last dimension)."""
    who = "binary_cross_entropy_with_logits"
    _checked(who, input, target, reduction, size_average, reduce)
    weight = _weight_array(weight, input, who, "weight")
    pos_weight = _weight_array(pos_weight, input, who, "pos_weight")
    losses = BCEWithLogitsFunction.apply(input, _as_operand(target, input), weight, pos_weight)
    return _reduce(losses, reduction)
