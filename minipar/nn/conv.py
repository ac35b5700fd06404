"""``Conv2d``: 2-D convolution (cross-correlation, as in every framework) by im2col + one matmul.

For input x (N, C, H, W), weight W (O, C, kH, kW), stride s and padding p:

    out[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] * xpad[n, c, s*i + u, s*j + v]
    Ho = (H + 2p - kH) // s + 1,  Wo = (W + 2p - kW) // s + 1

``conv2d_naive`` writes that sum as loops over the kernel offsets: easy to
check, slow. ``Conv2dFunction`` is the fast form: a strided *view* of the
padded input shows every (kH, kW) window without copying (im2col); one copy
lays the windows out as rows of a matrix ``cols`` (N*Ho*Wo, kH*kW*C), and the
whole convolution is then a single matmul with W reordered to (O, kH*kW*C).
Backward is two matmuls plus col2im: the window gradients are added back onto
the input, one kernel offset (u, v) at a time, since windows overlap.

Memory: ``cols`` holds N*Ho*Wo*C*kH*kW numbers (kH*kW times the input when s = 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minipar.autograd import Function
from minipar.backend import get_array_module
from minipar.nn.module import Module, Parameter
from minipar.random import generator
from minipar.tensor import Tensor


def as_pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def windows(x: Any, kernel: tuple[int, int], stride: tuple[int, int]) -> Any:
    """A view (N, C, Ho, Wo, kH, kW) of every kernel window of x (N, C, H, W).

    No data moves: window (i, j) starts at row s*i, column s*j, so the view
    steps s rows for i, s columns for j, and one row/column inside a window.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_n, s_c, s_h, s_w = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, c, out_h, out_w, kh, kw),
        strides=(s_n, s_c, s_h * sh, s_w * sw, s_h, s_w))  # never written to


def _pad(x: Any, padding: tuple[int, int]) -> Any:
    """Zeros around H and W (one allocation and a copy; ``xp.pad`` costs far more per call)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    padded = get_array_module(x).zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


class Conv2dFunction(Function):
    """im2col + one matmul forward; two matmuls + col2im backward."""

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, stride: tuple[int, int],
                padding: tuple[int, int]) -> Any:
        n = x.shape[0]
        out_channels, _, kh, kw = weight.shape
        view = windows(_pad(x, padding), (kh, kw), stride)  # (N, C, Ho, Wo, kH, kW)
        out_h, out_w = view.shape[2], view.shape[3]
        # im2col, the one big copy: each output position's window becomes a row. Rows are
        # ordered (kH, kW, C) rather than (C, kH, kW): the copy runs faster with C innermost.
        cols = view.transpose(0, 2, 3, 4, 5, 1).reshape(n * out_h * out_w, -1)  # (N*Ho*Wo, kH*kW*C)
        weight2 = weight.transpose(0, 2, 3, 1).reshape(out_channels, -1)  # (O, kH*kW*C), small
        out = cols @ weight2.T  # (N*Ho*Wo, kH*kW*C) @ (kH*kW*C, O) -> (N*Ho*Wo, O)
        if bias is not None:
            out += bias
        ctx.x_shape, ctx.weight_shape, ctx.stride, ctx.padding = x.shape, weight.shape, stride, padding
        ctx.save_for_backward(cols, weight2)
        return out.reshape(n, out_h, out_w, out_channels).transpose(0, 3, 1, 2)  # (N, O, Ho, Wo)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, Any, Any, None, None]:
        cols, weight2 = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        out_channels, channels, kh, kw = ctx.weight_shape
        n, _, out_h, out_w = grad.shape
        grad2 = grad.transpose(0, 2, 3, 1).reshape(-1, out_channels)  # (N*Ho*Wo, O)
        grad_w = grad_b = grad_x = None
        if need_w:
            grad_w2 = grad2.T @ cols  # (O, N*Ho*Wo) @ (N*Ho*Wo, kH*kW*C) -> (O, kH*kW*C)
            grad_w = grad_w2.reshape(out_channels, kh, kw, channels).transpose(0, 3, 1, 2)
        if need_b:
            grad_b = grad2.sum(axis=0)
        if need_x:
            grad_cols = grad2 @ weight2  # (N*Ho*Wo, O) @ (O, kH*kW*C) -> (N*Ho*Wo, kH*kW*C)
            grad_cols = grad_cols.reshape(n, out_h, out_w, kh, kw, channels)
            grad_x = col2im(grad_cols, ctx.x_shape, ctx.stride, ctx.padding)
        return grad_x, grad_w, grad_b, None, None


def col2im(grad_cols: Any, x_shape: tuple[int, ...], stride: tuple[int, int],
           padding: tuple[int, int]) -> Any:
    """Add window gradients (N, Ho, Wo, kH, kW, C) back onto the input (N, C, H, W).

    Kernel offset (u, v) of window (i, j) read input pixel (s*i + u, s*j + v),
    so offset (u, v) of all windows is one strided slice of the padded input.
    The sum is built channels-last (N, H, W, C), where both sides of each add
    have C contiguous, and handed back as an (N, C, H, W) view.
    """
    xp = get_array_module(grad_cols)
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    _, out_h, out_w, kh, kw, _ = grad_cols.shape
    grad_padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=grad_cols.dtype)
    for u in range(kh):
        for v in range(kw):
            grad_padded[:, u:u + sh * out_h:sh, v:v + sw * out_w:sw, :] += grad_cols[:, :, :, u, v, :]
    return grad_padded[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)


def conv2d_naive(x: Any, weight: Any, bias: Any = None, stride: int = 1, padding: int = 0) -> Any:
    """The defining sum on arrays, one kernel offset at a time (no autograd; for reading and tests)."""
    xp = get_array_module(x)
    (sh, sw), pad = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
    xpad = _pad(x, pad)
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = (xpad.shape[2] - kh) // sh + 1, (xpad.shape[3] - kw) // sw + 1
    out = xp.zeros((x.shape[0], out_channels, out_h, out_w), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            patch = xpad[:, :, u:u + sh * out_h:sh, v:v + sw * out_w:sw]  # (N, C, Ho, Wo)
            out += xp.einsum("nchw,oc->nohw", patch, weight[:, :, u, v])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _check_input(x: Tensor, weight: Tensor, kernel: tuple[int, int], padding: tuple[int, int],
                 who: str) -> None:
    channels = weight.shape[1]
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{who} expected input of shape (N, {channels}, H, W), got {tuple(x.shape)}")
    (kh, kw), (ph, pw) = kernel, padding
    if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
        raise ValueError(
            f"{who} expected input at least as large as the kernel {kernel} after padding "
            f"{padding}, got spatial size {tuple(x.shape[2:])}"
        )


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0) -> Tensor:
    """PyTorch's ``F.conv2d``: x (N, C, H, W), weight (O, C, kH, kW), bias (O,) -> (N, O, Ho, Wo)."""
    if weight.ndim != 4:
        raise ValueError(f"conv2d expected weight of shape (O, C, kH, kW), got {tuple(weight.shape)}")
    stride, padding = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
    _check_input(x, weight, tuple(weight.shape[2:]), padding, "conv2d")
    return Conv2dFunction.apply(x, weight, bias, stride, padding)


class Conv2d(Module):
    """2-D convolution layer; init as PyTorch: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    fan_in = in_channels * kH * kW. (PyTorch's kaiming_uniform_(a=sqrt(5)) gives that bound.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, bias: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Conv2d {name} must be a positive integer, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride, self.padding = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        rng = generator()
        shape = (out_channels, in_channels, *self.kernel_size)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype))
        self.bias = (Parameter(rng.uniform(-bound, bound, (out_channels,)).astype(dtype))
                     if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.weight, self.kernel_size, self.padding,
                     f"Conv2d(in_channels={self.in_channels})")
        return Conv2dFunction.apply(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
