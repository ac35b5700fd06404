"""Autograd from the inside: a graph is built, backward walks it, finite differences agree, digits learn.

    python lessons/01_autograd.py

1. A small computation ``loss = sum(tanh(W x + b)^2)`` records a graph: every
   result remembers the Function call that made it and that call's inputs.
2. ``loss.backward()`` visits the nodes from the loss back to the leaves, a node
   only once every consumer has handed it its gradient. Hooks on the tensors
   record the visiting order, printed with each gradient's shape.
3. Gradcheck: central differences (f(p + eps) - f(p - eps)) / 2 eps, float64,
   next to the autograd gradient, and their largest difference; then the same
   check by ``minipar.gradcheck.gradcheck``.
4. A two-layer MLP trained on scikit-learn's 8x8 digits with SGD (momentum 0.9),
   a tqdm bar on the epoch loop, and the held-out accuracy.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

import minipar
from minipar import nn
from minipar.gradcheck import gradcheck
from minipar.nn import functional as F
from minipar.optim import SGD
from minipar.utils.data import DataLoader, TensorDataset, load_digits


def graph_key(tensor: minipar.Tensor) -> int:
    """What identifies a tensor inside the graph: the node that made it, or itself for a leaf."""
    return id(tensor._node) if tensor._node is not None else id(tensor)


def describe(tensor: minipar.Tensor, names: dict[int, str]) -> str:
    """``name = Op(input names)`` for a result, ``name leaf`` for a leaf."""
    name = names[graph_key(tensor)]
    if tensor._node is None:
        return f"{name:<6} leaf {tuple(tensor.shape)}"
    # A node keeps its tensor inputs as edges (anything with ``_node``: a leaf tensor, or a
    # link to the node that made a non-leaf); other arguments (axes, flags) are plain values.
    inputs = ", ".join(names[graph_key(arg)] for arg in tensor._node.inputs if hasattr(arg, "_node"))
    return f"{name:<6} = {type(tensor._node).__name__}({inputs}) -> shape {tuple(tensor.shape)}"


def build_graph(x: minipar.Tensor, W: minipar.Tensor, b: minipar.Tensor) -> dict[str, minipar.Tensor]:
    """loss = sum(tanh(W x + b)^2), keeping every intermediate under a name."""
    h = W @ x  # (2, 3) @ (3,) -> (2,)
    z = h + b
    y = z.tanh()
    sq = y * y
    loss = sq.sum()
    return {"x": x, "W": W, "b": b, "h": h, "z": z, "y": y, "sq": sq, "loss": loss}


def part1_and_2_graph_and_backward() -> None:
    print("== 1. a graph is built ==")
    rng = np.random.default_rng(0)
    x = minipar.tensor(rng.standard_normal(3), requires_grad=True)
    W = minipar.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = minipar.tensor(rng.standard_normal(2), requires_grad=True)
    tensors = build_graph(x, W, b)
    names = {graph_key(t): name for name, t in tensors.items()}
    for tensor in tensors.values():
        print("  " + describe(tensor, names))

    print("\n== 2. backward walks it, from the loss to the leaves ==")
    visits: list[str] = []
    for name, tensor in tensors.items():
        # a hook runs when backward reaches the tensor, with d loss / d tensor
        def record(grad: np.ndarray, name: str = name) -> None:
            visits.append(f"{name:<5} grad shape {tuple(grad.shape)}")
        tensor.register_hook(record)
    tensors["loss"].backward()
    for step, line in enumerate(visits, 1):
        print(f"  visit {step}: {line}")
    print(f"  dloss/dx = {np.array2string(x.grad.array, precision=4)}  (x.grad, shape {x.grad.shape})")


def central_differences(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d array, one element at a time: (f(a + eps e_i) - f(a - eps e_i)) / (2 eps)."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        saved = array[i]
        array[i] = saved + eps
        plus = f()
        array[i] = saved - eps
        minus = f()
        array[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def part3_gradcheck() -> None:
    print("\n== 3. gradcheck: central differences vs autograd (float64) ==")
    rng = np.random.default_rng(1)
    x = minipar.tensor(rng.standard_normal(3), requires_grad=True)
    W = minipar.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = minipar.tensor(rng.standard_normal(2), requires_grad=True)
    build_graph(x, W, b)["loss"].backward()

    def loss_value() -> float:
        with minipar.no_grad():
            return build_graph(x, W, b)["loss"].item()

    worst = 0.0
    for name, tensor in (("x", x), ("W", W), ("b", b)):
        numeric = central_differences(loss_value, tensor.array)
        difference = float(np.abs(numeric - tensor.grad.array).max())
        worst = max(worst, difference)
        print(f"  d loss/d {name}  autograd    {np.array2string(tensor.grad.array.ravel(), precision=6)}")
        print(f"  {'':<10}  differences {np.array2string(numeric.ravel(), precision=6)}")
    print(f"  max |autograd - central differences| = {worst:.2e}  (eps 1e-6: expect ~1e-9 or less)")
    # The library's version of the same check (random projection of the output, then per element):
    passed = gradcheck(lambda x, W, b: build_graph(x, W, b)["loss"], [x, W, b])
    print(f"  minipar.gradcheck.gradcheck(loss, [x, W, b]) -> {passed}")


def part4_train_digits(epochs: int = 20, seed: int = 0) -> float:
    print("\n== 4. an MLP learns the 8x8 digits ==")
    minipar.manual_seed(seed)  # weights and shuffling: the same run every time
    digits = load_digits()
    print(f"  {len(digits.y_train)} training and {len(digits.y_test)} held-out digits, 64 pixels each",
          flush=True)  # before tqdm writes its bar to stderr
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(digits.x_train, digits.y_train), batch_size=32, shuffle=True)
    x_test = minipar.tensor(digits.x_test)
    bar = tqdm(range(epochs), desc="epochs", unit="epoch")
    for _ in bar:
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        with minipar.no_grad():
            accuracy = float((model(x_test).array.argmax(axis=1) == digits.y_test).mean())
        bar.set_postfix(loss=f"{total / len(digits.y_train):.4f}", test_acc=f"{accuracy:.3f}")
    bar.close()
    correct = int(round(accuracy * len(digits.y_test)))
    print(f"  held-out accuracy: {100 * accuracy:.1f}% ({correct}/{len(digits.y_test)} test digits)")
    return accuracy


def main() -> None:
    part1_and_2_graph_and_backward()
    part3_gradcheck()
    part4_train_digits()


if __name__ == "__main__":
    main()
