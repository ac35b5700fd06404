"""``SyncBatchNorm``: batch normalisation whose statistics cover every rank's batch.

With data parallelism each rank sees N/p samples; plain BatchNorm would
normalise by statistics of that slice only. SyncBatchNorm all-reduces the sums
behind the statistics, so every rank normalises by the whole batch's:

    forward:  all-reduce [sum x, sum x^2, count]  (2C + 1 numbers)  -> mean, var
    backward: all-reduce [sum g_hat, sum g_hat * x_hat]  (2C numbers)  -> dL/dx

(the formulas are in minipar/nn/batchnorm.py, which this reuses with its
``allreduce`` hook). The result equals BatchNorm on the concatenated batch:
outputs, input gradients, running statistics; the weight and bias gradients
are each rank's share, summed over ranks (DDP's all-reduce does that).

    bn = nn.SyncBatchNorm(16)                      # over minipar.comm.world()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=comm)

Launch: ``mpiexec -n 4 python train.py`` or, in one process, ``comm.run_local(fn, 4)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minipar.comm import Communicator, allreduce, world
from minipar.nn.batchnorm import SumAllReduce, _BatchNorm
from minipar.nn.module import Module
from minipar.tensor import Tensor


class SyncBatchNorm(_BatchNorm):
    """``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, process_group=None)``; ``process_group`` is a minipar
    ``Communicator`` (default: ``minipar.comm.world()``, looked up at the first forward)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group: Any = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        if process_group is not None and not isinstance(process_group, Communicator):
            raise TypeError(f"SyncBatchNorm process_group must be a minipar Communicator or None, "
                            f"got {type(process_group).__name__}")
        self.process_group = process_group

    def _check_input(self, x: Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"SyncBatchNorm expected input of shape (N, C, ...), got {tuple(x.shape)}")

    def _allreduce(self) -> SumAllReduce | None:
        comm = self.process_group if self.process_group is not None else world()
        if comm.size == 1:
            return None
        return lambda sums: allreduce(comm, sums, op="sum")

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """Replace every BatchNorm*d in ``module`` (or ``module`` itself) by a SyncBatchNorm with
        the same settings, parameters and running statistics (the arrays are shared)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)
            if module.affine:
                converted.weight, converted.bias = module.weight, module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                converted.register_buffer(name, module._buffers[name])
            converted.train(module.training)
            return converted
        for name, child in list(module.named_children()):
            replacement = cls.convert_sync_batchnorm(child, process_group)
            if replacement is not child:
                setattr(module, name, replacement)  # keeps the child's place (Module.__setattr__)
        return module
