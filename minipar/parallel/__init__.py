"""minipar.parallel: data, pipeline and tensor parallelism, ZeRO and process meshes.

One file per technique; the naive form sits beside the optimised one.
"""

from minipar.parallel.asynchronous import LocalSGD as LocalSGD
from minipar.parallel.asynchronous import ParameterServer as ParameterServer
from minipar.parallel.data_parallel import DataParallel as DataParallel
from minipar.parallel.data_parallel import DistributedDataParallel as DistributedDataParallel
from minipar.parallel.data_parallel import NaiveDataParallel as NaiveDataParallel
from minipar.parallel.data_parallel import allreduce_gradients as allreduce_gradients
from minipar.parallel.data_parallel import broadcast_module as broadcast_module
from minipar.parallel.mesh import ProcessMesh as ProcessMesh
from minipar.parallel.mesh import average_gradients as average_gradients
from minipar.parallel.pipeline import PipelineParallel as PipelineParallel
from minipar.parallel.replicas import ReplicaMismatchError as ReplicaMismatchError
from minipar.parallel.replicas import check_replicas as check_replicas
from minipar.parallel.tensor_parallel import ColumnParallelLinear as ColumnParallelLinear
from minipar.parallel.tensor_parallel import RowParallelLinear as RowParallelLinear
from minipar.parallel.zero import ZeroOptimizer as ZeroOptimizer
