"""Asynchronous and communication-light training, built from point-to-point messages.

``parameter_server.py``: workers pull parameters and push gradients to server ranks that
apply them on arrival (asynchronous SGD), with a staleness bound (stale-synchronous,
bulk-synchronous at 0). ``local_sgd.py``: replicas step alone and average every H steps
(local SGD), or feed the average change to an outer optimizer (DiLoCo).
"""

from minipar.parallel.asynchronous.local_sgd import LocalSGD
from minipar.parallel.asynchronous.parameter_server import ParameterServer

__all__ = ["LocalSGD", "ParameterServer"]
