"""Data parallelism: single-process ``DataParallel`` (``dataparallel.py``), the naive
per-parameter sync (``naive.py``) beside bucketed, overlapped DDP (``ddp.py``, its buckets
in ``buckets.py``)."""

from minipar.parallel.data_parallel.dataparallel import DataParallel
from minipar.parallel.data_parallel.ddp import DistributedDataParallel
from minipar.parallel.data_parallel.naive import NaiveDataParallel, allreduce_gradients, broadcast_module

__all__ = ["DataParallel", "DistributedDataParallel", "NaiveDataParallel", "allreduce_gradients",
           "broadcast_module"]
