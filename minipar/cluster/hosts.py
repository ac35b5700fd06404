"""Hosts on one machine: Linux network namespaces on a bridge, each link rate-limited.

    sudo minipar cluster up --hosts 2 --gbit 2     # node0, node1 on a 2 Gbit/s switch
    minipar cluster status                         # addresses, rates, bytes each link carried
    minipar cluster down                           # removes all of it (safe to repeat)

What ``up(hosts, gbit)`` builds, for host k = 0 .. hosts-1::

    namespace minipar-node{k}          its own network stack (own loopback, own routes)
      eth0 10.213.0.{k+1}/24  ──veth──  minipar-v{k}  ──┐
                                                        ├── bridge minipar-br0 10.213.0.254/24
      (the other hosts likewise)  ───────────────────── ┘   (a switch; mpiexec listens here)

A veth pair is a cable: what one end sends the other receives. The bridge is a
switch joining the cables, and its own address is where ``mpiexec`` (in the
machine's ordinary namespace) takes the control connections of the hosts'
launchers. 10.213.0.0/24 is a private range that only these namespaces and the
bridge use: nothing is routed to or from the outside world.

Each cable is limited by a token bucket (``tc qdisc ... tbf rate G``) in both
directions: on eth0 inside the host (what the host sends, its *uplink*) and on
minipar-v{k} (what it receives, its *downlink*). A token bucket lets a packet
leave only when it has tokens, which refill at G bit/s; ``burst`` is the bucket's
size, ``latency`` how long a packet may wait before it is dropped. The qdisc
counts the bytes it let through, which is how a test proves that its traffic
crossed the link (``status()``).

Latency (``latency_us``) needs the ``netem`` qdisc (kernel module sch_netem).
When the kernel lacks it (this project's CI machine does) ``up`` says so on
stderr and builds the links without added delay; a link's latency is then the
veth's own, a few microseconds.

Several clusters can stand side by side: ``MINIPAR_CLUSTER_ID=k`` (1 to 99) gives
cluster k its own names (``minipar{k}-node0``, bridge ``minipar{k}-br0``, subnet
10.213.k.0/24, ``/run/minipar{k}-cluster``); the hostnames stay node0, node1, ...

Needs root and three Debian tools: ``ip`` and ``tc`` (package iproute2) and
``unshare`` (util-linux). ``require_tools()`` names whatever is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def _cluster_id() -> int:
    """``MINIPAR_CLUSTER_ID`` (0 to 99, default 0): several clusters side by side, each its own names."""
    text = os.environ.get("MINIPAR_CLUSTER_ID", "0").strip() or "0"
    if not text.isdigit() or not 0 <= int(text) <= 99:
        raise ValueError(f"MINIPAR_CLUSTER_ID must be an integer from 0 to 99, got {text!r}")
    return int(text)


CLUSTER_ID = _cluster_id()
_TAG = "minipar" if CLUSTER_ID == 0 else f"minipar{CLUSTER_ID}"  # cluster 0 keeps the plain names
NAMESPACE_PREFIX = f"{_TAG}-node"  # host k lives in namespace minipar-node{k}, hostname node{k}
VETH_PREFIX = f"{_TAG}-v"  # the machine's end of host k's cable (at most 15 characters)
BRIDGE = f"{_TAG}-br0"
SUBNET = f"10.213.{CLUSTER_ID}"  # 10.213.0.0/24: used only between these namespaces and the bridge
BRIDGE_ADDRESS = f"{SUBNET}.254"
STATE_DIR = Path(f"/run/{_TAG}-cluster")  # cluster.json (what up was asked) and enter.sh
MAX_HOSTS = 200
TOOLS = {"ip": "iproute2", "tc": "iproute2", "unshare": "util-linux"}


class ClusterUnavailable(RuntimeError):
    """This machine cannot build the cluster (not root, or a tool missing); the message says which."""


@dataclass
class Host:
    """One emulated host as the kernel reports it now."""

    name: str  # node0: its hostname, what MPI.Get_processor_name() returns there
    namespace: str  # minipar-node0
    address: str  # 10.213.0.1
    rate_bits: int | None  # the token bucket's rate, bit/s; None: unlimited
    sent_bytes: int  # bytes its uplink carried (the qdisc's counter when limited, else eth0's)
    received_bytes: int  # bytes its downlink carried


@dataclass
class ClusterStatus:
    """What ``status()`` found: the hosts and what ``up`` was asked for."""

    hosts: list[Host] = field(default_factory=list)
    gbit: float | None = None
    latency_us: float | None = None
    latency_emulated: bool = False

    def table(self) -> str:
        """The hosts, one row each, as ``minipar cluster status`` prints them."""
        rate = "unlimited" if self.gbit is None else f"{self.gbit:g} Gbit/s"
        delay = "none" if not self.latency_us else (
            f"{self.latency_us:g} us" if self.latency_emulated else
            f"{self.latency_us:g} us asked, not emulated (no netem in this kernel)")
        lines = [f"{len(self.hosts)} hosts on bridge {BRIDGE} ({BRIDGE_ADDRESS}); links {rate}, "
                 f"added latency {delay}",
                 f"{'host':<8}{'namespace':<16}{'address':<14}{'rate':>12}{'sent bytes':>16}"
                 f"{'received bytes':>16}"]
        for host in self.hosts:
            shown = "unlimited" if host.rate_bits is None else f"{host.rate_bits / 1e9:g} Gbit/s"
            lines.append(f"{host.name:<8}{host.namespace:<16}{host.address:<14}{shown:>12}"
                         f"{host.sent_bytes:>16,}{host.received_bytes:>16,}")
        return "\n".join(lines)


def require_tools() -> None:
    """Raise ClusterUnavailable naming exactly what is missing: root, or ip / tc / unshare."""
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"the emulated cluster needs root (network namespaces, bridges and qdiscs are root-only); "
            f"this process runs as uid {os.geteuid()}: try sudo")
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items()
               if shutil.which(tool) is None]
    if missing:
        raise ClusterUnavailable("the emulated cluster needs " + ", ".join(missing) + " on PATH")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def namespaces() -> list[str]:
    """The cluster's namespaces that exist now, host 0 first."""
    for attempt in range(5):  # `ip netns list` can fail while another process adds a namespace
        done = _run("ip", "-j", "netns", "list", check=False)
        if done.returncode == 0:
            break
        time.sleep(0.1 * (attempt + 1))
    else:
        raise RuntimeError(f"ip -j netns list failed five times: {done.stderr.strip()}")
    names = [entry["name"] for entry in json.loads(done.stdout.strip() or "[]")]
    ours = [name for name in names if name.startswith(NAMESPACE_PREFIX)
            and name[len(NAMESPACE_PREFIX):].isdigit()]
    return sorted(ours, key=lambda name: int(name[len(NAMESPACE_PREFIX):]))


def _has_netem() -> bool:
    """Whether the kernel has netem: try it on a scratch namespace's loopback."""
    scratch = f"{_TAG}-netem-probe"
    _run("ip", "netns", "add", scratch, check=False)
    try:
        return _run("tc", "-n", scratch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1us",
                    check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", scratch, check=False)


def _limit(namespace: str | None, device: str, gbit: float | None, latency_us: float | None) -> None:
    """Token bucket at ``gbit`` on ``device``'s egress, under a netem delay when latency_us is given."""
    where = ["-n", namespace] if namespace else []
    # burst: the bucket holds 256 KiB (a few TCP segments' worth at 10 Gbit/s: enough for the
    # rate to be reached, small enough that it is the rate and not the bucket that is measured)
    bucket = ["tbf", "rate", f"{gbit}gbit", "burst", "256kb", "latency", "50ms"]
    if latency_us:  # netem delays every packet, then hands it to the token bucket below it
        _run("tc", *where, "qdisc", "add", "dev", device, "root", "handle", "1:", "netem",
             "delay", f"{latency_us}us")
        if gbit is not None:
            _run("tc", *where, "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", *bucket)
    elif gbit is not None:
        _run("tc", *where, "qdisc", "add", "dev", device, "root", *bucket)


ENTER_SCRIPT = """#!/bin/sh
# Written by minipar cluster up. mpiexec -launcher ssh -launcher-exec THIS calls it as
#   enter.sh [-x] minipar-nodeK COMMAND...      (as it would call ssh [-x] HOST COMMAND...)
# and it runs COMMAND inside host K: its network namespace, and a UTS namespace whose
# hostname is nodeK, so that MPI sees another machine. As with ssh, COMMAND is one
# shell line (hydra quotes its words), so it is handed to sh -c.
[ "$1" = "-x" ] && shift
namespace=$1; shift
exec ip netns exec "$namespace" unshare --uts sh -c "hostname ${namespace##*-}; exec $*"
"""


def up(hosts: int, gbit: float | None = None, latency_us: float | None = None) -> ClusterStatus:
    """Build ``hosts`` hosts on a bridge, links at ``gbit`` Gbit/s each way; first tears down leftovers.

    Returns ``status()``. ``latency_us`` adds a netem delay per packet where the
    kernel has netem; where it has not, a line on stderr says so and the links
    get the rate limit only.
    """
    if isinstance(hosts, bool) or not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
        raise ValueError(f"hosts must be an int from 1 to {MAX_HOSTS}, got {hosts!r}")
    for name, value in (("gbit", gbit), ("latency_us", latency_us)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value > 0):
            raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    require_tools()
    down()  # a crashed run's namespaces, links or state must not trip this one
    emulated = bool(latency_us) and _has_netem()
    if latency_us and not emulated:
        print(f"minipar cluster: the kernel has no netem qdisc (sch_netem), so the {latency_us:g} us "
              "latency is not emulated; the links are rate-limited only", file=sys.stderr)
    try:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for k in range(hosts):
            namespace, veth = f"{NAMESPACE_PREFIX}{k}", f"{VETH_PREFIX}{k}"
            _run("ip", "netns", "add", namespace)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _run("ip", "link", "set", veth, "master", BRIDGE, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{SUBNET}.{k + 1}/24", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _limit(namespace, "eth0", gbit, latency_us if emulated else None)  # uplink
            _limit(None, veth, gbit, latency_us if emulated else None)  # downlink
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        enter = STATE_DIR / "enter.sh"
        enter.write_text(ENTER_SCRIPT)
        enter.chmod(0o755)
        (STATE_DIR / "cluster.json").write_text(json.dumps(
            {"hosts": hosts, "gbit": gbit, "latency_us": latency_us, "latency_emulated": emulated}))
    except BaseException:
        down()
        raise
    found = status()
    assert found is not None
    return found


def down() -> list[str]:
    """Remove every namespace, link and file ``up`` made (and any process left in a host); idempotent.

    Returns what it removed (empty when there was nothing).
    """
    require_tools()
    removed = []
    for namespace in namespaces():
        for pid in _run("ip", "netns", "pids", namespace, check=False).stdout.split():
            try:  # a rank a crashed job left behind would keep the namespace in use
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "netns", "del", namespace, check=False)  # also deletes its veth pair
        removed.append(namespace)
    for link in json.loads(_run("ip", "-j", "link", "show", check=False).stdout or "[]"):
        name = link.get("ifname", "")
        if name == BRIDGE or (name.startswith(VETH_PREFIX) and name[len(VETH_PREFIX):].isdigit()):
            _run("ip", "link", "del", name, check=False)
            removed.append(name)
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
        removed.append(str(STATE_DIR))
    return removed


def _egress(namespace: str | None, device: str) -> tuple[int | None, int]:
    """(token-bucket rate in bit/s or None, bytes sent) of ``device``'s egress."""
    where = ["-n", namespace] if namespace else []
    qdiscs = json.loads(_run("tc", *where, "-j", "-s", "qdisc", "show", "dev", device).stdout or "[]")
    for qdisc in qdiscs:
        if qdisc.get("kind") == "tbf":
            return 8 * int(qdisc["options"]["rate"]), int(qdisc["bytes"])  # tc -j gives bytes/s
    links = json.loads(_run("ip", *where, "-j", "-s", "link", "show", "dev", device).stdout)
    return None, int(links[0]["stats64"]["tx"]["bytes"])


def status() -> ClusterStatus | None:
    """The hosts that are up, their addresses, rates and byte counters; None when no cluster is up."""
    require_tools()
    found = namespaces()
    if not found:
        return None
    state_file = STATE_DIR / "cluster.json"
    asked = json.loads(state_file.read_text()) if state_file.exists() else {}
    result = ClusterStatus(gbit=asked.get("gbit"), latency_us=asked.get("latency_us"),
                           latency_emulated=bool(asked.get("latency_emulated")))
    for namespace in found:
        k = int(namespace[len(NAMESPACE_PREFIX):])
        rate, sent = _egress(namespace, "eth0")
        _, received = _egress(None, f"{VETH_PREFIX}{k}")
        result.hosts.append(Host(f"node{k}", namespace, f"{SUBNET}.{k + 1}", rate, sent, received))
    return result
