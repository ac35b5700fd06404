"""The emulated 2-host cluster the multi-host tests share (``minipar.cluster``; root only).

    from emulated_cluster import emulated_cluster, requires_cluster   # the fixture and the skip

One session-scoped fixture: hosts come up once (``up`` first tears down a crashed run's
leftovers) and are torn down after the session, whatever happened in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mpirun import HAS_MPI

from minipar import cluster

HOSTS, PER_HOST, GBIT = 2, 2, 2.0


def why_not() -> str | None:
    """Why the cluster cannot be built here (no MPI, not root, a tool missing), or None."""
    if not HAS_MPI:
        return "needs mpi4py and the venv's mpiexec"
    try:
        cluster.require_tools()
    except cluster.ClusterUnavailable as error:
        return str(error)
    return None


requires_cluster = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


@pytest.fixture(scope="session")
def emulated_cluster() -> Iterator[cluster.ClusterStatus]:
    """2 hosts at 2 Gbit/s each way; torn down after the session, whatever happened in it."""
    found = cluster.up(HOSTS, gbit=GBIT)
    try:
        yield found
    finally:
        cluster.down()
