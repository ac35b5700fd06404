"""A scale model: what collectives and training steps cost at 8 to 4096 ranks.

A message of n bytes costs ``alpha + n beta`` (latency, inverse bandwidth);
reducing n bytes costs ``n gamma``; a rank computes ``flops`` float32 flop/s.
Every all-reduce call also pays ``o``, its Python overhead (argument checks, chunk
bounds, buffers; fitted separately from alpha), added to each all-reduce below.
With N the array's bytes, p the ranks and L = ceil(log2 p):

    naive all-reduce     2(p-1)(alpha + N beta) + (p-1) N gamma
    tree all-reduce      2L(alpha + N beta) + L N gamma
    recursive doubling   L(alpha + N beta + N gamma)  (+ 2(alpha + N beta) if p is not 2^k)
    ring all-reduce      2(p-1) alpha + 2(p-1)/p N beta + (p-1)/p N gamma
    reduce-scatter       (p-1) alpha + (p-1)/p N beta + (p-1)/p N gamma
    all-gather           (p-1) alpha + (p-1)/p N beta
    broadcast            L(alpha + N beta)

(the algorithms of ``minipar/comm/collectives.py`` and ``ring.py``). Training
steps build on them, see ``ddp_step``, ``pipeline_step`` and
``tensor_parallel_step``. The four constants are measured on this machine by
``measure(comm)``: ranks 0 and 1 exchange messages of a few sizes (both send
and receive at once, as every ring step does), time an in-place add and a
matmul. ``minipar cost fit`` (``calibrate.py``) measures the same and the per-call
overhead, per link kind (one host; with ``--cluster`` also between hosts), medians of
repeats on 2 ranks with a core each, and writes the JSON cache that
``allreduce(algorithm="auto")`` reads (``minipar/comm/auto.py``); ``fit()`` reads it
(running that fit first when there is none).

    minipar cost fit [--cluster]                 # fit, write ~/.cache/minipar/machine.json
    python -m minipar.observe.cost [--refresh]   # fit this machine (cached), print a scaling table
    mpiexec -n 4 python -m mpi4py lessons/13_scale_model.py   # model vs measured, p = 2 and 4

The model assumes one core per rank and a network that is the same between
every pair of ranks; on one machine with more ranks than cores, measured
times grow beyond it (the ranks share cores and memory bandwidth).
"""

from minipar.observe.cost.fit import (
    check_allreduce,
    fit,
    fit_alpha_beta,
    idle_barrier,
    main,
    measure,
    read_machine,
)
from minipar.observe.cost.model import (
    ALLREDUCE,
    CACHE,
    FIT_SIZES,
    RANKS,
    Machine,
    Step,
    allgather,
    broadcast,
    ddp_step,
    naive_allreduce,
    pipeline_step,
    recursive_doubling_allreduce,
    reduce_scatter,
    ring_allreduce,
    scaling_table,
    tensor_parallel_step,
    tree_allreduce,
)

__all__ = [
    "ALLREDUCE", "CACHE", "FIT_SIZES", "RANKS", "Machine", "Step", "allgather", "broadcast",
    "check_allreduce", "ddp_step", "fit", "fit_alpha_beta", "idle_barrier", "main", "measure",
    "naive_allreduce", "pipeline_step", "read_machine", "recursive_doubling_allreduce", "reduce_scatter",
    "ring_allreduce", "scaling_table", "tensor_parallel_step", "tree_allreduce",
]
