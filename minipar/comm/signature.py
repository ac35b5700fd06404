"""Never silent: every collective call carries its signature, in the tag of its messages.

A collective's messages could be taken for another's: two ranks all-reducing
1000 int64 and 1000 float64 exchange the same 8000 bytes, and both "succeed"
with garbage. So each call has a **signature**, eight int64s (64 bytes):

    MAGIC, collective, dtype, length, op, root, algorithm, call number on this communicator

and every message of the call travels under a **tag made from it**:

    tag = SIGNED_BASE + (crc32(signature without the number) + number * 0x9E3779B1) mod 2^28

(the odd multiplier makes the tags of consecutive calls of one shape all
different). MPI (and the thread ranks' mailboxes) match a receive only with a
message of the same tag, so a message of another call -- another collective,
dtype, length, op, root, algorithm, or another count of calls -- can never be
taken for this call's: it waits, unmatched, beside the receive that waits for
it. That pair is the mismatch, and it is found while both wait:

- thread ranks (``run_local``): the receiving rank sees the other call's
  message in its mailboxes at once and raises ``CollectiveMismatchError``;
- MPI ranks: the watchdog (``watchdog.py``), for a collective's wait older
  than ``MISMATCH_AFTER`` = 1 s, probes the peer's pending message
  (``MPI_Iprobe``); a tag of another call is a mismatch. It asks the peer's
  watchdog which call that tag was, and ends the job naming both:

    rank 0 called allreduce(float64[1000], op=sum, algorithm=ring) call #3 but
    rank 1 called allreduce(int64[1000], op=sum, algorithm=ring) call #3

Collectives whose message pattern depends on an argument that may differ
between ranks (a root) first exchange an empty message round the ring
(``check_round_the_ring``): two ranks that both think they are the root would
otherwise only send, and both return.

What it costs. No byte and no message: only the tag is computed, once per call
(the shape's part is cached). The previous design, a 64-byte header in each
call's first message to each peer, found a mismatch at once but cost ~5 us of
Python per 8-byte call (+40 % on recursive doubling; building, comparing and
copying the header); this one finds it within ~1.5 s under MPI, and tells two
mismatched calls apart unless their tags collide (2^-28 for a pair of calls).
Per 8-byte call, ``sign`` costs ~0.25 us and the watchdog's slot ~0.15 us (MPI's own
Sendrecv: ~2.4 us); measured against the code before signatures (120 interleaved
rounds, ``mpiexec -bind-to core -n 2``, medians of 400 calls each): auto 8 B +3.4 %
(paired ratios 1.021-1.048, interquartile), ring 8 B -17 %, 4 MiB -1 to +2 % with
interquartile ranges spanning 1, i.e. within the noise.

``send``, ``recv`` and ``sendrecv`` below are what every collective uses; they
count the payload once under the logical tag ``TAG_COLLECTIVE``, so counters
and the message log read the same as before.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from minipar.comm.communicator import TAG_COLLECTIVE, Communicator
from minipar.comm.errors import CollectiveMismatchError

LAYOUT = struct.Struct("<8q")  # the signature: eight int64s (the docstring names them)
SIGNATURE_BYTES = LAYOUT.size  # 64
MAGIC = 0x6D696E69706172  # "minipar"
SIGNED_BASE = 1 << 20  # collective tags: SIGNED_BASE .. SIGNED_BASE + SIGNED_TAGS - 1
SIGNED_TAGS = 1 << 28  # MPICH's MPI_TAG_UB is 2^29 - 1; world() checks the bound
MULTIPLIER = 0x9E3779B1  # odd: number -> number * MULTIPLIER is one-to-one modulo 2^28
MISMATCH_AFTER = 1.0  # seconds a collective's MPI wait runs before the watchdog probes it
OPS = (None, "sum", "mean", "max", "min")
NAMES: dict[int, str] = {}  # code -> name, for the error message
CODES: dict[str, int] = {}  # name -> code
DTYPES = {np.dtype(c).num: np.dtype(c) for c in np.typecodes["All"] if c not in "OMm"}
_PREFIXES: dict[tuple, tuple[bytes, int]] = {}  # a call's shape -> (its first 56 bytes, their crc)
_MAX_PREFIXES = 4096
RECENT: dict[int, tuple[bytes, int]] = {}  # tag -> (prefix, number) of this process's recent calls
_MAX_RECENT = 1024


def _code(text: str) -> int:
    code = CODES.get(text)
    if code is None:  # once per name: a call's signature is built on the hot path
        code = CODES[text] = zlib.crc32(text.encode())
        NAMES[code] = text
    return code


def _prefix(key: tuple) -> tuple[bytes, int]:
    """The call-number-free part of a signature (MAGIC ... extra) and its crc32."""
    name, op, dtype, length, root, extra = key
    prefix = LAYOUT.pack(MAGIC, _code(name), np.dtype(dtype).num,
                         length if type(length) is int else -1, OPS.index(op), root, _code(extra),
                         0)[:56]
    if len(_PREFIXES) >= _MAX_PREFIXES:  # many distinct lengths (buckets): start afresh
        _PREFIXES.clear()
    _PREFIXES[key] = found = (prefix, zlib.crc32(prefix))
    return found


def fit_tags(tag_upper_bound: int) -> None:
    """Fit the signed tags below an MPI's ``MPI_TAG_UB`` (the standard promises only 32767).

    Every rank of a job runs the same MPI, so every rank computes the same range.
    """
    global SIGNED_BASE, SIGNED_TAGS
    if tag_upper_bound >= (1 << 20) + (1 << 28) - 1:
        SIGNED_BASE, SIGNED_TAGS = 1 << 20, 1 << 28
    else:  # a small tag space: above the users' and the internal tags, as many as there are
        SIGNED_BASE = TAG_COLLECTIVE + 16
        SIGNED_TAGS = tag_upper_bound - SIGNED_BASE + 1
        if SIGNED_TAGS < 1:
            raise RuntimeError(f"this MPI's MPI_TAG_UB is {tag_upper_bound}: minipar needs tags up to "
                               f"at least {SIGNED_BASE}")


def is_signed(tag: int | None) -> bool:
    """Whether ``tag`` is a collective call's (a signed tag)."""
    return tag is not None and SIGNED_BASE <= tag < SIGNED_BASE + SIGNED_TAGS


def sign(key: tuple, number: int) -> int:
    """The tag of call ``number`` of shape ``key``; notes it in ``RECENT`` for error messages.

    ``key`` is ``(name, op, dtype, length, root, extra)``. Called once per outermost
    collective call (``safety.Collective``): the shape's 56 bytes and their crc32 are
    packed once and cached, so this is a dict lookup, two integer operations and a
    dict store.
    """
    found = _PREFIXES.get(key) or _prefix(key)
    tag = SIGNED_BASE + (found[1] + number * MULTIPLIER) % SIGNED_TAGS
    if len(RECENT) >= _MAX_RECENT:  # keep the newest calls only
        RECENT.clear()
    RECENT[tag] = (found[0], number)
    return tag


def recent_signature(tag: int) -> bytes | None:
    """The signature of this process's recent call with ``tag``, or None."""
    found = RECENT.get(tag)
    return None if found is None else found[0] + found[1].to_bytes(8, "little", signed=True)


def describe(signature: bytes | None) -> str:
    """``allreduce(float64[1000], op=sum, algorithm=ring) call #3`` from a signature."""
    if not signature or len(signature) != SIGNATURE_BYTES or LAYOUT.unpack(signature)[0] != MAGIC:
        return "a collective this process does not know"
    _, name, dtype, length, op, root, extra, number = LAYOUT.unpack(signature)
    fields = [f"{DTYPES[dtype] if dtype in DTYPES else dtype}[{length if length >= 0 else '?'}]"]
    fields += [f"op={OPS[op]}"] if 0 < op < len(OPS) else []
    fields += [f"root={root}"] if root >= 0 else []
    fields += [NAMES.get(extra, "?")] if NAMES.get(extra) else []
    return f"{NAMES.get(name, '?')}({', '.join(fields)}) call #{number}"


def mismatch_error(rank: int, my_tag: int, peer: int, their_tag: int,
                   theirs: str | None = None) -> CollectiveMismatchError:
    """The error for a wait under ``my_tag`` beside a message of ``peer`` under ``their_tag``.

    ``theirs`` describes the peer's call (its watchdog's answer, under MPI); by
    default it is looked up among this process's calls (thread ranks share them).
    """
    mine = f"rank {rank} called {describe(recent_signature(my_tag))}"
    if theirs is None and their_tag in RECENT:
        theirs = describe(recent_signature(their_tag))
    if not theirs:
        return CollectiveMismatchError(
            f"{mine} but rank {peer} sent a message of another collective call (tag {their_tag}): "
            "the ranks are running different collectives or counts of them")
    return CollectiveMismatchError(
        f"{mine} but rank {peer} called {theirs}: every rank must call the same "
        "collective with the same dtype, length, op and root, in the same order")


def current_call(comm: Communicator) -> Any:
    """The outermost collective running on ``comm`` on this thread (its ``.tag``), or None."""
    return comm._local.__dict__.get("call")


def send(comm: Communicator, array: Any, dest: int) -> None:
    """A collective's blocking send of ``array`` to ``dest``, under its call's tag."""
    comm._message(array.nbytes, dest, TAG_COLLECTIVE)
    call = comm._local.__dict__.get("call")
    comm._send(array, dest, TAG_COLLECTIVE if call is None else call.tag)


def recv(comm: Communicator, array: Any, source: int) -> Any:
    """A collective's blocking receive into ``array`` from ``source``, under its call's tag."""
    call = comm._local.__dict__.get("call")
    comm._recv(array, source, TAG_COLLECTIVE if call is None else call.tag)
    return array


def sendrecv(comm: Communicator, outgoing: Any, dest: int, incoming: Any, source: int) -> None:
    """A collective's ``sendrecv``, both ways under its call's tag."""
    comm._message(outgoing.nbytes, dest, TAG_COLLECTIVE)
    call = comm._local.__dict__.get("call")
    tag = TAG_COLLECTIVE if call is None else call.tag
    comm._sendrecv(outgoing, dest, incoming, source, tag, tag)


def check_round_the_ring(comm: Communicator) -> None:
    """Send an empty message right, receive one from the left, under the call's tag (one latency).

    For collectives whose pattern depends on an argument that may differ between
    ranks (a root): two ranks that both think they are the root only send, and
    without this would both return. Uncounted.
    """
    call = current_call(comm)
    p = comm.size
    if p > 1 and call is not None:
        empty = np.empty(0, dtype=np.uint8)
        comm._sendrecv(empty, (comm.rank + 1) % p, empty, (comm.rank - 1) % p, call.tag, call.tag)
