"""``allreduce(..., algorithm="auto")``: the algorithm the fitted cost model predicts fastest.

    minipar cost fit                 # fit this machine, write the JSON cache (2 ranks, a few s)
    minipar cost fit --cluster       # on the emulated cluster: also the link between hosts

The model (fitted by ``minipar.observe.cost``; read here from its JSON cache file,
never by importing ``observe``): a message of n bytes over a link of kind L costs
``alpha_L + n beta_L``, L = "intra" (both ranks on one host) or "inter" (between
hosts); on a *paced* link (a NIC or a token bucket moves the bytes while the CPU
goes on) the two overlap and it costs ``max(alpha_L, n beta_L)`` (the fit measures
which form this link follows). s messages leaving (or entering) one host at once
share its link: n becomes s n. Reducing n bytes costs ``n gamma``;
and every call pays its Python cost once, ``overhead[algorithm]`` (argument
checks, chunk bounds, scratch buffers: measured, separate from alpha). A step
whose messages all run at once costs its slowest message. With N bytes, p ranks:
(on a paced link the CPU's part overlaps the pacing: see ``predict``)

    ring                o_ring + 2(p-1) K step(N/(pK)) + (p-1)/p N gamma   K = slabs of 2 MiB
    recursive_doubling  o_rd + L (step(N) + N gamma)  (+ a fold in and out if p is not 2^L)
    hierarchical        o_h + 2(k-1) step_host(N/k) + (k-1)/k N gamma     k ranks on each host,
                          + 2(H-1) step_cross(N/(kH)) + (H-1)/H N/k gamma  H hosts

On one host with K = 1 these are ``minipar/observe/cost/model.py``'s formulas plus
the overhead (a test holds them together). "auto" picks the smallest prediction
among ring, recursive doubling and (when the ranks span several hosts, the same
number on each) hierarchical. Hosts come from ``comm.host_name()``
(``MPI.Get_processor_name()``).

Every rank must pick the same algorithm, so rank 0 alone reads the cache and, on a
communicator's first "auto" call, one all-gather hands every rank rank 0's model
together with every rank's host name (one collective per communicator, ever);
choices are then remembered per array size.

Fallback (no cache, an unreadable or corrupt one, or ranks on several hosts and no
fitted inter-host link): a warning from rank 0 saying why, then today's fixed rule,
recursive doubling below ``AUTO_SMALL_BYTES`` = 64 KiB and ring from there on. The
cache is JSON, parsed with ``json.loads`` and checked field by field; nothing in it
is ever executed or unpickled. ``MINIPAR_COST_CACHE=path`` overrides where it lives.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from minipar.comm.communicator import Communicator
from minipar.comm.cost_cache import (
    AUTO_SMALL_BYTES,
    CANDIDATES,
    CostModel,
    Link,
    cache_path,
    model_from_json,
    model_to_json,
    read_cost_model,
)
from minipar.comm.ring import SLAB_BYTES, allgather

NAME_BYTES = 256  # host names travel in fixed-width rows, as in hierarchical.py
VECTOR = 12  # float64s of a model in that row (see _vector)


# ----- predictions ------------------------------------------------------------------------------
def step_time(model: CostModel, host_of_rank: list[int], messages: list[tuple[int, int]],
              nbytes: float) -> float:
    """Seconds for ``messages`` (source, dest) of ``nbytes`` each, all sent at once.

    Messages inside a host cost ``intra.message(n)``; those between hosts share the
    link of the host they leave (and the one they enter), s of them costing
    ``inter.message(s n)``. The step lasts as long as its slowest message.
    """
    inside = [m for m in messages if host_of_rank[m[0]] == host_of_rank[m[1]]]
    across = [m for m in messages if host_of_rank[m[0]] != host_of_rank[m[1]]]
    seconds = model.intra.message(nbytes) if inside else 0.0
    if across:
        if model.inter is None:
            raise ValueError("ranks on several hosts, but the cost model has no inter-host link "
                             "(fit it on the cluster: minipar cost fit --cluster)")
        shared = max(max(Counter(host_of_rank[s] for s, _ in across).values()),
                     max(Counter(host_of_rank[d] for _, d in across).values()))
        seconds = max(seconds, model.inter.message(shared * nbytes))
    return seconds


def _slabs(chunk_bytes: float) -> int:
    return max(1, math.ceil(chunk_bytes / SLAB_BYTES))  # ring.py's slab_bounds


def _ring(model: CostModel, host_of_rank: list[int], members: list[list[int]], nbytes: float) -> float:
    """Rings over each list in ``members`` at once, each all-reducing nbytes: time, no overhead."""
    p = len(members[0])
    if p == 1:
        return 0.0
    slabs = _slabs(nbytes / p)
    edges = [(ring[i], ring[(i + 1) % p]) for ring in members for i in range(p)]
    step = step_time(model, host_of_rank, edges, nbytes / (p * slabs))
    return 2 * (p - 1) * slabs * step + (p - 1) / p * nbytes * model.gamma


def _recursive_doubling(model: CostModel, host_of_rank: list[int], nbytes: float) -> float:
    p = len(host_of_rank)
    power = 1 << (p.bit_length() - 1)
    rem = p - power
    real = [2 * v + 1 if v < rem else v + rem for v in range(power)]  # virtual rank -> rank
    seconds = 0.0
    if rem:  # fold in (rank 2i -> 2i+1, which combines) and hand the result back at the end
        fold = [(2 * i, 2 * i + 1) for i in range(rem)]
        seconds += step_time(model, host_of_rank, fold, nbytes) + nbytes * model.gamma
        seconds += step_time(model, host_of_rank, [(d, s) for s, d in fold], nbytes)
    mask = 1
    while mask < power:
        pairs = [(real[v], real[v ^ mask]) for v in range(power)]
        seconds += step_time(model, host_of_rank, pairs, nbytes) + nbytes * model.gamma
        mask <<= 1
    return seconds


def _hierarchical(model: CostModel, host_of_rank: list[int], nbytes: float) -> float:
    hosts = sorted(set(host_of_rank))
    on_host = [[r for r, h in enumerate(host_of_rank) if h == host] for host in hosts]
    k = len(on_host[0])
    inside = 0.0
    if k > 1:  # reduce-scatter, later all-gather: half a ring each, on every host at once
        slabs = _slabs(nbytes / k)
        edges = [(ranks[i], ranks[(i + 1) % k]) for ranks in on_host for i in range(k)]
        step = step_time(model, host_of_rank, edges, nbytes / (k * slabs))
        inside = 2 * (k - 1) * slabs * step + (k - 1) / k * nbytes * model.gamma
    across = [[ranks[i] for ranks in on_host] for i in range(k)]  # local rank i of every host
    return inside + _ring(model, host_of_rank, across, nbytes / k)


def _terms(model: CostModel, algorithm: str, host_of_rank: list[int], nbytes: float) -> float:
    if algorithm == "ring":
        return _ring(model, host_of_rank, [list(range(len(host_of_rank)))], nbytes)
    if algorithm == "recursive_doubling":
        return _recursive_doubling(model, host_of_rank, nbytes)
    if algorithm == "hierarchical":
        if len(set(Counter(host_of_rank).values())) != 1:
            raise ValueError(f"hierarchical needs the same number of ranks on every host, got "
                             f"{dict(Counter(host_of_rank))}")
        return _hierarchical(model, host_of_rank, nbytes)
    raise ValueError(f"predict: algorithm must be one of {list(CANDIDATES)}, got {algorithm!r}")


def _only(model: CostModel, alpha: bool, beta: bool, gamma: bool) -> CostModel:
    """The model with some of its terms set to zero."""
    def keep(link: Link | None) -> Link | None:
        return link and replace(link, alpha=link.alpha * alpha, beta=link.beta * beta)
    return replace(model, intra=keep(model.intra), inter=keep(model.inter), gamma=model.gamma * gamma)


def predict(model: CostModel, algorithm: str, host_of_rank: list[int], nbytes: float) -> float:
    """Predicted seconds of ``allreduce(algorithm=...)`` of nbytes on ranks on these hosts.

    ``host_of_rank[r]``: the host (any label) of rank r; p = len(host_of_rank). When the
    slowest link in use is paced, the CPU's part (overhead and latencies) overlaps the
    bytes' pacing: ``max(overhead + latency terms, byte terms) + reduce terms``; otherwise
    everything adds up: ``overhead + terms``.
    """
    if len(host_of_rank) < 2 or nbytes <= 0:
        return 0.0
    overhead = model.overhead[algorithm]
    spans = len(set(host_of_rank)) > 1
    slowest = model.inter if spans else model.intra
    if slowest is None or not slowest.paced:
        return overhead + _terms(model, algorithm, host_of_rank, nbytes)
    latency = _terms(_only(model, True, False, False), algorithm, host_of_rank, nbytes)
    wire = _terms(_only(model, False, True, False), algorithm, host_of_rank, nbytes)
    reduce = _terms(_only(model, False, False, True), algorithm, host_of_rank, nbytes)
    return max(overhead + latency, wire) + reduce


def candidates(host_of_rank: list[int]) -> list[str]:
    """The algorithms "auto" weighs: hierarchical only across hosts, with k > 1 ranks on each."""
    counts = Counter(host_of_rank)
    spread = len(counts) > 1 and len(set(counts.values())) == 1 and min(counts.values()) > 1
    return [*CANDIDATES[:2], *(["hierarchical"] if spread else [])]


def fallback(nbytes: int) -> str:
    """The fixed rule used without a fitted model.

    At p = 2 recursive doubling (1 message) beats the ring (2 messages) while alpha >
    N gamma / 2; a message sent from Python costs ~5-8 us, which puts the crossover at
    ~100-500 KiB (measured at p = 2). 64 KiB stays on the safe side for any p.
    """
    return "recursive_doubling" if nbytes < AUTO_SMALL_BYTES else "ring"


def best(model: CostModel, host_of_rank: list[int], nbytes: int) -> str:
    """The candidate with the smallest predicted time (ties: the first of CANDIDATES)."""
    times = {name: predict(model, name, host_of_rank, nbytes) for name in candidates(host_of_rank)}
    return min(times, key=times.__getitem__)


# ----- on a communicator --------------------------------------------------------------------------
def _vector(model: CostModel | None) -> np.ndarray:
    if model is None:
        return np.zeros(VECTOR)
    inter = model.inter or Link(0.0, 0.0)
    return np.array([1.0, model.intra.alpha, model.intra.beta, model.intra.paced,
                     float(model.inter is not None), inter.alpha, inter.beta, inter.paced,
                     model.gamma, *(model.overhead[n] for n in CANDIDATES)], dtype=np.float64)


def _model(vector: np.ndarray) -> CostModel | None:
    if vector[0] != 1.0:
        return None
    intra = Link(float(vector[1]), float(vector[2]), bool(vector[3]))
    inter = Link(float(vector[5]), float(vector[6]), bool(vector[7])) if vector[4] == 1.0 else None
    return CostModel(intra, inter, float(vector[8]),
                     {name: float(v) for name, v in zip(CANDIDATES, vector[9:])})


def auto_state(comm: Communicator) -> dict[str, Any]:
    """Collective on a communicator's first "auto" call: rank 0's model, every rank's host."""
    state = comm.__dict__.get("_auto_state")
    if state is not None:
        return state
    model = read_cost_model() if comm.rank == 0 else None
    name = comm.host_name().encode()[:NAME_BYTES]
    row = np.zeros(NAME_BYTES + 8 * VECTOR, np.uint8)
    row[: len(name)] = np.frombuffer(name, np.uint8)
    row[NAME_BYTES:] = _vector(model).view(np.uint8)
    table = allgather(comm, row, out=np.empty(row.size * comm.size, np.uint8)).reshape(comm.size, -1)
    names = [bytes(r[:NAME_BYTES]).rstrip(b"\0").decode(errors="replace") for r in table]
    order = list(dict.fromkeys(names))
    model = _model(table[0, NAME_BYTES:].copy().view(np.float64))
    host_of_rank = [order.index(n) for n in names]
    if model is not None and model.inter is None and len(order) > 1:
        if comm.rank == 0:
            warnings.warn(f"allreduce(algorithm='auto'): the ranks span {len(order)} hosts but the "
                          f"cost model at {cache_path()} was fitted on one host (run `minipar cost fit "
                          "--cluster`); falling back to the fixed 64 KiB rule", RuntimeWarning, stacklevel=3)
        model = None
    state = {"model": model, "host_of_rank": host_of_rank, "choices": {}}
    comm.__dict__["_auto_state"] = state
    comm.__dict__["_auto_choices"] = state["choices"]  # allreduce's one lookup per call
    return state


def choose(comm: Communicator, nbytes: int) -> str:
    """The algorithm "auto" runs for an array of nbytes on ``comm`` (the same on every rank)."""
    state = comm.__dict__.get("_auto_state")  # made by the first call: then one lookup per call
    if state is not None:
        chosen = state["choices"].get(nbytes)
        if chosen is not None:
            return chosen
    if comm.size == 1:
        return "ring"
    state = auto_state(comm)
    model = state["model"]
    chosen = fallback(nbytes) if model is None else best(model, state["host_of_rank"], nbytes)
    state["choices"][nbytes] = chosen
    return chosen


__all__ = ["AUTO_SMALL_BYTES", "CANDIDATES", "CostModel", "Link", "best", "cache_path",
           "candidates", "choose", "fallback", "model_from_json", "model_to_json", "predict",
           "read_cost_model", "step_time"]
