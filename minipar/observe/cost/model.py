"""The alpha-beta-gamma model: formulas for collectives and training steps (no measuring).

See ``minipar.observe.cost`` for the whole model's description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minipar.comm.cost_cache import DEFAULT_CACHE

FIT_SIZES = (8, 4096, 2**18, 2**21, 2**24)  # bytes per exchange: latency-bound to bandwidth-bound
RANKS = (8, 16, 64, 256, 1024, 4096)
CACHE = DEFAULT_CACHE  # where `minipar cost fit` writes (MINIPAR_COST_CACHE overrides it)


@dataclass(frozen=True)
class Machine:
    """The fitted constants: seconds per message, per byte sent, per byte reduced; flop/s;
    and ``overhead``, seconds of Python per all-reduce call (checks, chunk bounds, buffers),
    paid once per call whatever its size: the term a message-only model misses for small arrays.
    """

    alpha: float
    beta: float
    gamma: float
    flops: float
    overhead: float = 0.0

    def __str__(self) -> str:
        return (f"alpha {self.alpha * 1e6:.2f} us/message, beta {self.beta * 1e12:.1f} ps/byte "
                f"({1e-9 / self.beta:.2f} GB/s), gamma {self.gamma * 1e12:.1f} ps/byte "
                f"({1e-9 / self.gamma:.2f} GB/s), compute {self.flops / 1e9:.1f} GFLOP/s, "
                f"overhead {self.overhead * 1e6:.1f} us/call")


def _log2(p: int) -> int:
    if p < 1:
        raise ValueError(f"p must be a positive number of ranks, got {p}")
    return math.ceil(math.log2(p))


# ----- collectives: seconds for N bytes on p ranks ---------------------------------------------
def _call(p: int, m: Machine) -> float:
    """The per-call overhead, paid by every all-reduce with something to do (p > 1)."""
    return m.overhead if p > 1 else 0.0


def naive_allreduce(p: int, nbytes: float, m: Machine) -> float:
    return _call(p, m) + 2 * (p - 1) * (m.alpha + nbytes * m.beta) + (p - 1) * nbytes * m.gamma


def tree_allreduce(p: int, nbytes: float, m: Machine) -> float:
    L = _log2(p)
    return _call(p, m) + 2 * L * (m.alpha + nbytes * m.beta) + L * nbytes * m.gamma


def recursive_doubling_allreduce(p: int, nbytes: float, m: Machine) -> float:
    _log2(p)
    L = p.bit_length() - 1  # floor(log2 p) rounds among the largest 2^k ranks
    fold = 0.0 if p & (p - 1) == 0 else 2 * (m.alpha + nbytes * m.beta)
    return _call(p, m) + L * (m.alpha + nbytes * (m.beta + m.gamma)) + fold


def ring_allreduce(p: int, nbytes: float, m: Machine) -> float:
    _log2(p)
    return (_call(p, m) + 2 * (p - 1) * m.alpha + 2 * (p - 1) / p * nbytes * m.beta
            + (p - 1) / p * nbytes * m.gamma)


def reduce_scatter(p: int, nbytes: float, m: Machine) -> float:
    _log2(p)
    return (p - 1) * m.alpha + (p - 1) / p * nbytes * (m.beta + m.gamma)


def allgather(p: int, nbytes: float, m: Machine) -> float:
    _log2(p)
    return (p - 1) * m.alpha + (p - 1) / p * nbytes * m.beta


def broadcast(p: int, nbytes: float, m: Machine) -> float:
    return _log2(p) * (m.alpha + nbytes * m.beta)


ALLREDUCE = {"naive": naive_allreduce, "tree": tree_allreduce,
             "recursive_doubling": recursive_doubling_allreduce, "ring": ring_allreduce}


# ----- training steps ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """Predicted seconds of one step: total, its compute and communication parts, efficiency.

    ``efficiency`` = (one rank's time for the same work) / (p x step time): 1 is perfect.
    """

    time: float
    compute: float
    comm: float
    efficiency: float
    bubble: float = 0.0  # pipeline: fraction of the step a stage waits


def ddp_step(p: int, params: int, batch_per_rank: int, m: Machine, bytes_per_param: int = 4,
             bucket_bytes: float = 25 * 2**20, overlap: bool = True) -> Step:
    """Data parallel, weak scaling: every rank runs the whole model on its own batch.

    compute = 6 params batch / flops (forward 2, backward 4 flops per parameter per sample);
    k = ceil(N / bucket) buckets of the N gradient bytes, each ring-all-reduced: comm = k ring(N/k).
    Without overlap: step = forward + backward + comm. With overlap, bucket i can start
    once backward has produced it (at i/k of backward), one bucket at a time:
    step = forward + max(backward/k + comm, backward + comm/k).
    """
    compute = 6 * params * batch_per_rank / m.flops
    forward, backward = compute / 3, 2 * compute / 3
    nbytes = params * bytes_per_param
    buckets = max(1, math.ceil(nbytes / bucket_bytes))
    comm = buckets * ring_allreduce(p, nbytes / buckets, m) if p > 1 else 0.0
    if overlap:
        total = forward + max(backward / buckets + comm, backward + comm / buckets)
    else:
        total = compute + comm
    return Step(total, compute, comm, compute / total)


def pipeline_step(p: int, params: int, hidden: int, batch: int, microbatches: int, m: Machine,
                  bytes_per_value: int = 4) -> Step:
    """Pipeline (GPipe or 1F1B: same bubble), p stages of params/p each, batch in m microbatches.

    Per microbatch and stage: forward t_f = 2 (params/p) (batch/m) / flops, backward 2 t_f,
    and two boundary messages (activation forward, its gradient back) of (batch/m) hidden values.
    step = (m + p - 1)(t_f + t_b + 2 message); bubble fraction (p - 1)/(m + p - 1).
    """
    if microbatches < 1 or batch % microbatches:
        raise ValueError(f"batch {batch} must split into microbatches={microbatches} equal parts")
    micro = batch // microbatches
    t_forward = 2 * params / p * micro / m.flops
    message = m.alpha + micro * hidden * bytes_per_value * m.beta if p > 1 else 0.0
    slots = microbatches + p - 1
    total = slots * (3 * t_forward + 2 * message)
    single = 6 * params * batch / m.flops
    return Step(total, slots * 3 * t_forward, slots * 2 * message, single / (p * total),
                bubble=(p - 1) / slots)


def tensor_parallel_step(p: int, hidden: int, layers: int, tokens: int, m: Machine,
                         bytes_per_value: int = 4) -> Step:
    """Megatron MLP blocks (hidden -> 4 hidden -> hidden) split over p ranks.

    Per block: 8 hidden^2 weights, forward flops 16 tokens hidden^2 / p per rank, backward
    twice that; one all-reduce of tokens x hidden values forward (g) and one backward (f).
    step = layers (48 tokens hidden^2 / (p flops) + 2 ring(tokens hidden bytes)).
    """
    compute = layers * 48 * tokens * hidden**2 / (p * m.flops)
    nbytes = tokens * hidden * bytes_per_value
    comm = layers * 2 * ring_allreduce(p, nbytes, m) if p > 1 else 0.0
    return Step(compute + comm, compute, comm, compute / (compute + comm))  # single = p compute


def scaling_table(m: Machine, ranks: tuple[int, ...] = RANKS) -> list[dict[str, float]]:
    """Predicted step time and efficiency at each p for three example workloads.

    DDP: 100 M parameters, 8 samples per rank. Pipeline: the same model, 4p microbatches
    of 8 samples (hidden 4096). Tensor parallel: 8 blocks of hidden 2048, 1024 tokens.
    """
    rows = []
    for p in ranks:
        ddp = ddp_step(p, 100_000_000, 8, m)
        pipe = pipeline_step(p, 100_000_000, 4096, 32 * p, 4 * p, m)
        tp = tensor_parallel_step(p, 2048, 8, 1024, m)
        rows.append({"p": p, "ddp_time": ddp.time, "ddp_eff": ddp.efficiency,
                     "pipe_time": pipe.time, "pipe_eff": pipe.efficiency, "pipe_bubble": pipe.bubble,
                     "tp_time": tp.time, "tp_eff": tp.efficiency})
    return rows
