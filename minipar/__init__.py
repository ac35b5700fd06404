"""minipar: a small, readable parallel-training engine.

A NumPy/CuPy autograd library (``Tensor``, ``nn``, ``optim``) plus, written
from MPI point-to-point messages, the mechanisms that big frameworks hide
(``comm``, ``parallel``, ``checkpoint``, ``amp``). See README.md for the map.
"""

from minipar._aliases import alias
from minipar.autograd import Function, enable_grad, is_grad_enabled, no_grad
from minipar.creation import arange, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from minipar.ops import cat, stack
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
    "minipar.bottleneck": "minipar.observe.bottleneck",
}.items():
    alias(_old, _new)
del _old, _new

__all__ = [
    "Function", "Tensor", "arange", "cat", "enable_grad", "get_rng_state", "is_grad_enabled", "load",
    "manual_seed", "no_grad", "ones", "ones_like", "rand", "randn", "save", "set_rng_state", "stack",
    "tensor", "zeros", "zeros_like",
]
