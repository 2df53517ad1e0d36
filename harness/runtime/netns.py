"""Private network namespaces for the local cluster: one per broker node, so a partition is a link.

Layout (``tag`` is unique per cluster, ``X`` a free /24 inside 198.18.0.0/15)::

    hacel-<tag>-n0  br0 198.18.X.1 ─┐            (pods of node 0: hacel-<tag>-p<k>, eth0 198.18.X.(10+k),
    hacel-<tag>-n1  br0 198.18.X.2 ─┼─ br0 in    each a veth port of its node's br0)
    hacel-<tag>-n2  br0 198.18.X.3 ─┘  hacel-<tag>-br ─ "hc<short>" 198.18.X.254 (root ns)
                                                    └─ hacel-<tag>-dns eth0 198.18.X.253 (cluster DNS)

Every node namespace holds a bridge whose uplink (``eth0``) is its port on the hub bridge, so a
node's pods reach each other through their node and everything else through the uplink: cutting
the uplink isolates a whole Kubernetes node, as a machine losing its network does.

Only addresses from 198.18.0.0/15 (RFC 2544 benchmarking space) are used, and the only route
added to the root namespace is the connected /24 of its own veth, so no packet can leave for a
real network. The bridge lives in a namespace of its own, never among the root's interfaces.
The cluster DNS server (``harness.kube.dns_server``) has a namespace of its own on the hub, off
every node: like GKE's kube-dns, a managed add-on that no drill's node fault takes down.

A partition sets the bridge-side port of a node's veth down: the node keeps its address and
loopback (its own CLI still works), its peers and the clients see silence, not resets, which is
what a dead switch port or a lost zone looks like.

The namespace names carry the owning process id, so :func:`cleanup_stale` can remove what a
crashed run left behind without touching a concurrent run's namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.runtime import processes

PREFIX = "hacel-"
TEST_NET = ipaddress.IPv4Network("198.18.0.0/15")
_LOCK_FILE = Path("/run/lock/hacel-netns.lock")
_NS_RE = re.compile(rf"^{PREFIX}(?P<pid>[0-9]+)-(?P<short>[0-9a-f]+)-(?:br|dns|n[0-9]+|p[0-9]+)$")
FIRST_POD_HOST = 10
"""Pods get addresses from .10 up (nodes have .1.., the root namespace .254)."""
DNS_HOST = 253
"""The cluster DNS server's host number; pods get the ones between FIRST_POD_HOST and it."""
POD_SLOTS = DNS_HOST - FIRST_POD_HOST
_IP_TIMEOUT_S = 15.0


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and its stderr."""


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class NetnsLayout:
    """Names and addresses of one cluster's namespaces (pure: creating them is :func:`create`)."""

    owner_pid: int
    short: str
    subnet: ipaddress.IPv4Network
    nodes: int

    @property
    def tag(self) -> str:
        return f"{self.owner_pid}-{self.short}"

    @property
    def bridge_ns(self) -> str:
        return f"{PREFIX}{self.tag}-br"

    def node_ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-n{i}"

    @property
    def dns_ns(self) -> str:
        return f"{PREFIX}{self.tag}-dns"

    @property
    def dns_ip(self) -> str:
        """The cluster DNS server's address (the last one below the root namespace's)."""
        return str(self.subnet.network_address + DNS_HOST)

    def node_ip(self, i: int) -> str:
        return str(self.subnet.network_address + i + 1)

    @property
    def root_ip(self) -> str:
        return str(self.subnet.network_address + 254)

    @property
    def root_if(self) -> str:
        # Interface names are limited to 15 bytes; this one lives in the root namespace.
        return f"hc{self.short}"

    @staticmethod
    def bridge_port(i: int) -> str:
        return f"p{i}"

    def all_ns(self) -> list[str]:
        return [*(self.node_ns(i) for i in range(self.nodes)), self.dns_ns, self.bridge_ns]

    def exec_prefix(self, i: int) -> list[str]:
        """argv prefix that runs a command inside node ``i``'s namespace."""
        return ["ip", "netns", "exec", self.node_ns(i)]

    def pod_ns(self, k: int) -> str:
        return f"{PREFIX}{self.tag}-p{k}"

    def pod_ip(self, k: int) -> str:
        if not 0 <= k < POD_SLOTS:
            raise NetnsError(f"pod slot {k} is outside the {self.subnet} pod range")
        return str(self.subnet.network_address + FIRST_POD_HOST + k)


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    # Two clusters starting at once must not pick the same /24: the root namespace would get
    # two connected routes for it and half the packets would go to the wrong bridge.
    _LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK_FILE.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _used_subnets() -> set[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout
    used: set[ipaddress.IPv4Network] = set()
    for match in re.finditer(r"inet ([0-9.]+)/([0-9]+)", out):
        iface = ipaddress.IPv4Interface(f"{match[1]}/{match[2]}")
        if iface.ip in TEST_NET:
            used.add(ipaddress.IPv4Network(f"{iface.ip}/24", strict=False))
    return used


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root (ip netns add); run the netns drills as root")


def create(nodes: int) -> NetnsLayout:
    """Create the namespaces, bridge and veths for ``nodes`` brokers; return their layout.

    On any failure everything created so far is removed before the error propagates.
    """
    require_root()
    if not 1 <= nodes <= 250:
        raise ValueError(f"nodes must be within [1, 250], got {nodes}")
    with _allocation_lock():
        used = _used_subnets()
        free = next((net for net in TEST_NET.subnets(new_prefix=24) if net not in used), None)
        if free is None:
            raise NetnsError(f"no free /24 left in {TEST_NET}; run harness.runtime.netns.cleanup_stale()")
        layout = NetnsLayout(owner_pid=os.getpid(), short=secrets.token_hex(3), subnet=free, nodes=nodes)
        try:
            _build(layout)
        except BaseException:
            destroy(layout)
            raise
    return layout


def _build(layout: NetnsLayout) -> None:
    br = layout.bridge_ns
    for ns in layout.all_ns():
        _ip("netns", "add", ns)
        _ip("link", "set", "lo", "up", netns=ns)
    _ip("link", "add", "br0", "type", "bridge", netns=br)
    _ip("link", "set", "br0", "up", netns=br)
    for i in range(layout.nodes):
        ns = layout.node_ns(i)
        port = layout.bridge_port(i)
        # Both ends are created directly in their namespaces: no name ever exists in the root ns.
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", br)
        _ip("link", "set", port, "master", "br0", "up", netns=br)
        _ip("link", "add", "br0", "type", "bridge", netns=ns)
        _ip("link", "set", "eth0", "master", "br0", "up", netns=ns)
        _ip("addr", "add", f"{layout.node_ip(i)}/24", "dev", "br0", netns=ns)
        _ip("link", "set", "br0", "up", netns=ns)
    # The cluster DNS server's namespace hangs off the hub, as the root namespace does.
    _ip("link", "add", "eth0", "netns", layout.dns_ns, "type", "veth", "peer", "name", "dns", "netns", br)
    _ip("link", "set", "dns", "master", "br0", "up", netns=br)
    _ip("addr", "add", f"{layout.dns_ip}/24", "dev", "eth0", netns=layout.dns_ns)
    _ip("link", "set", "eth0", "up", netns=layout.dns_ns)
    # The clients (Celery workers, the drills) stay in the root namespace and reach the nodes
    # through this one veth; its /24 connected route is the only route the harness adds.
    _ip("link", "add", layout.root_if, "type", "veth", "peer", "name", "uplink", "netns", br)
    _ip("link", "set", "uplink", "master", "br0", "up", netns=br)
    _ip("addr", "add", f"{layout.root_ip}/24", "dev", layout.root_if)
    _ip("link", "set", layout.root_if, "up")


def add_pod(layout: NetnsLayout, node: int, k: int) -> str:
    """Create pod slot ``k``'s namespace on node ``node`` (eth0 = ``layout.pod_ip(k)``); return its name."""
    ns = layout.pod_ns(k)
    port = f"v{k}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "set", "lo", "up", netns=ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", layout.node_ns(node))
        _ip("link", "set", port, "master", "br0", "up", netns=layout.node_ns(node))
        _ip("addr", "add", f"{layout.pod_ip(k)}/24", "dev", "eth0", netns=ns)
        _ip("link", "set", "eth0", "up", netns=ns)
    except BaseException:
        remove_pod(layout, k)
        raise
    return ns


def remove_pod(layout: NetnsLayout, k: int) -> None:
    """Kill what still runs in pod slot ``k``'s namespace and delete it (its veth goes with it)."""
    ns = layout.pod_ns(k)
    if ns in existing_namespaces():
        _kill_pids(_pids_in(ns))
        _ip("netns", "del", ns, check=False)


def set_node_link(layout: NetnsLayout, i: int, up: bool) -> None:
    """Connect (``up``) or cut off node ``i`` at its bridge port."""
    _ip("link", "set", layout.bridge_port(i), "up" if up else "down", netns=layout.bridge_ns)


def _pids_in(ns: str) -> list[int]:
    proc = _ip("netns", "pids", ns, check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def existing_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def destroy(layout: NetnsLayout, timeout: float = 10.0) -> None:
    """Kill whatever still runs in the namespaces, delete them and the root veth. Idempotent."""
    present = set(existing_namespaces())
    pods = sorted(ns for ns in present if ns.startswith(f"{PREFIX}{layout.tag}-p"))
    for ns in pods:
        _kill_pids(_pids_in(ns))
        _ip("netns", "del", ns, check=False)
    for ns in layout.all_ns():
        if ns in present:
            _kill_pids(_pids_in(ns))
    # Deleting the root end removes its peer too; done explicitly because namespace teardown
    # is asynchronous and the /24 must be free again when this returns.
    _ip("link", "del", layout.root_if, check=False)
    for ns in layout.all_ns():
        if ns in present:
            _ip("netns", "del", ns, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ip("link", "show", layout.root_if, check=False).returncode != 0:
            return
        time.sleep(0.1)
    raise NetnsError(f"{layout.root_if} still exists {timeout}s after deleting {layout.tag}'s namespaces")


def cleanup_stale() -> list[str]:
    """Remove ``hacel-*`` namespaces (and their processes) whose owning process is gone.

    Returns the names removed. Namespaces of a live owner, i.e. a concurrent run, are kept.
    """
    require_root()
    removed: list[str] = []
    stale_shorts: set[str] = set()
    for ns in existing_namespaces():
        match = _NS_RE.match(ns)
        if match is None or processes.pid_alive(int(match["pid"])):
            continue
        _kill_pids(_pids_in(ns))
        _ip("netns", "del", ns, check=False)
        stale_shorts.add(match["short"])
        removed.append(ns)
    for short in stale_shorts:
        _ip("link", "del", f"hc{short}", check=False)
    return removed
