"""Distributed snapshots: one directory, one manifest, a shard per rank -- committed atomically.

    mpiexec -n 4 python -m mpi4py lessons/11_fault_tolerance.py

A training state has two kinds of parts. **Shared** parts are the same on every
rank (DDP's model and optimizer, ZeRO's gathered weights, the step); writing
them p times would be waste, so rank 0 writes them once. **Local** parts differ
per rank (every rank's RNG state, for its dropout; its sampler position;
ZeRO's optimizer shard; a pipeline stage's layers). ``save_distributed`` puts
them in a directory::

    path/manifest.npz                      rank 0: shared state, world size, generation,
                                           each shard's file name and SHA-256 (or the
                                           gathered local states themselves)
    path/shard-00002-of-00004.g7.npz       rank 2's local state (generation 7)

Two ways to store the local parts, chosen by ``gather``:

- ``gather=True`` (DDP: local parts are tiny): every rank sends its local state
  to rank 0 as bytes (``snapshot.to_bytes``, one uint8 message), and **rank 0
  alone writes**, everything inside the manifest.
- ``gather=False`` (ZeRO, pipeline: local parts are large): **each rank writes
  its shard**, then the ranks all-gather the shards' SHA-256 digests (32 bytes
  each) and rank 0 writes the manifest naming them.

Atomic across ranks. Every file is written with ``minipar.save`` (temporary
file, fsync, rename). Shard files carry a new generation number in their
names, so they never overwrite the shards the current manifest names. Rank 0
replaces the manifest only after every shard is durable (the digest exchange
is the barrier): **the manifest's rename is the commit point**. A crash before
it leaves the previous snapshot whole (old manifest, old shards); a crash
after it leaves the new one. Older shards and stray temporary files are
removed after the commit; a final barrier means that when ``save_distributed``
returns on any rank, the snapshot is committed.

Resuming. ``load_distributed(path, comm)`` -> ``(shared, local)`` on the same
world size (each rank's shard is checked against the manifest's digest).
``load_distributed_all(path)`` -> ``(shared, [local of rank 0, 1, ...])`` for
any world size: re-split what was sharded, e.g. ZeRO's optimizer shards with
``zero.reshard_state_dicts`` (shown in ``tests/test_fault_tolerance.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import numpy as np

from minipar.comm import Communicator, allgather, broadcast, gather_to_root, require_communicator
from minipar.snapshot import from_bytes, load, save, to_bytes

MANIFEST = "manifest.npz"
FORMAT = "minipar.distributed"
VERSION = 1
_SHARD = re.compile(r"^shard-(\d{5})-of-(\d{5})\.g(\d+)\.npz$")


def shard_name(rank: int, world_size: int, generation: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.g{generation}.npz"


def _file_sha256(file_path: str) -> tuple[str, bytes]:
    with open(file_path, "rb") as file:
        data = file.read()
    return hashlib.sha256(data).hexdigest(), data


def _next_generation(path: str) -> int:
    try:
        return int(read_manifest(path)["generation"]) + 1
    except (FileNotFoundError, ValueError):
        return 0  # no snapshot yet, or an unreadable one (which is lost either way)


def save_distributed(path: str | os.PathLike[str], comm: Communicator, shared: Any = None,
                     local: Any = None, gather: bool = False) -> None:
    """Collective: commit ``shared`` (rank 0's) and every rank's ``local`` to directory ``path``.

    ``gather=True``: rank 0 writes one file (the manifest holds the local states);
    ``gather=False``: every rank writes a shard file, rank 0 the manifest.
    """
    require_communicator(comm, "save_distributed")
    path = os.fspath(path)
    rank, size = comm.rank, comm.size
    generation = np.zeros(1, dtype=np.int64)
    if rank == 0:
        os.makedirs(path, exist_ok=True)
        generation[0] = _next_generation(path)
    generation = int(broadcast(comm, generation)[0])  # also: the directory exists from here on
    locals_: list[Any] | None = None
    shards: list[dict[str, str]] | None = None
    if gather:
        locals_ = _gather_to_root(comm, local)
    else:
        name = shard_name(rank, size, generation)
        save({"rank": rank, "world_size": size, "generation": generation, "local": local},
             os.path.join(path, name))
        digest, _ = _file_sha256(os.path.join(path, name))
        # (32,) per rank -> (32 p,) on every rank; returns only once every shard is on disk
        digests = allgather(comm, np.frombuffer(bytes.fromhex(digest), dtype=np.uint8).copy(),
                            out=np.empty(32 * size, dtype=np.uint8))
        shards = [{"file": shard_name(r, size, generation),
                   "sha256": digests[32 * r: 32 * r + 32].tobytes().hex()} for r in range(size)]
    if rank == 0:
        save({"format": FORMAT, "version": VERSION, "world_size": size, "generation": generation,
              "shared": shared, "locals": locals_, "shards": shards}, os.path.join(path, MANIFEST))
        _remove_stale(path, {s["file"] for s in shards or []})
    comm.barrier()  # nobody returns (or dies in the next step) before the commit


def _gather_to_root(comm: Communicator, local: Any) -> list[Any] | None:
    """Every rank's ``local`` on rank 0 (None elsewhere); rank 0 keeps its own as it is."""
    blobs = gather_to_root(comm, b"" if comm.rank == 0 else to_bytes(local))
    return None if blobs is None else [local] + [from_bytes(blob) for blob in blobs[1:]]


def _remove_stale(path: str, keep: set[str]) -> None:
    """Shards of older generations and temporary files of interrupted saves."""
    for name in os.listdir(path):
        stale_shard = _SHARD.match(name) is not None and name not in keep
        stale_tmp = name.startswith((".shard-", f".{MANIFEST}.")) and name.endswith(".tmp")
        if stale_shard or stale_tmp:
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the snapshot in directory ``path``, every field checked: a ValueError
    naming the field if it is not what ``save_distributed`` writes (even with checksums that fit)."""
    manifest = load(os.path.join(os.fspath(path), MANIFEST))
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT
            and manifest.get("version") == VERSION):
        raise ValueError(f"{path!r}: {MANIFEST} is not a minipar distributed snapshot manifest "
                         f"(expected format {FORMAT!r} version {VERSION})")
    _check_manifest(os.fspath(path), manifest)
    return manifest


def _check_manifest(path: str, manifest: dict[Any, Any]) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f"{path!r}: {MANIFEST} is not a valid distributed snapshot manifest: {what}")

    fields = ("world_size", "generation", "shared", "locals", "shards")
    missing = [key for key in fields if key not in manifest]
    if missing:
        raise bad(f"it has no {', '.join(missing)}")
    size, generation, _, locals_, shards = (manifest[key] for key in fields)
    if type(size) is not int or size < 1:
        raise bad(f"world_size is {str(size)[:40]!r}, expected an int >= 1")
    if type(generation) is not int or generation < 0:
        raise bad(f"generation is {str(generation)[:40]!r}, expected an int >= 0")
    if (locals_ is None) == (shards is None):
        raise bad("exactly one of 'locals' (gathered states) and 'shards' (shard files) must be set")
    stored = locals_ if shards is None else shards
    if not isinstance(stored, list) or len(stored) != size:
        kind = "locals" if shards is None else "shards"
        got = f"a list of {len(stored)}" if isinstance(stored, list) else f"a {type(stored).__name__}"
        raise bad(f"{kind!r} is {got}, expected a list of {size} (one per rank)")
    for rank, entry in enumerate(shards or []):
        expected = shard_name(rank, size, generation)  # so a crafted name cannot leave `path`
        if not isinstance(entry, dict) or entry.get("file") != expected:
            raise bad(f"shards[{rank}] is {str(entry)[:80]}, expected file {expected!r}")
        if not (isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise bad(f"shards[{rank}] sha256 is {str(entry.get('sha256'))[:80]!r}, expected 64 hex digits")


def _local_of(path: str, manifest: dict[str, Any], rank: int) -> Any:
    if manifest["locals"] is not None:
        return manifest["locals"][rank]
    entry = manifest["shards"][rank]
    try:
        digest, data = _file_sha256(os.path.join(path, entry["file"]))
    except FileNotFoundError:
        raise ValueError(f"{path!r}: shard {entry['file']}, named by the manifest, is missing") from None
    if digest != entry["sha256"]:
        raise ValueError(f"{path!r}: shard {entry['file']} has SHA-256 {digest}, the manifest expects "
                         f"{entry['sha256']} (a shard of another snapshot, or damaged)")
    shard = from_bytes(data)  # the very bytes just checked
    if not isinstance(shard, dict) or "local" not in shard:
        raise ValueError(f"{path!r}: shard {entry['file']} holds {type(shard).__name__}, expected a dict "
                         "with rank, world_size, generation and local")
    expected = (rank, manifest["world_size"], manifest["generation"])
    got = (shard.get("rank"), shard.get("world_size"), shard.get("generation"))
    if got != expected:
        raise ValueError(f"{path!r}: shard {entry['file']} is (rank, world size, generation) = {got}, "
                         f"expected {expected}")
    return shard["local"]


def load_distributed(path: str | os.PathLike[str], comm: Communicator) -> tuple[Any, Any]:
    """``(shared, this rank's local)`` from a snapshot written at this world size."""
    path = os.fspath(path)
    manifest = read_manifest(path)
    if manifest["world_size"] != comm.size:
        raise ValueError(
            f"{path!r} was written by {manifest['world_size']} ranks, this job has {comm.size}; "
            "use load_distributed_all(path) and re-split the local states "
            "(e.g. minipar.parallel.zero.reshard_state_dicts)"
        )
    return manifest["shared"], _local_of(path, manifest, comm.rank)


def load_distributed_all(path: str | os.PathLike[str]) -> tuple[Any, list[Any]]:
    """``(shared, [local of every rank that wrote it])``: for resuming at another world size."""
    path = os.fspath(path)
    manifest = read_manifest(path)
    return manifest["shared"], [_local_of(path, manifest, r) for r in range(manifest["world_size"])]
