"""minipar: a small, readable parallel-training engine.

A NumPy/CuPy autograd library (``Tensor``, ``nn``, ``optim``) plus, written
from MPI point-to-point messages, the mechanisms that big frameworks hide
(``comm``, ``parallel``, ``checkpoint``, ``amp``). See README.md for the map.
"""

import importlib as _importlib

import numpy as _np

from minipar._aliases import alias
from minipar.autograd import Function, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from minipar.backend import device
from minipar.creation import (
    arange,
    as_tensor,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from minipar.ops import Size, cat, stack
from minipar.ops.functions import (
    abs,
    all,
    allclose,
    amax,
    amin,
    any,
    argmax,
    argmin,
    bmm,
    chunk,
    clamp,
    clip,
    einsum,
    eq,
    exp,
    flatten,
    ge,
    gt,
    is_tensor,
    le,
    log,
    log_softmax,
    lt,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    ne,
    numel,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    sqrt,
    squeeze,
    std,
    sum,
    tanh,
    transpose,
    tril,
    triu,
    unsqueeze,
    var,
    where,
)
from minipar.random import get_rng_state, manual_seed, set_rng_state
from minipar.snapshot import load, save
from minipar.tensor import Tensor

__version__ = "0.1.0"

# The first round's paths, and PyTorch's: aliases of the module that holds the code.
for _old, _new in {
    "minipar.trace": "minipar.observe.trace",
    "minipar.plot": "minipar.observe.plot",
    "minipar.memory": "minipar.observe.memory",
    "minipar.cost": "minipar.observe.cost",
    "minipar.data": "minipar.utils.data",
    "minipar.fault": "minipar.snapshot.fault",
    "minipar.elastic": "minipar.snapshot.elastic",
    "minipar.utils.checkpoint": "minipar.checkpoint",
    "minipar.parallel.data": "minipar.parallel.data_parallel",
    "minipar.parallel.buckets": "minipar.parallel.data_parallel.buckets",
    "minipar.parallel.tensor": "minipar.parallel.tensor_parallel",
    "minipar.parallel.pipeline_schedules": "minipar.parallel.pipeline.schedules",
    "minipar.parallel.pipeline_comm": "minipar.parallel.pipeline.stage_comm",
    "minipar.parallel.snapshot": "minipar.snapshot.sharded",
    "minipar.profiler": "minipar.observe.profiler",
    "minipar.nn.parallel": "minipar.parallel.data_parallel",
    "minipar.nn.utils": "minipar.nn.clip_grad",
    "minipar.bottleneck": "minipar.observe.bottleneck",
}.items():
    alias(_old, _new)
del _old, _new

# PyTorch's dtype names; the values are NumPy dtypes (what ``tensor.dtype`` gives).
float32 = float = _np.dtype("float32")  # noqa: A001 (PyTorch's names)
float64 = double = _np.dtype("float64")
float16 = half = _np.dtype("float16")
int64 = long = _np.dtype("int64")
int32 = int = _np.dtype("int32")  # noqa: A001
int16, int8, uint8 = _np.dtype("int16"), _np.dtype("int8"), _np.dtype("uint8")
bool = _np.dtype("bool")  # noqa: A001
complex64, complex128 = _np.dtype("complex64"), _np.dtype("complex128")

# What PyTorch has and minipar leaves out on purpose: asking for it says so by name.
NOT_IMPLEMENTED = {
    "compile": "it runs eagerly, one NumPy/CuPy call per operation",
    "jit": "it runs eagerly (no TorchScript); keep the model as Python",
    "fx": "it records no symbolic graph; the autograd graph is built as the code runs",
    "export": "it runs eagerly and exports no program",
    "onnx": "it has no model export; save a state dict (minipar.save) instead",
    "backends": "it has no backend switches (cudnn, mps, ...): NumPy on the CPU, CuPy on a GPU",
    "mps": "its GPUs are CUDA GPUs through CuPy",
    "xpu": "its GPUs are CUDA GPUs through CuPy",
    "sparse": "tensors are dense NumPy/CuPy arrays",
    "quantization": "it computes in float16/32/64 only",
    "ao": "it computes in float16/32/64 only",
    "hub": "it downloads no models",
    "bfloat16": "NumPy has no bfloat16 dtype; use float16 (minipar.amp) or float32",
    "set_default_dtype": "the default floating dtype is float32, as PyTorch's default",
    "set_default_device": "tensors are made on the CPU unless device= says otherwise",
}


def __getattr__(name: str) -> object:
    """``minipar.nn``, ``minipar.optim``, ... imported on first use, so ``import minipar`` stays cheap.

    Any submodule works (``minipar.distributed`` as soon as its file exists); a PyTorch name
    minipar leaves out raises an AttributeError that says so.
    """
    if not name.startswith("_"):
        try:
            return _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise  # the submodule exists, but something it imports is missing
        if name in NOT_IMPLEMENTED:
            raise AttributeError(f"minipar does not implement torch.{name}; {NOT_IMPLEMENTED[name]}")
    raise AttributeError(f"module 'minipar' has no attribute {name!r}")


__all__ = [
    "Function", "Size", "Tensor", "abs", "all", "allclose", "amax", "amin", "any", "arange", "argmax",
    "argmin", "as_tensor", "bmm", "cat", "chunk", "clamp", "clip", "device", "einsum", "empty",
    "enable_grad", "eq", "exp", "eye", "flatten", "from_numpy", "full", "full_like", "ge",
    "get_rng_state", "gt", "is_grad_enabled", "is_tensor", "le", "linspace", "load", "log",
    "log_softmax", "lt", "manual_seed", "masked_fill", "matmul", "max", "maximum", "mean", "min",
    "minimum", "ne", "no_grad", "numel", "ones", "ones_like", "permute", "pow", "rand", "rand_like",
    "randint", "randn", "randn_like", "randperm", "relu", "reshape", "save", "set_grad_enabled",
    "set_rng_state", "sigmoid", "softmax", "split", "sqrt", "squeeze", "stack", "std", "sum", "tanh",
    "tensor", "transpose", "tril", "triu", "unsqueeze", "var", "where", "zeros", "zeros_like",
]
