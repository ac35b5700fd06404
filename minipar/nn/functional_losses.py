"""Classification losses with PyTorch's arguments: ``cross_entropy`` and ``nll_loss``.

Both take logits (or log-probabilities) of shape (C,), (N, C) or (N, C, d1, ...)
-- the class dimension is 1 -- and flatten them to (M, C) rows, one row per
position, before one fused Function computes loss and gradient.

With log p = log_softmax(z) over the classes and a target y per row:

    nll:            l_i = -w[y_i] * log p_i[y_i]                   (0 where y_i == ignore_index)
    label smoothing: l_i = (1 - eps) * nll_i - (eps / C) * sum_c w_c log p_ic
    probabilities:  l_i = -sum_c w_c * t_ic * log p_ic,  t <- (1 - eps) t + eps / C
    mean:           sum_i l_i / sum_i w[y_i]   (index targets: the weights of the rows kept)
                    sum_i l_i / M              (probability targets)

Write the row's loss as -sum_c q_ic log p_ic (q the "target weights" above);
then d l_i / d z_ic = p_ic * sum_c q_ic - q_ic, which is what backward builds.
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.softmax_layers import log_softmax_array
from minipar.tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str, size_average: Any = None, reduce: Any = None) -> None:
    """PyTorch's ``reduction``; its long-deprecated ``size_average``/``reduce`` are refused."""
    if size_average is not None or reduce is not None:
        raise ValueError("size_average and reduce are deprecated in PyTorch and not implemented: "
                         "use reduction='mean' | 'sum' | 'none'")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _row_scale(grad: Any, reduction: str, denominator: Any, rows: int) -> Any:
    """dLoss/dl_i for every row: the upstream gradient, divided by the mean's denominator."""
    xp = get_array_module(grad)
    if reduction == "none":
        return grad
    return xp.broadcast_to(grad / denominator if reduction == "mean" else grad, (rows,))


def _reduce_rows(losses: Any, reduction: str, denominator: Any) -> Any:
    xp = get_array_module(losses)
    if reduction == "none":
        return losses
    total = losses.sum() / denominator if reduction == "mean" else losses.sum()
    return xp.asarray(total, dtype=losses.dtype)


def _picked_weights(targets: Any, weight: Any, ignore_index: int | None, dtype: Any) -> tuple[Any, Any, Any]:
    """(safe targets, w[y_i] with 0 on ignored rows, kept-row mask) for index targets."""
    xp = get_array_module(targets)
    kept = xp.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index
    safe = xp.where(kept, targets, 0)
    picked = kept.astype(dtype) if weight is None else weight[safe] * kept
    return safe, picked, kept


class CrossEntropyFunction(Function):
    """Fused log_softmax + loss on (M, C) logits; index (M,) or probability (M, C) targets."""

    @staticmethod
    def forward(ctx: Any, logits: Any, targets: Any, weight: Any, ignore_index: int,
                smoothing: float, reduction: str) -> Any:
        xp = get_array_module(logits)
        log_probs = log_softmax_array(logits, axis=1)  # (M, C)
        rows, classes = logits.shape
        ctx.reduction, ctx.smoothing, ctx.weight = reduction, smoothing, weight
        if targets.ndim == 2:  # probabilities: q = w * ((1 - eps) t + eps / C)
            q = targets * (1 - smoothing) + smoothing / classes if smoothing else targets
            if weight is not None:
                q = q * weight
            losses = -(q * log_probs).sum(axis=1)
            ctx.denominator = rows
            ctx.save_for_backward(log_probs, q, targets)
            return _reduce_rows(losses, reduction, rows)
        if ignore_index is None and weight is None and not smoothing:  # the everyday case: -log p[y]
            losses = -log_probs[xp.arange(rows), targets]
            ctx.denominator = rows
            ctx.save_for_backward(log_probs, targets)
            return _reduce_rows(losses, reduction, rows)
        safe, picked, kept = _picked_weights(targets, weight, ignore_index, logits.dtype)
        losses = -log_probs[xp.arange(rows), safe] * picked  # (M,)
        if smoothing:
            class_weight = 1 if weight is None else weight
            smooth = -(log_probs * class_weight).sum(axis=1) * kept
            losses = (1 - smoothing) * losses + (smoothing / classes) * smooth
        ctx.denominator = picked.sum()
        ctx.save_for_backward(log_probs, safe, picked, kept)
        with xp.errstate(invalid="ignore", divide="ignore"):  # every row ignored: NaN, as PyTorch
            return _reduce_rows(losses, reduction, ctx.denominator)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        xp = get_array_module(grad)
        log_probs = ctx.saved_tensors[0]
        rows, classes = log_probs.shape
        eps, weight = ctx.smoothing, ctx.weight
        grad_logits = xp.exp(log_probs)  # softmax p, a fresh array we may write into
        if len(ctx.saved_tensors) == 2:  # the everyday case: (p - onehot(y)) * dLoss/dl_i
            grad_logits[xp.arange(rows), ctx.saved_tensors[1]] -= 1
            if ctx.reduction == "none":
                grad_logits *= grad[:, None]
            else:
                grad_logits *= grad / rows if ctx.reduction == "mean" else grad
            return grad_logits, None, None, None, None, None
        with xp.errstate(invalid="ignore", divide="ignore"):
            scale = _row_scale(grad, ctx.reduction, ctx.denominator, rows)  # (M,)
        if len(ctx.saved_tensors) == 3:  # probabilities: p * sum_c q - q
            _, q, targets = ctx.saved_tensors
            grad_logits *= (scale * q.sum(axis=1))[:, None]
            grad_logits -= scale[:, None] * q
            grad_targets = None
            if ctx.needs_input_grad[1]:  # d l_i / d t_ic = -(1 - eps) w_c log p_ic
                factor = -(1 - eps) * (1 if weight is None else weight)
                grad_targets = factor * log_probs * scale[:, None]
            return grad_logits, grad_targets, None, None, None, None
        _, safe, picked, kept = ctx.saved_tensors
        if weight is None:
            row_total = kept.astype(log_probs.dtype)  # sum_c q_ic = (1 - eps) + eps on kept rows
        else:
            row_total = (1 - eps) * picked + (eps / classes) * weight.sum() * kept
        grad_logits *= (scale * row_total)[:, None]
        if eps:
            class_weight = 1 if weight is None else weight
            grad_logits -= (eps / classes) * class_weight * (scale * kept)[:, None]
        grad_logits[xp.arange(rows), safe] -= (1 - eps) * scale * picked
        return grad_logits, None, None, None, None, None


class NLLFunction(Function):
    """l_i = -w[y_i] * input[i, y_i] on (M, C) log-probabilities; the gradient is -w[y_i] at y_i."""

    @staticmethod
    def forward(ctx: Any, log_probs: Any, targets: Any, weight: Any, ignore_index: int,
                reduction: str) -> Any:
        xp = get_array_module(log_probs)
        safe, picked, _ = _picked_weights(targets, weight, ignore_index, log_probs.dtype)
        losses = -log_probs[xp.arange(log_probs.shape[0]), safe] * picked
        ctx.reduction, ctx.shape, ctx.denominator = reduction, log_probs.shape, picked.sum()
        ctx.save_for_backward(safe, picked)
        with xp.errstate(invalid="ignore", divide="ignore"):
            return _reduce_rows(losses, reduction, ctx.denominator)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        xp = get_array_module(grad)
        safe, picked = ctx.saved_tensors
        rows = ctx.shape[0]
        with xp.errstate(invalid="ignore", divide="ignore"):
            scale = _row_scale(grad, ctx.reduction, ctx.denominator, rows)
        grad_input = xp.zeros(ctx.shape, dtype=grad.dtype)
        grad_input[xp.arange(rows), safe] = -scale * picked
        return grad_input, None, None, None, None


# ----- argument checks and the (N, C, d1, ...) -> (M, C) flattening ----------------------------------


def _array(value: Any) -> Any:
    return value.array if isinstance(value, Tensor) else value


def _rows(value: Any, classes: int) -> Any:
    """(C,) -> (1, C); (N, C) unchanged; (N, C, d1, ...) -> (N*d1*..., C), classes last.
    Works on Tensors (differentiably) and on arrays alike."""
    if value.ndim == 1:
        return value.reshape(1, classes)
    if value.ndim == 2:
        return value
    order = (0, *range(2, value.ndim), 1)
    moved = value.permute(*order) if hasattr(value, "permute") else value.transpose(order)  # Tensor | array
    return moved.reshape(-1, classes)


def _class_weight(weight: Any, classes: int, dtype: Any, xp: Any, who: str) -> Any:
    if weight is None:
        return None
    weight = xp.asarray(_array(weight), dtype=dtype)
    if weight.shape != (classes,):
        raise ValueError(f"{who} weight must have shape ({classes},) (one per class), got {weight.shape}")
    return weight


def _index_targets(input: Tensor, targets: Any, ignore_index: int, who: str, what: str) -> Any:
    """Integer targets of ``input``'s shape without the class dimension, values checked, flattened;
    and whether any of them equals ``ignore_index``."""
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    expected = () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
    if targets.dtype.kind not in "iu":
        raise TypeError(
            f"{who} expects integer class targets, got dtype {targets.dtype} of shape "
            f"{tuple(targets.shape)}{what}"
        )
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"{who} expects targets of shape {expected} for {'logits' if what else 'input'} "
            f"{tuple(input.shape)}, got {tuple(targets.shape)}"
        )
    flat = targets.reshape(-1)
    if flat.size and 0 <= flat.min() and flat.max() < classes:  # all in range: ignored ones only if
        return flat, bool(0 <= ignore_index < classes and (flat == ignore_index).any())  # in range
    kept = flat[flat != ignore_index]
    if kept.size and (kept.min() < 0 or kept.max() >= classes):
        raise ValueError(
            f"{who} targets must lie in [0, {classes}), got values from {int(kept.min())} to "
            f"{int(kept.max())} (ignore_index={ignore_index} aside)"
        )
    return flat, kept.size < flat.size


def _check_input(input: Any, who: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{who} expects a Tensor input, got {type(input).__name__}")
    if input.ndim == 0 or input.dtype.kind != "f":
        raise ValueError(
            f"{who} expects floating-point input of shape (C,), (N, C) or (N, C, d1, ...), "
            f"got shape {tuple(input.shape)} and dtype {input.dtype}"
        )


def cross_entropy(input: Tensor, target: Any, weight: Any = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """PyTorch's ``F.cross_entropy``: log_softmax over dimension 1, then the loss above.

    ``target``: class indices (integers, the input's shape without dimension 1) or
    class probabilities (floats of the input's shape). ``weight``: (C,) per class.
    """
    _check_input(input, "cross_entropy")
    check_reduction(reduction, size_average, reduce)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    xp = get_array_module(input.array)
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    class_weight = _class_weight(weight, classes, input.dtype, xp, "cross_entropy")
    target_array = xp.asarray(_array(target))
    rows = _rows(input, classes)
    if target_array.dtype.kind == "f" and tuple(target_array.shape) == tuple(input.shape):
        probabilities = target if isinstance(target, Tensor) else target_array.astype(input.dtype)
        losses = CrossEntropyFunction.apply(rows, _rows(probabilities, classes), class_weight,
                                            ignore_index, float(label_smoothing), reduction)
        out_shape = () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
    else:
        flat, any_ignored = _index_targets(
            input, target_array, ignore_index, "cross_entropy",
            f" (probability targets must have the logits' shape {tuple(input.shape)})")
        losses = CrossEntropyFunction.apply(rows, flat, class_weight, ignore_index if any_ignored else None,
                                            float(label_smoothing), reduction)
        out_shape = tuple(target_array.shape)
    if reduction == "none" and tuple(losses.shape) != out_shape:
        losses = losses.reshape(out_shape)
    return losses


def nll_loss(input: Tensor, target: Any, weight: Any = None, size_average: Any = None,
             ignore_index: int = -100, reduce: Any = None, reduction: str = "mean") -> Tensor:
    """PyTorch's ``F.nll_loss``: ``input`` holds log-probabilities, class dimension 1."""
    _check_input(input, "nll_loss")
    check_reduction(reduction, size_average, reduce)
    xp = get_array_module(input.array)
    classes = input.shape[0] if input.ndim == 1 else input.shape[1]
    class_weight = _class_weight(weight, classes, input.dtype, xp, "nll_loss")
    target_array = xp.asarray(_array(target))
    flat, _ = _index_targets(input, target_array, ignore_index, "nll_loss", "")
    losses = NLLFunction.apply(_rows(input, classes), flat, class_weight, ignore_index, reduction)
    if reduction == "none" and tuple(losses.shape) != tuple(target_array.shape):
        losses = losses.reshape(tuple(target_array.shape))
    return losses
