"""minipar.comm: a Communicator (MPI or threads) and collectives built from send/recv.

Arrays in, arrays out; nothing here knows about Tensor.

    from minipar.comm import world, run_local, allreduce

    comm = world()                  # MPI's world under mpiexec, size 1 otherwise
    allreduce(comm, grads, op="mean", algorithm="ring")

    run_local(lambda comm: allreduce(comm, np.ones(3)), 4)   # 4 ranks as threads

Files, in reading order: ``communicator.py`` (the point-to-point interface,
counters), ``errors.py`` (what can go wrong, deadlines), ``thread_backend.py``
(``run_local``), ``mpi_backend.py`` (mpi4py), ``world.py`` (``world()``),
``ring.py`` (ring all-reduce in one pass and in slabs, reduce-scatter, all-gather),
``collectives.py`` (naive, tree, recursive doubling all-reduce, broadcast, gather
to root), ``events.py`` (the message log: the one stream every counted message
passes through), ``safety.py`` (abort hook, timeouts, ``MINIPAR_DEBUG``
fingerprints), ``signature.py`` (every call's signature), ``watchdog.py``
(deadlines, ranks that leave), ``hierarchical.py``, ``host_pipeline.py``,
``shm.py``, ``shm_pipeline.py`` (topology-aware all-reduce), ``shm_arrays.py``
(``shared_empty``: arrays all-reduced where they lie), ``auto.py`` and
``cost_cache.py`` (``algorithm="auto"`` from the fitted cost model).

Imports run one way: events <- communicator <- safety <- _common <- ring <-
collectives; nothing here imports ``minipar.observe`` (the trace reads the
stream through ``events.add_observer``).

Environment variables: ``MINIPAR_COMM_TIMEOUT=seconds`` (deadline of every
blocking wait), ``MINIPAR_DEBUG=1`` (check that all ranks call the same
collective), ``MINIPAR_VERBOSE=1`` (a ``message_log`` prints every message),
``MINIPAR_CUDA_AWARE_MPI=1`` (hand CuPy arrays to MPI directly).
"""

from minipar.comm._common import chunk_bounds
from minipar.comm.collectives import (
    AUTO_SMALL_BYTES,
    allgather,
    allreduce,
    broadcast,
    gather_to_root,
    naive_allreduce,
    recursive_doubling_allreduce,
    reduce_scatter,
    ring_allreduce,
    tree_allreduce,
)
from minipar.comm.communicator import (
    ANY_SOURCE,
    ANY_TAG,
    USER_TAG_LIMIT,
    Communicator,
    Request,
    Status,
    require_communicator,
)
from minipar.comm.errors import CollectiveMismatchError, CommError, CommTimeoutError, DeadlockError
from minipar.comm.events import CollectiveCall, Message, add_observer, message_log, remove_observer
from minipar.comm.mpi_backend import MPICommunicator
from minipar.comm.ring import ring_schedule
from minipar.comm.safety import install_abort_hook, launched_rank_and_size
from minipar.comm.shm_arrays import shared_empty
from minipar.comm.thread_backend import LocalCommunicator, run_local
from minipar.comm.world import world

if (launched_rank_and_size() or (0, 1))[1] > 1:  # started by mpiexec with several ranks
    install_abort_hook()

__all__ = [
    "ANY_SOURCE", "ANY_TAG", "Status",
    "AUTO_SMALL_BYTES", "USER_TAG_LIMIT", "CollectiveCall", "CollectiveMismatchError", "CommError",
    "CommTimeoutError", "Communicator", "DeadlockError", "LocalCommunicator", "MPICommunicator",
    "Message", "Request", "add_observer", "allgather", "allreduce", "broadcast", "chunk_bounds",
    "gather_to_root", "message_log", "naive_allreduce", "remove_observer",
    "recursive_doubling_allreduce", "reduce_scatter",
    "require_communicator", "ring_allreduce", "ring_schedule", "run_local", "shared_empty",
    "tree_allreduce", "world",
]
