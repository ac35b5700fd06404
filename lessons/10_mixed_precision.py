"""Mixed precision: an fp16 gradient that underflows survives loss scaling; GradScaler's scale step by step.

    python lessons/10_mixed_precision.py

1. fp16's range: largest 65504, smallest normal 2^-14 = 6.1e-5, smallest
   subnormal 2^-24 = 6.0e-8. Anything below half of that rounds to 0.
2. A small MLP with fp32 master weights runs its matmuls in fp16 under
   ``amp.autocast()``. Its loss carries a weight of 1e-7 (a small auxiliary loss,
   or gradients late in training), so backward's fp16 gradients fall below
   2^-25 and vanish: the first layer's gradient is exactly zero. Multiplying
   the loss by S = 2^16 first (``GradScaler.scale``) lifts every gradient into
   fp16's range; ``unscale_`` divides by S in fp32 and the gradient matches the
   fp32 one to fp16 precision.
3. Training with ``GradScaler(init_scale=2**24, growth_interval=4)``: S starts
   too large, fp16 gradients overflow to inf, the step is skipped and S halves
   (S <- 0.5 S) until the gradients fit; after 4 clean steps in a row S doubles
   (S <- 2 S) and may overflow again: the scale hovers just below overflow.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

import minipar
from minipar import amp, nn
from minipar.nn import functional as F
from minipar.optim import SGD

BATCH, FEATURES, CLASSES = 32, 16, 4


def make_model() -> nn.Sequential:
    minipar.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, CLASSES))


def make_data(seed: int) -> tuple[minipar.Tensor, np.ndarray]:
    """Points whose class is the quadrant of their first two coordinates: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
    return minipar.tensor(x), (x[:, 0] > 0).astype(np.int64) * 2 + (x[:, 1] > 0).astype(np.int64)


def first_layer_gradient(mode: str, weight: float) -> np.ndarray:
    """d(weight * loss)/d W1 computed in fp32, or in fp16 without or with loss scaling."""
    model = make_model()
    x, y = make_data(0)
    scaler = amp.GradScaler(enabled=mode == "fp16 + scaling")
    with amp.autocast(enabled=mode != "fp32"):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y) * weight  # the loss itself in fp32
    scaler.scale(loss).backward()
    scaler.unscale_(SGD(model.parameters(), lr=0.0))  # divides by S (no-op when disabled)
    return model[0].weight.grad.array


def main() -> None:
    fp16 = np.finfo(np.float16)
    print(f"fp16: largest {float(fp16.max):.0f}, smallest normal {float(fp16.tiny):.1e} = 2^-14, "
          f"smallest subnormal {float(fp16.smallest_subnormal):.1e} = 2^-24")
    print(f"  float16(3e-8) = {float(np.float16(3e-8))}, float16(7e4) = {float(np.float16(7e4))}\n")

    weight = 1e-7
    print(f"first layer's weight gradient, loss weighted by {weight:g} (fp32 master weights, fp16 matmuls):")
    reference = first_layer_gradient("fp32", weight)
    print(f"  {'':<16}{'zero entries':>14}{'max |grad|':>12}{'max relative error':>20}")
    for mode in ("fp32", "fp16", "fp16 + scaling"):
        grad = reference if mode == "fp32" else first_layer_gradient(mode, weight)
        zeros = int(np.count_nonzero(grad == 0))
        error = float(np.abs(grad - reference).max() / np.abs(reference).max())
        print(f"  {mode:<16}{zeros:>8}/{grad.size:<5}{float(np.abs(grad).max()):>12.2e}{error:>20.2e}")
    print(f"  the gradient at the logits is at most weight/N = {weight / BATCH:.1e} < 2^-25 = "
          f"{2.0 ** -25:.1e}: in fp16 it rounds to 0 and nothing flows back; times S = 2^16 it is up to "
          f"{weight / BATCH * 2 ** 16:.1e}, well inside fp16's range\n")

    model = make_model()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = amp.GradScaler(init_scale=2.0 ** 24, growth_interval=4)
    print("training with autocast + GradScaler(init_scale=2**24, growth_interval=4):")
    print(f"  {'step':>4}{'scale S':>12}{'loss':>9}  result")
    rows, fitted, overflowed = [], [], []
    for step in tqdm(range(16), desc="steps", unit="step"):
        x, y = make_data(100 + step)
        with amp.autocast(), np.errstate(over="ignore", invalid="ignore"):  # overflows are expected
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
        before = [p.array.copy() for p in model.parameters()]
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        moved = any(not np.array_equal(b, p.array) for b, p in zip(before, model.parameters()))
        after = scaler.get_scale()
        if after < scale:
            result = "inf/NaN in the gradients: step skipped (weights unchanged), S halves"
            assert not moved
            overflowed.append(scale)
        elif after > scale:
            result = "4th clean step in a row: step taken, S doubles"
        else:
            result = "step taken"
        if after >= scale:
            fitted.append(scale)
        rows.append(f"  {step:>4}{scale:>12.0f}{loss.item():>9.4f}  {result}")
    print("\n".join(rows))
    exponents = [sorted({int(np.log2(s)) for s in scales}) for scales in (fitted, overflowed)]
    print(f"  log2 S that fitted: {exponents[0]}, that overflowed: {exponents[1]}; S hovers at the edge of "
          "overflow, as large as fp16 allows, so that small gradients keep the most bits")


if __name__ == "__main__":
    main()
