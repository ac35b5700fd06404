"""An emulated cluster on one machine: hosts are network namespaces, links are rate-limited veths.

    from minipar import cluster
    cluster.up(2, gbit=2)                       # node0, node1; 2 Gbit/s each way per host (root)
    done = cluster.run(4, ["python", "-m", "mpi4py", "train.py"])   # 2 ranks on each host
    print(cluster.status().table())             # the bytes each link carried
    cluster.down()

The same from the shell: ``minipar cluster up --hosts 2 --gbit 2``, ``minipar
cluster run -n 4 -- python -m mpi4py train.py``, ``minipar cluster status``,
``minipar cluster down``. ``hosts.py`` builds the hosts and links,
``launch.py`` starts MPI ranks on them.
"""

from minipar.cluster.hosts import (
    BRIDGE,
    BRIDGE_ADDRESS,
    ClusterStatus,
    ClusterUnavailable,
    Host,
    down,
    require_tools,
    status,
    up,
)
from minipar.cluster.launch import LINK_ENV, mpiexec_command, rank_env, run

__all__ = ["BRIDGE", "BRIDGE_ADDRESS", "LINK_ENV", "ClusterStatus", "ClusterUnavailable", "Host", "down",
           "mpiexec_command", "rank_env", "require_tools", "run", "status", "up"]
