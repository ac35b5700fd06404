"""An emulated cluster on one machine: hosts are network namespaces, links are rate-limited veths.

    from minipar import cluster
    cluster.up(2, gbit=2)                       # node0, node1; 2 Gbit/s each way per host (root)
    done = cluster.run(4, ["python", "-m", "mpi4py", "train.py"])   # 2 ranks on each host
    print(cluster.status().table())             # the bytes each link carried
    cluster.down()

The same from the shell: ``minipar cluster up --hosts 2 --gbit 2``, ``minipar
cluster run -n 4 -- python -m mpi4py train.py``, ``minipar cluster status``,
``minipar cluster down``. ``hosts.py`` builds the hosts and links,
``launch.py`` starts MPI ranks on them, ``this_host.py`` is what a rank
learns about its own host (its link's counters, or why one host's timings differ).
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
from minipar.cluster.launch import LINK_ENV, POLITE_WAITS, mpiexec_command, rank_env, run
from minipar.cluster.this_host import HostLink, host_link, one_host_caveats, tcp_framing

__all__ = ["BRIDGE", "BRIDGE_ADDRESS", "LINK_ENV", "POLITE_WAITS", "ClusterStatus", "ClusterUnavailable",
           "Host", "HostLink", "down", "host_link", "mpiexec_command", "one_host_caveats", "rank_env",
           "require_tools", "run", "status", "tcp_framing", "up"]
