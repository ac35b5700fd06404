"""Pipeline parallelism: schedules as data (``schedules.py``), the activations and gradients
that cross stages as autograd Functions (``stage_comm.py``), and the engine that runs a
schedule on one stage (``engine.py``)."""

from minipar.parallel.pipeline.engine import PipelineParallel, StageStats, balance_by_parameters

__all__ = ["PipelineParallel", "StageStats", "balance_by_parameters"]
