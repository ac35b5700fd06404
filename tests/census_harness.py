"""The machinery of the PyTorch census (``test_pytorch_census.py`` holds the table itself).

A census entry is one torch-spelled snippet, run twice: with ``t`` bound to ``torch``
and with ``t`` bound to ``minipar`` (and ``nn``, ``F``, ``optim``, ``lr_scheduler``
bound to the matching submodules). A snippet is an expression, or statements that
leave their result in ``out``. Every run gets fresh inputs, the same float64 values
in both libraries (``make_env``):

    x, y: (3, 4)   v: (4,)   m: (4, 5)   b: (2, 3, 4)   p: (3, 4), positive
    img: (2, 3, 6, 6)   kw: (2, 3, 3, 3)       all requiring grad
    i: (3, 4) int64 in 0..3   k: (3,) int64 class targets   kk: (2, 4) int64 in 0..2
    mask: (3, 4) bool   n: a (3, 4) float64 NumPy array   path: a fresh file name

Results are compared as plain values (``normalize``): a Tensor by shape, dtype and
values; tuples, lists, dicts element by element; dtypes and devices by name. When
torch's result carries a graph, ``sum(out * w)`` (w fixed, not ones) is back-propagated
in both libraries and the gradients of every input and of every module made by ``M``
are compared too.

Tolerances (float64; summation order and libm may differ):
    forward:   |ours - torch| <= 1e-12 + 1e-10 * |torch|
    gradients: |ours - torch| <= 1e-10 + 1e-8  * |torch|
An entry that computes in float32 or float16 states its own (``tol=``): torch rounds a
gradient to the dtype of each tensor it passes, minipar keeps the upstream precision.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import minipar

FORWARD_TOL, GRAD_TOL = (1e-12, 1e-10), (1e-10, 1e-8)
STATUSES = ("✓", "differs", "missing")
FLOAT_INPUTS = {"x": (3, 4), "y": (3, 4), "v": (4,), "m": (4, 5), "b": (2, 3, 4), "p": (3, 4),
                "img": (2, 3, 6, 6), "kw": (2, 3, 3, 3)}


@dataclass(frozen=True)
class Entry:
    """One row of the compatibility table.

    ``status``: "✓" (same values and gradients as torch), "differs" (runs, gives another
    answer, on purpose: ``note`` says why) or "missing" (minipar raises). ``mode``:
    "values", or "shape" for random draws (shape and dtype only). ``grad=False`` skips
    the gradient comparison.
    """

    call: str
    status: str = "✓"
    note: str = ""
    mode: str = "values"
    grad: bool = True
    tol: tuple[float, float] | None = None  # forward and gradients, where float32/16 computes
    section: str = ""


def E(call: str, status: str = "✓", note: str = "", *, mode: str = "values", grad: bool = True,
      tol: tuple[float, float] | None = None) -> Entry:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if mode not in ("values", "shape"):
        raise ValueError(f"mode must be 'values' or 'shape', got {mode!r}")
    return Entry(call, status, note, mode, grad, tol)


# ----- running a snippet ------------------------------------------------------------------------
def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {name: rng.uniform(-2.0, 2.0, shape) for name, shape in FLOAT_INPUTS.items()}
    arrays["p"] = rng.uniform(0.5, 2.0, (3, 4))
    arrays["i"] = rng.integers(0, 4, (3, 4))
    arrays["k"] = np.array([1, 0, 3])
    arrays["kk"] = rng.integers(0, 3, (2, 4))
    arrays["mask"] = rng.uniform(size=(3, 4)) > 0.5
    return arrays


ARRAYS = _arrays()


def make_env(lib: Any, workdir: Path) -> dict[str, Any]:
    """Fresh inputs and helpers for one run of one snippet under ``lib`` (torch or minipar)."""
    import importlib

    name = lib.__name__
    nn = importlib.import_module(f"{name}.nn")
    optim = importlib.import_module(f"{name}.optim")
    schedulers = importlib.import_module(f"{name}.optim.lr_scheduler")
    env: dict[str, Any] = {"t": lib, "nn": nn, "F": importlib.import_module(f"{name}.nn.functional"),
                           "optim": optim, "lr_scheduler": schedulers,
                           "np": np, "path": str(workdir / f"{name}_state.pt"), "modules": []}
    for key, array in ARRAYS.items():
        env[key] = lib.tensor(array.copy(), requires_grad=key in FLOAT_INPUTS)
    env["n"] = ARRAYS["x"].copy()

    def M(module: Any) -> Any:
        """``module`` in float64 with fixed parameter values (the same in both libraries)."""
        module = module.to(lib.float64)
        for index, (_, param) in enumerate(sorted(module.named_parameters(), key=lambda item: item[0])):
            values = np.random.default_rng(100 + index).uniform(-0.5, 0.5, tuple(param.shape))
            with lib.no_grad():
                param.copy_(lib.tensor(values))
        env["modules"].append(module)
        return module

    def steps(make: Any, n: int = 3) -> Any:
        """``n`` optimizer steps on f(w) = sum(w^4 / 4 - w) + (w0 w1) from fixed w; the final w."""
        w = lib.tensor(np.array([0.5, -1.5, 2.0, 0.25]), requires_grad=True)
        opt = make([w])
        for _ in range(n):
            opt.zero_grad()
            loss = (w ** 4 / 4 - w).sum() + w[0] * w[1]
            loss.backward()
            opt.step()
        return w.detach()

    def lrs(make: Any, n: int = 8) -> list[float]:
        """The learning rate of each of ``n`` epochs under the scheduler ``make(opt)``."""
        w = lib.zeros(2, requires_grad=True)
        opt = optim.SGD([w], lr=0.1)
        scheduler = make(opt)
        seen = []
        for _ in range(n):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        return seen

    env.update(M=M, steps=steps, lrs=lrs)
    return env


def run_snippet(call: str, env: dict[str, Any]) -> Any:
    """Evaluate ``call`` as an expression, or execute it and return its ``out``."""
    try:
        code = compile(call, "<census>", "eval")
    except SyntaxError:
        exec(compile(call, "<census>", "exec"), env)  # noqa: S102 (the census table's own code)
        return env["out"]
    return eval(code, env)  # noqa: S307


# ----- comparing results ------------------------------------------------------------------------
def normalize(value: Any) -> Any:
    """A library-free description of a result: ("tensor", array) / ("array", array) / ..."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().numpy().copy())
    if isinstance(value, minipar.Tensor):
        return ("tensor", np.asarray(value.detach().numpy()).copy())
    if isinstance(value, np.ndarray):
        return ("array", value.copy())
    if isinstance(value, torch.dtype):
        return ("dtype", str(value).removeprefix("torch."))
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return ("dtype", np.dtype(value).name)
    if isinstance(value, (torch.device, minipar.device)):
        return ("device", str(value))
    if isinstance(value, dict):
        return ("dict", {key: normalize(item) for key, item in value.items()})
    if isinstance(value, (tuple, list)):
        return ("seq", [normalize(item) for item in value])
    if isinstance(value, (bool, int, float, str, type(None))):
        return ("py", value)
    if isinstance(value, np.generic):
        return ("py", value.item())
    return ("object", type(value).__name__)


def mismatch(ours: Any, theirs: Any, tol: tuple[float, float], mode: str, where: str = "out") -> str | None:
    """Why two normalized results differ, or None when they agree."""
    if ours[0] != theirs[0]:
        return f"{where}: {ours[0]} where torch gives {theirs[0]}"
    kind = theirs[0]
    if kind in ("tensor", "array"):
        a, b = ours[1], theirs[1]
        if a.shape != b.shape:
            return f"{where}: shape {a.shape} where torch gives {b.shape}"
        if a.dtype != b.dtype:
            return f"{where}: dtype {a.dtype} where torch gives {b.dtype}"
        if mode == "shape" or np.array_equal(a, b, equal_nan=True):
            return None
        if a.dtype.kind in "fc" and np.allclose(a, b, atol=tol[0], rtol=tol[1], equal_nan=True):
            return None
        return f"{where}: values differ by up to {np.max(np.abs(a.astype(float) - b.astype(float))):.3g}"
    if kind == "seq":
        if len(ours[1]) != len(theirs[1]):
            return f"{where}: {len(ours[1])} items where torch gives {len(theirs[1])}"
        for index, (a, b) in enumerate(zip(ours[1], theirs[1])):
            why = mismatch(a, b, tol, mode, f"{where}[{index}]")
            if why:
                return why
        return None
    if kind == "dict":
        if list(ours[1]) != list(theirs[1]):
            return f"{where}: keys {list(ours[1])} where torch gives {list(theirs[1])}"
        for key in theirs[1]:
            why = mismatch(ours[1][key], theirs[1][key], tol, mode, f"{where}[{key!r}]")
            if why:
                return why
        return None
    a, b = ours[1], theirs[1]
    if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= tol[0] + tol[1] * abs(b):
        return None
    if type(a) is not type(b) or a != b:
        return f"{where}: {a!r} where torch gives {b!r}"
    return None


def _tensors(value: Any) -> list[Any]:
    if isinstance(value, (torch.Tensor, minipar.Tensor)):
        return [value]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def _backpropagate(lib: Any, outputs: list[Any], carries: list[bool]) -> None:
    total = None
    for position, (output, carry) in enumerate(zip(outputs, carries)):
        if carry:
            weight = np.random.default_rng(position).uniform(0.5, 1.5, tuple(output.shape))
            term = (output * lib.tensor(weight)).sum()
            total = term if total is None else total + term
    total.backward()


def _gradients(env: dict[str, Any]) -> dict[str, Any]:
    grads = {name: env[name].grad for name in FLOAT_INPUTS}
    for index, module in enumerate(env["modules"]):
        for name, param in module.named_parameters():
            grads[f"M#{index}.{name}"] = param.grad
    return grads


def compare_with_torch(entry: Entry, workdir: Path) -> str | None:
    """Run ``entry`` under both libraries: None if minipar agrees, else why not.

    Exceptions from torch propagate (every snippet must be valid PyTorch); an exception
    from minipar is returned as "raises Type: message".
    """
    torch_env = make_env(torch, workdir)
    theirs = run_snippet(entry.call, torch_env)
    ours_env: dict[str, Any] = {}
    try:
        ours_env = make_env(minipar, workdir)
        ours = run_snippet(entry.call, ours_env)
        forward_tol, grad_tol = (entry.tol, entry.tol) if entry.tol else (FORWARD_TOL, GRAD_TOL)
        why = mismatch(normalize(ours), normalize(theirs), forward_tol, entry.mode)
        if why or not entry.grad:
            return why
        torch_outputs, our_outputs = _tensors(theirs), _tensors(ours)
        carries = [o.requires_grad and o.grad_fn is not None and o.is_floating_point() for o in torch_outputs]
        if not any(carries):
            return None
        _backpropagate(torch, torch_outputs, carries)
        _backpropagate(minipar, our_outputs, carries)
        torch_grads, our_grads = _gradients(torch_env), _gradients(ours_env)
        for name, grad in torch_grads.items():
            if grad is None:
                continue
            if our_grads.get(name) is None:
                return f"grad of {name}: None where torch has one"
            why = mismatch(normalize(our_grads[name]), normalize(grad), grad_tol, "values", f"grad of {name}")
            if why:
                return why
        return None
    except Exception as error:  # noqa: BLE001 (any failure of minipar is the census's finding)
        return f"raises {type(error).__name__}: {error}"


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="census-"))


# ----- the document -----------------------------------------------------------------------------
def markdown(sections: dict[str, list[Entry]]) -> str:
    """``docs/pytorch_compat.md``: one table per section, from the census entries."""
    entries = [entry for group in sections.values() for entry in group]
    counts = {status: sum(entry.status == status for entry in entries) for status in STATUSES}
    lines = [
        "# PyTorch compatibility census",
        "",
        "Generated by `tests/test_pytorch_census.py` from its table; do not edit by hand. After",
        "changing the table run `MINIPAR_WRITE_COMPAT=1 pytest -q tests/test_pytorch_census.py`.",
        "",
        "Each call is run with `t` bound to `torch` and to `minipar` (`import minipar as torch`),",
        "on the same float64 inputs (`x, y`: 3x4, `v`: 4, `m`: 4x5, `b`: 2x3x4, `p`: 3x4 positive,",
        "`img`: 2x3x6x6, `kw`: 2x3x3x3, all requiring grad; `i`: 3x4 int64, `k`: 3 class targets,",
        "`kk`: 2x4 targets, `mask`: 3x4 bool, `n`: a NumPy array). `M(module)` gives a module",
        "float64 parameters with fixed values. ✓ means the same values, dtype and shape (random",
        "draws: shape and dtype) and, where the result carries a graph, the same gradients of",
        "every input and parameter (forward to 1e-12 + 1e-10·|torch|, gradients to",
        "1e-10 + 1e-8·|torch|). *differs* runs but answers differently, for the reason given;",
        "*missing* raises in minipar (the test checks that it still does).",
        "",
        f"{len(entries)} calls: {counts['✓']} ✓, {counts['differs']} differ, {counts['missing']} missing.",
    ]
    for title, group in sections.items():
        lines += ["", f"## {title}", "", "| call | status | note |", "| --- | --- | --- |"]
        for entry in group:
            call = entry.call.replace("|", "\\|").replace("\n", " ")
            note = entry.note.replace("|", "\\|")
            lines.append(f"| `{call}` | {entry.status} | {note} |")
    return "\n".join(lines) + "\n"
