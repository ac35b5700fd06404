"""``MaxPool2d``: the largest value of each kernel window, per channel.

    out[n, c, i, j] = max_{u < kH, v < kW} x[n, c, s*i + u, s*j + v]
    Ho = (H - kH) // s + 1  (a remainder that fits no window is dropped, as PyTorch)

The gradient goes to the one input that was the maximum (the first one in the
window when several tie, as PyTorch).

How: element (u, v) of every window at once is the strided slice
``x[:, :, u::s, v::s]`` (cut to Ho x Wo) -- a view, no copy. A running maximum
over the kH*kW slices gives the output and, with a strict ``>``, the offset
of the first maximum. Backward adds the gradient back through the same
slices where that offset matches. When stride == kernel the slices tile x
(this is the reshape (N, C, Ho, kH, Wo, kW) seen axis by axis); when windows
overlap the adds accumulate. On small images this is about 3x faster than
copying the windows out and calling ``argmax`` over a short last axis
(measured on (64, 16, 8, 8), kernel 2, forward + backward).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.conv import as_pair
from minipar.nn.module import Module
from minipar.tensor import Tensor


def offset_slices(kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]) -> list[Any]:
    """Index of window element (u, v) for all windows, for each (u, v) in row-major order."""
    (kh, kw), (sh, sw), (out_h, out_w) = kernel, stride, out_hw
    return [(slice(None), slice(None), slice(u, u + sh * out_h, sh), slice(v, v + sw * out_w, sw))
            for u in range(kh) for v in range(kw)]


class MaxPool2dFunction(Function):
    @staticmethod
    def forward(ctx: Any, x: Any, kernel: tuple[int, int], stride: tuple[int, int]) -> Any:
        xp = get_array_module(x)
        out_hw = ((x.shape[2] - kernel[0]) // stride[0] + 1, (x.shape[3] - kernel[1]) // stride[1] + 1)
        slices = offset_slices(kernel, stride, out_hw)
        best = x[slices[0]].copy()  # (N, C, Ho, Wo)
        argmax = xp.zeros(best.shape, dtype=np.int32)  # which offset holds the first maximum
        for offset, index in enumerate(slices[1:], start=1):
            candidate = x[index]
            greater = candidate > best  # strict: a tie keeps the earlier offset
            xp.maximum(best, candidate, out=best)
            argmax += greater * (offset - argmax)  # argmax = offset where greater
        ctx.x_shape, ctx.slices = x.shape, slices
        ctx.save_for_backward(argmax)
        return best

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        (argmax,) = ctx.saved_tensors
        grad_x = xp.zeros(ctx.x_shape, dtype=grad.dtype)
        for offset, index in enumerate(ctx.slices):  # overlapping windows add up
            grad_x[index] += xp.where(argmax == offset, grad, 0)
        return grad_x, None, None


def _check_input(x: Tensor, kernel: tuple[int, int], who: str) -> None:
    if x.ndim != 4 or x.shape[2] < kernel[0] or x.shape[3] < kernel[1]:
        raise ValueError(
            f"{who} expected input of shape (N, C, H, W) with H >= {kernel[0]} and W >= {kernel[1]}, "
            f"got {tuple(x.shape)}"
        )


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None) -> Tensor:
    """PyTorch's ``F.max_pool2d`` (no padding, dilation or ceil mode); stride defaults to kernel."""
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    _check_input(x, kernel, "max_pool2d")
    return MaxPool2dFunction.apply(x, kernel, stride)


class MaxPool2d(Module):
    """Max over (kH, kW) windows moved by ``stride`` (default: the kernel size, no overlap)."""

    def __init__(self, kernel_size: Any, stride: Any = None) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.kernel_size, f"MaxPool2d(kernel_size={self.kernel_size})")
        return MaxPool2dFunction.apply(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
