"""ZeRO: optimizer state sharded over the data-parallel ranks (stage 1 in ``stage1.py``)."""

from minipar.parallel.zero.stage1 import ZeroOptimizer, reshard_state_dicts

__all__ = ["ZeroOptimizer", "reshard_state_dicts"]
