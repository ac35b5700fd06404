"""Restarts that resume by themselves: "continue from the newest complete snapshot in DIR, or start".

    minipar run tests/chaos_train.py -n 3 --max-restarts 2 -- ddp /tmp/snap /tmp/out
    minipar run train.py -n 3 --max-restarts 2 --restart-ranks 2 -- ...   # restarts on 2 ranks

The launcher's half (``minipar run --max-restarts K``, like torchrun's): when
the job exits non-zero -- a rank SIGKILLed, an exception, a deadline -- it is
launched again, up to K times, on ``--restart-ranks`` ranks if given; each
launch sees ``MINIPAR_RESTART_COUNT`` = 0, 1, 2, ... (``restart_count()``).

The script's half is this module. A training loop's snapshot/restore is three lines::

    parts = {"shared": {"model": ddp, "optimizer": opt}, "local": {"sampler": sampler}}
    step = elastic.resume(directory, comm, **parts)          # 0 on a fresh start
    ...                                                      # in the loop, after step += 1:
    if step % every == 0: elastic.snapshot(directory, comm, step, **parts, gather=True)

The contract:

- ``shared`` objects are the same on every rank (DDP's model and optimizer,
  ZeRO's gathered model): rank 0's ``state_dict()`` is stored once.
  ``local`` objects differ per rank (a sampler, ZeRO's optimizer shard, a
  pipeline stage): every rank's is stored. Each needs ``state_dict()`` and
  ``load_state_dict()``.
- Stored besides: the step (shared) and each rank's generator,
  ``minipar.get_rng_state()`` (local, under ``"rng"``). Restoring all of it
  -- parameters, optimizer state, RNG, data position, step -- is what makes a
  resumed run **bit-identical** to one never interrupted.
- ``snapshot`` is ``sharded.save_distributed``: atomic across ranks, the
  manifest's rename is the commit. So DIR always holds one complete snapshot
  (the newest), or none; ``resume`` reads it and, on rank 0, removes what an
  interrupted save left behind (uncommitted shards, temporary files).
- Another world size: shared parts load as they are; a local part loads only
  through ``reshard[name](states_of_every_old_rank, new_world_size)`` -- e.g.
  ``{"optimizer": zero.reshard_state_dicts}`` -- else it is a ValueError, as is
  restoring per-rank RNG states (pass ``rng=False`` when training draws no
  per-rank random numbers). Nothing is silently dropped.
- An unreadable snapshot is a ValueError, never a silent fresh start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minipar.comm import Communicator, broadcast, require_communicator
from minipar.random import get_rng_state, set_rng_state
from minipar.snapshot import sharded

RESTART_ENV = "MINIPAR_RESTART_COUNT"
RESERVED = ("step", "rng")  # the names snapshot() stores itself
Reshard = Callable[[list[Any], int], list[Any]]


def restart_count() -> int:
    """How many times ``minipar run --max-restarts`` relaunched this job so far (0: first launch)."""
    text = os.environ.get(RESTART_ENV, "0").strip() or "0"
    if not text.isdigit():
        raise ValueError(f"{RESTART_ENV} must be a non-negative integer, got {text!r}")
    return int(text)


@dataclass
class Resumed:
    """What ``resume_or_start`` found: the newest complete snapshot in a directory."""

    step: int
    shared: dict[str, Any]  # rank 0's shared state dicts, plus "step"
    local: dict[str, Any] | None  # this rank's local state dicts (with "rng"); None at another world size
    locals: list[dict[str, Any]]  # every writer rank's (read only when the world size changed)
    world_size: int  # how many ranks wrote it


def _check_directory(directory: Any, what: str) -> str:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{what}: directory must be a str or os.PathLike, got {type(directory).__name__}")
    return os.fspath(directory)


def resume_or_start(directory: str | os.PathLike[str], comm: Communicator) -> Resumed | None:
    """Collective: the snapshot committed in ``directory``, or None when there is none yet.

    Rank 0 decides whether a manifest exists and tells the others, so every
    rank takes the same branch. Rank 0 also removes the leftovers of a save
    that was interrupted (files the manifest does not name).
    """
    require_communicator(comm, "resume_or_start")
    path = _check_directory(directory, "resume_or_start")
    found = np.zeros(1, dtype=np.int64)  # 1: a snapshot, 0: none, -1: a damaged one
    problem = ""
    if comm.rank == 0:
        found[0] = os.path.isfile(os.path.join(path, sharded.MANIFEST))
        try:
            if found[0]:
                manifest = sharded.read_manifest(path)
                sharded._remove_stale(path, {entry["file"] for entry in manifest["shards"] or []})
            elif os.path.isdir(path):
                sharded._remove_stale(path, set())  # shards of a first save that never committed
        except ValueError as error:
            found[0], problem = -1, str(error)
    found = int(broadcast(comm, found)[0])  # every rank takes the same branch
    if found < 0:
        raise ValueError(f"resume_or_start: rank 0 could not read the snapshot in {path!r} "
                         f"(not starting over silently): {problem or 'see rank 0'}")
    if found == 0:
        return None
    world_size = int(sharded.read_manifest(path)["world_size"])
    if world_size == comm.size:
        shared, local = sharded.load_distributed(path, comm)
        locals_ = [local]
    else:
        shared, locals_ = sharded.load_distributed_all(path)
        local = None
    if not isinstance(shared, dict) or "step" not in shared:
        raise ValueError(f"{path!r}: the snapshot's shared state has no 'step'; expected one written by "
                         "minipar.elastic.snapshot")
    return Resumed(int(shared["step"]), shared, local, locals_, world_size)


def _check_parts(parts: Any, kind: str, what: str) -> dict[str, Any]:
    if parts is None:
        return {}
    if not isinstance(parts, dict):
        raise TypeError(f"{what}: {kind} must be a dict of name -> object with state_dict(), "
                        f"got {type(parts).__name__}")
    for name, obj in parts.items():
        if not isinstance(name, str) or name in RESERVED:
            raise ValueError(f"{what}: {kind} names must be strings other than {RESERVED}, got {name!r}")
        methods = (getattr(obj, "state_dict", None), getattr(obj, "load_state_dict", None))
        if not all(callable(method) for method in methods):
            raise TypeError(f"{what}: {kind}[{name!r}] needs state_dict() and load_state_dict(), "
                            f"got {type(obj).__name__}")
    return parts


def snapshot(directory: str | os.PathLike[str], comm: Communicator, step: int,
             shared: dict[str, Any] | None = None, local: dict[str, Any] | None = None,
             gather: bool = False) -> None:
    """Collective: commit ``step``, the objects' state dicts and each rank's RNG state to ``directory``.

    ``gather=True``: rank 0 writes everything (small local parts, e.g. DDP);
    ``gather=False``: every rank writes its shard (ZeRO, pipeline).
    """
    path = _check_directory(directory, "snapshot")
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        raise ValueError(f"snapshot: step must be a non-negative int, got {step!r}")
    shared = _check_parts(shared, "shared", "snapshot")
    local = _check_parts(local, "local", "snapshot")
    shared_states = {"step": int(step), **{name: obj.state_dict() for name, obj in shared.items()}}
    local_states = {"rng": get_rng_state(), **{name: obj.state_dict() for name, obj in local.items()}}
    sharded.save_distributed(path, comm, shared=shared_states, local=local_states, gather=gather)


def restore(resumed: Resumed, comm: Communicator, shared: dict[str, Any] | None = None,
            local: dict[str, Any] | None = None, reshard: dict[str, Reshard] | None = None,
            rng: bool = True) -> int:
    """Load ``resumed`` into the objects (and this rank's RNG); returns the step to continue from."""
    shared = _check_parts(shared, "shared", "restore")
    local = _check_parts(local, "local", "restore")
    reshard = dict(reshard or {})
    for name, obj in shared.items():
        if name not in resumed.shared:
            raise ValueError(f"restore: the snapshot has no shared part {name!r}; it has "
                             f"{sorted(k for k in resumed.shared if k != 'step')}")
        obj.load_state_dict(resumed.shared[name])
    same_size = resumed.local is not None
    for name, obj in local.items():
        if name not in resumed.locals[0]:
            raise ValueError(f"restore: the snapshot has no local part {name!r}; it has "
                             f"{sorted(k for k in resumed.locals[0] if k != 'rng')}")
        if same_size:
            obj.load_state_dict(resumed.local[name])
        elif name in reshard:
            obj.load_state_dict(reshard[name]([old[name] for old in resumed.locals], comm.size)[comm.rank])
        else:
            raise ValueError(f"restore: local part {name!r} was written by {resumed.world_size} ranks, this "
                             f"job has {comm.size}; pass reshard={{{name!r}: function(states, world_size)}}")
    if rng:
        if not same_size:
            raise ValueError(f"restore: the snapshot holds the RNG states of {resumed.world_size} ranks, "
                             f"this job has {comm.size}; pass rng=False if no rank draws random numbers")
        set_rng_state(resumed.local["rng"])
    return resumed.step


def resume(directory: str | os.PathLike[str], comm: Communicator, shared: dict[str, Any] | None = None,
           local: dict[str, Any] | None = None, reshard: dict[str, Reshard] | None = None,
           rng: bool = True) -> int:
    """Collective: ``restore`` the newest snapshot in ``directory`` and return its step; 0 when none."""
    resumed = resume_or_start(directory, comm)
    if resumed is None:
        return 0
    return restore(resumed, comm, shared=shared, local=local, reshard=reshard, rng=rng)
