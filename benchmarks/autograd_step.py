"""One training step of an MLP: minipar vs PyTorch CPU vs hand-written NumPy; and autograd overhead.

    OMP_NUM_THREADS=1 python benchmarks/autograd_step.py [--reps 300]

Case 1, the MLP step: forward, cross-entropy, backward and a plain SGD update of
an MLP 784-512-512-10 on a batch of 128, float32, one BLAS thread. The three
contenders run the same math on the same weights (checked before timing): the
hand-written NumPy step is what minipar should cost with no framework at all,
so ``minipar / numpy`` is the price of autograd (target <= 1.15x) and
``minipar / pytorch`` how it compares with PyTorch's C++ engine (target <= 1.0x).

Case 2, the small-op chain: 200 elementwise ops on 32x32 float32 (cycling
``y * 1.001``, ``y + b``, ``tanh(y)``, ``y * w``), then ``sum`` and backward.
The arrays are tiny, so the time is the per-op cost of building and walking
the graph: minipar vs PyTorch (target <= 1.0x).

Timing: contenders interleaved in a random order each repetition, after a
warm-up, medians reported (the machine is shared; re-run if ``uptime`` shows
another job competing).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS: one thread, as the brief says

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minipar  # noqa: E402
from minipar import nn  # noqa: E402
from minipar.nn import functional as F  # noqa: E402
from minipar.optim import SGD  # noqa: E402

torch.set_num_threads(1)

SIZES = (784, 512, 512, 10)
BATCH, LR = 128, 0.01


# ----- case 1: the MLP step, three ways ------------------------------------------------------------
class NumpyMLP:
    """The MLP written out by hand: forward, backward and SGD with no framework.

    Same math as the others (x W^T + b, ReLU, log-softmax cross-entropy averaged
    over the batch, p -= lr * grad), all float32, with the in-place updates and
    reused buffers a careful NumPy programmer would write.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        self.weights = [w.copy() for w in weights]  # (out, in) each
        self.biases = [b.copy() for b in biases]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        activations = [x]
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = activations[-1] @ weight.T  # (batch, in) @ (in, out) -> (batch, out)
            h += bias
            if layer < len(self.weights) - 1:
                np.maximum(h, 0, out=h)  # ReLU in place: h > 0 is also the mask backward needs
            activations.append(h)
        logits = activations[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(np.log(sum_exp).mean() - shifted[rows, y].mean())
        grad = exp  # d loss / d logits = (softmax - onehot) / batch, built in place
        grad /= sum_exp
        grad[rows, y] -= 1
        grad /= len(y)
        for layer in range(len(self.weights) - 1, -1, -1):
            weight, inputs = self.weights[layer], activations[layer]
            grad_weight = grad.T @ inputs  # (out, batch) @ (batch, in) -> (out, in)
            grad_bias = grad.sum(axis=0)
            if layer > 0:
                grad = grad @ weight  # (batch, out) @ (out, in) -> (batch, in)
                grad *= inputs > 0  # ReLU backward
            grad_weight *= LR
            weight -= grad_weight
            grad_bias *= LR
            self.biases[layer] -= grad_bias
        return loss


def make_minipar_step(weights: list[np.ndarray], biases: list[np.ndarray]) -> tuple[Callable, Callable]:
    layers: list[nn.Module] = []
    for weight, bias in zip(weights, biases):
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.array, linear.bias.array = weight.copy(), bias.copy()
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    optimizer = SGD(model.parameters(), lr=LR)

    def step(x: minipar.Tensor, y: np.ndarray) -> float:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, lambda: [p.array for p in model.parameters()]


def make_torch_step(weights: list[np.ndarray], biases: list[np.ndarray]) -> tuple[Callable, Callable]:
    layers: list[torch.nn.Module] = []
    for weight, bias in zip(weights, biases):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, lambda: [p.detach().numpy() for p in model.parameters()]


# ----- case 2: 200 small elementwise ops --------------------------------------------------------------
def chain(y, b, w, tanh: Callable) -> object:  # minipar or torch tensors alike
    for i in range(200):
        kind = i % 4
        if kind == 0:
            y = y * 1.001
        elif kind == 1:
            y = y + b
        elif kind == 2:
            y = tanh(y)
        else:
            y = y * w
    return y.sum()


def time_interleaved(contenders: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each contender, their calls interleaved in random order."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for _ in range(reps):
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300, help="timed repetitions per contender")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weights, biases = [], []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        biases.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)
    x_minipar, x_torch, y_torch = minipar.tensor(x), torch.from_numpy(x), torch.from_numpy(y)

    # Same math check: one step from the same weights gives the same loss and parameters.
    hand = NumpyMLP(weights, biases)
    minipar_step, minipar_params = make_minipar_step(weights, biases)
    torch_step, torch_params = make_torch_step(weights, biases)
    losses = (minipar_step(x_minipar, y), torch_step(x_torch, y_torch), hand.step(x, y))
    hand_params = [a for pair in zip(hand.weights, hand.biases) for a in pair]
    diff_torch = max(float(np.abs(a - b).max()) for a, b in zip(minipar_params(), torch_params()))
    diff_hand = max(float(np.abs(a - b).max()) for a, b in zip(minipar_params(), hand_params))
    print(f"same math: losses minipar {losses[0]:.6f}, pytorch {losses[1]:.6f}, numpy {losses[2]:.6f}; "
          f"max |param difference| after one step: vs pytorch {diff_torch:.1e}, vs numpy {diff_hand:.1e}")
    assert diff_torch < 1e-5 and diff_hand < 1e-5, "the contenders do not compute the same step"

    mlp = time_interleaved({
        "minipar": lambda: minipar_step(x_minipar, y),
        "pytorch": lambda: torch_step(x_torch, y_torch),
        "numpy": lambda: hand.step(x, y),
    }, reps=args.reps, warmup=20)

    # x ~ N(0, 0.25), b ~ N(0, 0.25), w ~ N(1, 0.25): values stay O(1) through the chain
    small = rng.standard_normal((3, 32, 32)).astype(np.float32) * 0.5
    small[2] += 1
    mp = [minipar.tensor(a, requires_grad=True) for a in small]
    th = [torch.tensor(a, requires_grad=True) for a in small]

    def minipar_chain() -> None:
        chain(mp[0], mp[1], mp[2], minipar.Tensor.tanh).backward()
        for t in mp:
            t.grad = None

    def torch_chain() -> None:
        chain(th[0], th[1], th[2], torch.tanh).backward()
        for t in th:
            t.grad = None

    ops = time_interleaved({"minipar": minipar_chain, "pytorch": torch_chain}, reps=args.reps, warmup=20)

    print(f"\nOne BLAS thread (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads "
          f"{torch.get_num_threads()}), median of {args.reps} interleaved repetitions\n")
    print(f"{'case':<38}{'minipar':>10}{'pytorch':>10}{'numpy':>10}{'mp/pt':>8}{'mp/np':>8}  targets")
    mp_pt, mp_np = mlp["minipar"] / mlp["pytorch"], mlp["minipar"] / mlp["numpy"]
    print(f"{'MLP 784-512-512-10 step, batch 128':<38}" + "".join(f"{t * 1e3:>8.2f}ms" for t in mlp.values())
          + f"{mp_pt:>7.2f}x{mp_np:>7.2f}x  {verdict(mp_pt, 1.0, 'pt')}, {verdict(mp_np, 1.15, 'np')}")
    chain_ratio = ops["minipar"] / ops["pytorch"]
    print(f"{'200 elementwise ops 32x32, fwd+bwd':<38}" + "".join(f"{t * 1e3:>8.2f}ms" for t in ops.values())
          + f"{'-':>10}{chain_ratio:>7.2f}x{'-':>8}  {verdict(chain_ratio, 1.0, 'pt')}")
    per_op = {name: seconds / 201 * 1e6 for name, seconds in ops.items()}  # 200 ops + the sum
    print(f"   per op (forward + backward): minipar {per_op['minipar']:.1f} us, "
          f"pytorch {per_op['pytorch']:.1f} us")


def verdict(ratio: float, target: float, against: str) -> str:
    return f"<={target}x {against} {'met' if ratio <= target else 'MISSED'}"


if __name__ == "__main__":
    main()
