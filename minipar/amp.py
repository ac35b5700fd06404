"""Mixed precision: fp16 compute with fp32 master weights, and loss scaling.

fp16 halves activation memory and (on GPUs) runs matmuls on tensor cores, but
it holds only about 3.3 decimal digits over [6.0e-8, 65504]: a weight update
``lr * grad`` is often below a weight's rounding step, and a small gradient
rounds to zero. The recipe of Micikevicius et al. (2018) fixes both:

1. **fp32 master weights.** Parameters stay fp32. Inside ``autocast()``,
   ``Linear`` and ``matmul`` cast their operands to fp16 with the
   differentiable ``Cast`` op and compute in fp16; in backward ``Cast`` turns
   the fp16 gradient back into fp32, so ``p.grad`` is fp32 and the optimizer
   updates fp32 weights. Other ops run in their inputs' dtype: cast logits to
   fp32 (``logits.float()``) before the loss, as PyTorch's autocast does for
   softmax and losses.
2. **Loss scaling.** Backward runs on ``loss * S``: every gradient is S times
   larger, lifting small ones out of fp16's underflow zone. ``unscale_``
   divides the fp32 grads by S before the step. If S was too large, some
   gradient overflowed to inf/NaN: that step is skipped and S halves. After
   ``growth_interval`` clean steps in a row S doubles again.

    model = nn.Sequential(...)                     # fp32 parameters
    scaler = amp.GradScaler()
    for x, y in batches:
        with amp.autocast():                       # fp16 matmuls
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)  # loss in fp32
        optimizer.zero_grad()
        scaler.scale(loss).backward()              # grads of loss * S
        scaler.step(optimizer)                     # unscale, skip on inf/NaN
        scaler.update()                            # S *= 0.5 after an overflow, *2 after 2000 clean

``GradScaler`` follows ``torch.amp.GradScaler`` step for step (same defaults,
same float32 arithmetic of the scale, the same misuse checks). With data parallelism the
gradients are all-reduced before ``step``, so every rank finds the same
inf/NaN and skips together; a sharded optimizer would have to all-reduce the
found-inf flag itself. On CPU NumPy has no fp16 BLAS, so fp16 matmuls are slow
there: on CPU this module shows the numerics; the speed is a GPU (CuPy) matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from minipar.autograd.grad_mode import autocast_set, modes
from minipar.backend import get_array_module
from minipar.ops.elementwise import Cast
from minipar.tensor import Tensor

READY, UNSCALED, STEPPED = "ready", "unscaled", "stepped"  # per-optimizer stage within one step


def _caster(dtype: np.dtype) -> Any:
    """A function turning floating tensors (and arrays) of another dtype into ``dtype``."""

    def cast(value: Any) -> Any:
        if isinstance(value, Tensor):
            if value.array.dtype.kind == "f" and value.array.dtype != dtype:
                return Cast.apply(value, dtype)  # differentiable: backward casts the grad back
            return value
        if hasattr(value, "dtype") and value.dtype.kind == "f" and value.dtype != dtype:
            return value.astype(dtype)
        return value

    return cast


@contextmanager
def autocast(dtype: Any = np.float16, enabled: bool = True) -> Iterator[None]:
    """Inside the block, ``Linear``/``F.linear``/``matmul``/``@`` compute in ``dtype``.

    Parameters keep their dtype and receive gradients in it (fp32 master
    weights). Per thread, like ``no_grad``; ``enabled=False`` switches an outer
    autocast off for a block.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"autocast needs a floating dtype such as float16, got {dtype}")
    with autocast_set(_caster(dtype) if enabled else None):
        yield


def is_autocast_enabled() -> bool:
    return modes.autocast is not None


def _params_with_grads(optimizer: Any) -> Iterator[Tensor]:
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(
            f"GradScaler needs an optimizer with param_groups (minipar.optim), got {type(optimizer).__name__}"
        )
    for group in groups:
        for param in group["params"]:
            if param.grad is not None:
                yield param


class GradScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s defaults and rules.

    scale S starts at ``init_scale``; after each ``update()``:
      inf/NaN found in any unscaled gradient -> S = S * backoff_factor, clean run = 0
      otherwise clean run += 1; when it reaches growth_interval -> S = S * growth_factor
      (kept only if finite), clean run = 0
    S is a float32 number and each product is rounded to float32, as in PyTorch.
    """

    def __init__(self, device: str = "cuda", init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        # torch.amp.GradScaler's first argument names the device: the arithmetic is the same on both
        if str(device).partition(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"GradScaler's device must be 'cpu' or 'cuda' (as torch.amp.GradScaler), "
                             f"got {device!r}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler growth_factor must be > 1.0, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler backoff_factor must be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval <= 0:
            raise ValueError(f"GradScaler growth_interval must be a positive int, got {growth_interval!r}")
        self._enabled = enabled
        self._init_scale = float(init_scale)
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = growth_interval
        self._scale: np.float32 | None = None  # set by the first scale(), as PyTorch's lazy init
        self._growth_tracker = 0  # consecutive steps without inf/NaN
        self._optimizer_states: dict[int, dict[str, Any]] = {}

    def _state(self, optimizer: Any) -> dict[str, Any]:
        return self._optimizer_states.setdefault(id(optimizer), {"stage": READY, "found_inf": None})

    def _require_scale(self, method: str) -> np.float32:
        if self._scale is None:
            raise RuntimeError(f"GradScaler.{method}() before any scale(loss): scale the loss first")
        return self._scale

    def scale(self, outputs: Any) -> Any:
        """``outputs * S`` (a Tensor, or a list/tuple of them); unchanged when disabled."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = np.float32(self._init_scale)
        if isinstance(outputs, Tensor):
            return outputs * float(self._scale)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(
            f"GradScaler.scale expects a Tensor or a list/tuple of Tensors, got {type(outputs).__name__}"
        )

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by S in place and note whether any is inf/NaN.

        Call it before clipping gradients; ``step`` then does not unscale again.
        """
        if not self._enabled:
            return
        scale = self._require_scale("unscale_")
        state = self._state(optimizer)
        if state["stage"] == UNSCALED:
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update()."
            )
        if state["stage"] == STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(scale))  # reciprocal in float64, as PyTorch
        found_inf = False
        for param in _params_with_grads(optimizer):
            grad = param.grad.array
            if grad.dtype == np.float16:
                raise ValueError("Attempting to unscale FP16 gradients (keep fp32 master weights).")
            xp = get_array_module(grad)
            if not found_inf and not bool(xp.isfinite(grad).all()):
                found_inf = True
            grad *= inv_scale
        state["found_inf"], state["stage"] = found_inf, UNSCALED

    def step(self, optimizer: Any) -> Any:
        """Unscale (unless done already) and ``optimizer.step()`` -- skipped if any grad is inf/NaN."""
        if not self._enabled:
            return optimizer.step()
        self._require_scale("step")
        state = self._state(optimizer)
        if state["stage"] == STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == READY:
            self.unscale_(optimizer)
        result = None if state["found_inf"] else optimizer.step()
        state["stage"] = STEPPED
        return result

    def update(self, new_scale: Any = None) -> None:
        """Adjust S after this iteration's steps (or set it to ``new_scale``); forget the iteration."""
        if not self._enabled:
            return
        scale = self._require_scale("update")
        if new_scale is not None:
            value = new_scale.array if isinstance(new_scale, Tensor) else new_scale
            if getattr(value, "size", 1) != 1:
                raise ValueError(
                    f"new_scale must be a float or a one-element tensor, got shape {value.shape}"
                )
            self._scale = np.float32(float(value))
        else:
            found = [s["found_inf"] for s in self._optimizer_states.values() if s["found_inf"] is not None]
            if not found:
                raise RuntimeError(
                    "No inf checks were recorded prior to update(): call step(optimizer) first."
                )
            if any(found):
                self._scale = np.float32(float(scale) * self._backoff_factor)
                self._growth_tracker = 0
            else:
                clean = self._growth_tracker + 1
                if clean == self._growth_interval:
                    with np.errstate(over="ignore"):  # an overflow to inf is rejected just below
                        grown = np.float32(float(scale) * self._growth_factor)
                    if np.isfinite(grown):
                        self._scale = grown
                    clean = 0
                self._growth_tracker = clean
        self._optimizer_states = {}

    def get_scale(self) -> float:
        """S as a Python float (``init_scale`` before the first ``scale``; 1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's five entries (empty when disabled); numbers only, so it saves without pickle."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = np.float32(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
