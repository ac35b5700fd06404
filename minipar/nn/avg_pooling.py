"""Average pooling: ``AvgPool2d`` (fixed windows) and ``AdaptiveAvgPool2d`` (a fixed output size).

AvgPool2d, on x zero-padded by (pH, pW):

    out[n, c, i, j] = sum_{u < kH, v < kW} x[n, c, s*i + u, s*j + v] / divisor
    Ho = (H + 2 pH - kH) // s + 1
    divisor = kH * kW (count_include_pad=True), or the number of window elements
              that are not padding (False), or divisor_override

As in max pooling (pooling.py), window element (u, v) of every window at once is
the strided slice ``x[:, :, u::s, v::s]``: the forward adds kH*kW slices, the
backward adds grad / divisor back through the same slices.

AdaptiveAvgPool2d(output_size): output cell i along H averages input rows
floor(i H / Ho) .. ceil((i + 1) H / Ho) - 1 (PyTorch's bins; they may overlap by one row).
"""

from __future__ import annotations

from typing import Any

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.conv import as_pair
from minipar.nn.module import Module
from minipar.nn.pooling import offset_slices
from minipar.tensor import Tensor


class AvgPool2dFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int], count_include_pad: bool, divisor_override: Any) -> Any:
        xp = get_array_module(x)
        (ph, pw), (n, c, h, w) = padding, x.shape
        padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        padded[:, :, ph:ph + h, pw:pw + w] = x
        out_hw = ((h + 2 * ph - kernel[0]) // stride[0] + 1, (w + 2 * pw - kernel[1]) // stride[1] + 1)
        slices = offset_slices(kernel, stride, out_hw)
        total = padded[slices[0]].copy()  # (N, C, Ho, Wo)
        for index in slices[1:]:
            total += padded[index]
        if divisor_override is not None:
            divisor: Any = float(divisor_override)
        elif count_include_pad or not (ph or pw):
            divisor = float(kernel[0] * kernel[1])
        else:  # count the real (unpadded) elements of each window: pool a mask of ones
            mask = xp.zeros((1, 1, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
            mask[:, :, ph:ph + h, pw:pw + w] = 1
            divisor = sum(mask[index] for index in slices)  # (1, 1, Ho, Wo)
        ctx.padded_shape, ctx.x_shape, ctx.padding = padded.shape, x.shape, padding
        ctx.slices, ctx.divisor = slices, divisor
        return total / divisor

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        xp = get_array_module(grad)
        share = grad / ctx.divisor
        grad_padded = xp.zeros(ctx.padded_shape, dtype=grad.dtype)
        for index in ctx.slices:  # overlapping windows add up
            grad_padded[index] += share
        (ph, pw), (_, _, h, w) = ctx.padding, ctx.x_shape
        return grad_padded[:, :, ph:ph + h, pw:pw + w], None, None, None, None, None


def _as_batch(x: Tensor, who: str) -> tuple[Tensor, bool]:
    """(C, H, W) input is one sample: give it a batch dimension (removed again after)."""
    if x.ndim == 3:
        return x.reshape(1, *x.shape), True
    if x.ndim != 4:
        raise ValueError(f"{who} expected input of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return x, False


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Any = None) -> Tensor:
    """PyTorch's ``F.avg_pool2d`` (``ceil_mode=False`` only); stride defaults to the kernel."""
    if ceil_mode:
        raise ValueError("minipar's avg_pool2d implements ceil_mode=False only")
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None or stride == [] else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"avg_pool2d padding {padding} must be at most half the kernel {kernel}")
    if divisor_override is not None and not divisor_override > 0:
        raise ValueError(f"avg_pool2d divisor_override must be > 0, got {divisor_override!r}")
    x, unbatched = _as_batch(input, "avg_pool2d")
    if x.shape[2] + 2 * padding[0] < kernel[0] or x.shape[3] + 2 * padding[1] < kernel[1]:
        raise ValueError(f"avg_pool2d kernel {kernel} is larger than the padded input {tuple(x.shape)}")
    out = AvgPool2dFunction.apply(x, kernel, stride, padding, bool(count_include_pad), divisor_override)
    return out.reshape(*out.shape[1:]) if unbatched else out


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]  # floor, ceil


class AdaptiveAvgPool2dFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, out_hw: tuple[int, int]) -> Any:
        xp = get_array_module(x)
        rows, cols = _bins(x.shape[2], out_hw[0]), _bins(x.shape[3], out_hw[1])
        out = xp.empty((*x.shape[:2], *out_hw), dtype=x.dtype)
        for i, (top, bottom) in enumerate(rows):
            for j, (left, right) in enumerate(cols):
                out[:, :, i, j] = x[:, :, top:bottom, left:right].mean(axis=(2, 3))
        ctx.x_shape, ctx.bins = x.shape, (rows, cols)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(ctx.x_shape, dtype=grad.dtype)
        rows, cols = ctx.bins
        for i, (top, bottom) in enumerate(rows):
            for j, (left, right) in enumerate(cols):
                count = (bottom - top) * (right - left)
                grad_x[:, :, top:bottom, left:right] += (grad[:, :, i, j] / count)[:, :, None, None]
        return grad_x, None


def _output_size(output_size: Any, x: Tensor) -> tuple[int, int]:
    pair = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(pair) != 2:
        raise ValueError(f"output_size must be an integer or a pair, got {output_size!r}")
    sizes = tuple(x.shape[2 + k] if v is None else v for k, v in enumerate(pair))  # None: keep
    return as_pair(sizes, "output_size", 1)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average over PyTorch's adaptive bins to reach ``output_size`` (int, pair, None keeps a side)."""
    x, unbatched = _as_batch(input, "adaptive_avg_pool2d")
    out = AdaptiveAvgPool2dFunction.apply(x, _output_size(output_size, x))
    return out.reshape(*out.shape[1:]) if unbatched else out


class AvgPool2d(Module):
    """Mean over (kH, kW) windows moved by ``stride`` (default: the kernel size)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: Any = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """``AdaptiveAvgPool2d(output_size)``: e.g. ``(1, 1)`` is global average pooling."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
