"""``nn.init``: fill a weight in place, PyTorch's names and formulas, minipar's generator.

Fans of a weight of shape (out, in, k1, k2, ...): receptive field r = k1 * k2 * ...,
fan_in = in * r, fan_out = out * r (a Linear weight (out, in) has r = 1).

    xavier_uniform_:  U(-a, a),   a = gain * sqrt(6 / (fan_in + fan_out))
    xavier_normal_:   N(0, s^2),  s = gain * sqrt(2 / (fan_in + fan_out))
    kaiming_uniform_: U(-b, b),   b = gain * sqrt(3 / fan),  gain = calculate_gain(nonlinearity, a)
    kaiming_normal_:  N(0, s^2),  s = gain / sqrt(fan)        (fan = fan_in or fan_out, by mode)
    trunc_normal_:    N(mean, std^2) restricted to [a, b] (redrawn until inside)

Each function writes into ``tensor.array`` (under no gradient recording: it is an
initialisation, not an operation) and returns the tensor. The draws come from
``minipar.random.generator()`` (or the ``generator=`` given), so ``minipar.manual_seed``
repeats them; they are PyTorch's distributions, not PyTorch's random stream.
"""

from __future__ import annotations

import math
from typing import Any

from minipar.random import generator as default_generator
from minipar.tensor import Tensor

_LINEAR_LIKE = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: Any = None) -> float:
    """The gain that keeps activations' variance steady through ``nonlinearity`` (PyTorch's table)."""
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: in * r and out * r, r the receptive field (see above)."""
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions, got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor: Tensor, values: Any) -> Tensor:
    """Write host-drawn ``values`` into the tensor's array (any device), keeping its dtype."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init functions fill a Tensor in place, got {type(tensor).__name__}")
    array = tensor.array
    if hasattr(array, "get") and not hasattr(values, "get"):  # a CuPy array: copy the draw over
        import cupy  # only reached with CuPy arrays
        values = cupy.asarray(values)
    array[...] = values
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
    """U(a, b)."""
    return _fill(tensor, (generator or default_generator()).uniform(a, b, tuple(tensor.shape)))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
    """N(mean, std^2)."""
    return _fill(tensor, (generator or default_generator()).normal(mean, std, tuple(tensor.shape)))


def constant_(tensor: Tensor, val: float) -> Tensor:
    return _fill(tensor, val)


def zeros_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 0)


def ones_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 1)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """Glorot & Bengio (2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """Glorot & Bengio (2010): N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: Any = None) -> Tensor:
    """He et al. (2015): U(-b, b), b = gain * sqrt(3 / fan). (Linear's default init is a = sqrt(5).)"""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: Any = None) -> Tensor:
    """He et al. (2015): N(0, s^2), s = gain / sqrt(fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: Any = None) -> Tensor:
    """N(mean, std^2) conditioned on [a, b]: draw, and redraw the values that fell outside.

    (PyTorch inverts the normal CDF instead; the distribution is the same.)
    """
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    scale = std * math.sqrt(2)
    accepted = 0.5 * (math.erf((b - mean) / scale) - math.erf((a - mean) / scale))  # P(a <= x <= b)
    if accepted < 1e-4:
        raise ValueError(f"trunc_normal_: [a, b] = [{a}, {b}] holds only {accepted:.1e} of "
                         f"N({mean}, {std}^2); "
                         "minipar draws by rejection, which needs a window of at least 1e-4 of the mass")
    rng = generator or default_generator()
    values = rng.normal(mean, std, tuple(tensor.shape))
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = rng.normal(mean, std, int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(tensor, values)
