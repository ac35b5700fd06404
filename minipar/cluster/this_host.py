"""What a rank can learn about the host it runs on: its link's rate and byte counters, or why there is none.

    from minipar.cluster import host_link, one_host_caveats
    link = host_link()          # on an emulated host (root): eth0's token bucket, bytes sent and received
    load = os.getloadavg()[0]   # measured at the start of a timing run, before it loads the cores
    print("\\n".join(one_host_caveats(ranks=4, load_at_start=load)))

Inside a host made by ``minipar cluster up`` a rank sees its own network
namespace: one cable, ``eth0``, whose egress is the token bucket that limits
what the host sends (``tc -s qdisc show dev eth0`` counts the bytes it let
through: a rank running as root reads it directly). What the host receives
is limited on the machine's end of the cable; inside, ``eth0``'s receive
counter (``/sys/class/net/eth0/statistics/rx_bytes``) counts the same bytes.

When every rank runs on one host, the timings a lesson measures are not those
of its formulas, for reasons ``one_host_caveats`` names with this machine's
numbers: the ranks share the cores, their transfers are memcpy on those same
cores, and other processes were already using them (the load average).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEVICE = "eth0"  # the host's end of its cable, as `minipar cluster up` names it


@dataclass(frozen=True)
class HostLink:
    """This host's cable, as the kernel counts it now."""

    device: str
    rate_bits: int | None  # the token bucket's rate in bit/s; None: no token bucket on it
    sent_bytes: int  # what the egress qdisc let through (the token bucket's counter)
    received_bytes: int  # the device's receive counter
    mtu: int  # bytes per packet, headers included (1500 on a veth)
    address: str | None  # the device's IPv4 address (10.213.0.1 on node0)


def host_link(device: str = DEVICE) -> HostLink | None:
    """``device``'s rate and counters in this rank's network namespace; None where it cannot be read.

    None when the device does not exist here (the machine's own namespace has no
    ``eth0`` of ours), or ``tc`` is missing or refuses (not root).
    """
    sysfs = Path("/sys/class/net") / device
    if not sysfs.is_dir() or shutil.which("tc") is None:
        return None
    done = subprocess.run(["tc", "-j", "-s", "qdisc", "show", "dev", device],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        return None
    qdiscs = json.loads(done.stdout or "[]")
    bucket = next((q for q in qdiscs if q.get("kind") == "tbf"), None)
    root = bucket or next((q for q in qdiscs if q.get("root")), None)
    if root is None:
        return None
    rate = 8 * int(bucket["options"]["rate"]) if bucket else None  # tc -j gives bytes/s
    received = int((sysfs / "statistics" / "rx_bytes").read_text())
    shown = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", device],
                           capture_output=True, text=True, timeout=10)
    found = [a["local"] for entry in json.loads(shown.stdout or "[]") for a in entry.get("addr_info", [])]
    return HostLink(device, rate, int(root["bytes"]), received, int((sysfs / "mtu").read_text()),
                    found[0] if found else None)


def tcp_framing(mtu: int) -> float:
    """Bytes on the wire per byte of payload for a full TCP segment: MTU + 14 (Ethernet) over MTU - 52.

    A segment carries MTU - 20 (IP) - 32 (TCP with timestamps) bytes of payload
    and leaves as MTU + 14 bytes (the Ethernet header, which the qdisc counts).
    """
    if mtu <= 52:
        raise ValueError(f"an MTU must exceed the 52 bytes of IP and TCP headers, got {mtu}")
    return (mtu + 14) / (mtu - 52)


def one_host_caveats(ranks: int, load_at_start: float, cores: int | None = None) -> list[str]:
    """Why timings measured with ``ranks`` ranks on this one host differ from the formulas, in numbers."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a positive int, got {ranks!r}")
    cores = cores or os.cpu_count() or 1
    if ranks > cores:
        share = (f"p = {ranks} ranks on {cores} cores: the ranks queue for the CPU, so every "
                 "timing includes waiting for the other ranks' time slices")
    else:
        share = (f"p = {ranks} ranks on {cores} cores: every core runs a rank, none is left "
                 "over to move bytes")
    busy = "already busy with other work" if load_at_start > 0.5 else "idle"
    return [
        "why these timings differ from the formula here (every rank on one host):",
        f"  - cores vs ranks: {share};",
        "  - memcpy-bound transfers: between ranks of one host MPI copies through shared memory "
        "on the same cores that compute; a transfer is CPU work, so overlap cannot hide it, "
        "and its 'bandwidth' is the memory's, shared with the computation;",
        f"  - load average at start: {load_at_start:.2f} over the last minute on {cores} cores "
        f"({busy}: other processes take their share of the cores, and it changes from run to run).",
        "  On the emulated cluster the bytes cross a rate-limited link instead: "
        "minipar cluster up --hosts 2 --gbit 2, then add --cluster (lesson 18).",
    ]
