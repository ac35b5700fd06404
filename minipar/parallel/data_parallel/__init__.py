"""Data parallelism: the naive per-parameter sync (``naive.py``) beside bucketed, overlapped DDP
(``ddp.py``, its buckets in ``buckets.py``)."""

from minipar.parallel.data_parallel.ddp import DistributedDataParallel
from minipar.parallel.data_parallel.naive import NaiveDataParallel, allreduce_gradients, broadcast_module

__all__ = ["DistributedDataParallel", "NaiveDataParallel", "allreduce_gradients", "broadcast_module"]
