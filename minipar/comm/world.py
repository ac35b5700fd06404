"""``world()``: this process's communicator, whichever way the process was started.

    mpiexec -n 4 python -m mpi4py train.py   # world() is MPI's COMM_WORLD, 4 ranks
    python train.py                          # world() has one rank (MPI's, or a thread's)

Under ``mpiexec`` with several ranks it also arms the two guards of ``safety.py``
and ``watchdog.py``: the abort hook (an exception on any rank ends the job) and
the watchdog thread (deadlines, and ranks that leave while others wait on them).
"""

from __future__ import annotations

import warnings

from minipar.comm import mpi_backend, signature, watchdog
from minipar.comm.communicator import Communicator
from minipar.comm.safety import install_abort_hook, launched_rank_and_size

_world: Communicator | None = None
_watchdog: watchdog.Watchdog | None = None


def world() -> Communicator:
    """This process's communicator: MPI's world under mpiexec, else a size-1 one.

    Tries mpi4py (a plain ``python x.py`` gets a size-1 MPI world); without
    mpi4py, or when MPI cannot start, returns a size-1 thread-backend
    communicator. The same object is returned on every call. Under mpiexec
    with more than one rank it installs the abort hook (see ``safety.py``) and starts
    the watchdog (``watchdog.py``).
    """
    global _world
    if _world is not None:
        return _world
    try:
        MPI = mpi_backend._mpi()
        comm: Communicator = mpi_backend.MPICommunicator(MPI.COMM_WORLD)
        signature.fit_tags(MPI.COMM_WORLD.Get_attr(MPI.TAG_UB))  # collectives' tags (signature.py)
    except ImportError:
        if launched_rank_and_size() not in (None, (0, 1)):
            raise RuntimeError(
                "this process was started by mpiexec with several ranks but mpi4py is not "
                'installed; install it with pip install -e ".[mpi]"'
            ) from None
        from minipar.comm.thread_backend import self_world

        comm = self_world()
    if comm.size > 1:
        install_abort_hook()
        global _watchdog
        _watchdog = watchdog.Watchdog(mpi_backend._MPI)  # deadlines, and ranks that leave (watchdog.py)
        if not getattr(comm, "thread_multiple", True):
            warnings.warn(
                "MPI was initialised without MPI_THREAD_MULTIPLE: do not call minipar.comm "
                "from more than one thread at a time (e.g. DDP's communication thread)",
                RuntimeWarning, stacklevel=2,
            )
    _world = comm
    return comm
