"""The reachability table (tests/unit/components/test_network_policy.py) on the pod runner's dataplane.

Every pod of the table's catalogue (the plan's brokers and clients by their template labels, and
the pods around them: ops, scrapers, KEDA, kube-dns, a plain pod, an address outside the cluster)
gets a network namespace on a node, as the pod runner gives one, and the rules
:class:`harness.kube.dataplane.PolicyDataplane` loads there from the plan's own NetworkPolicy
objects. Each destination listens on every port the table tries; each source then connects to all
of them at once with real packets. Every pair the table allows must connect, every other one must
be refused (dropped: a timeout), and the refusals are reported. Seconds, no broker booted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from contract.wire import AMQP_PORT
from harness.kube.dataplane import PodNetwork, PolicyDataplane
from harness.kube.netpol import Endpoint, parse_network_policy
from harness.kube.objects import ContainerPort, load_plan
from harness.runtime import netns
from tests.conftest import Plan
from tests.requires import requires
from tests.unit.components.test_network_policy import NS, PORTS, catalogue, load, spec_table

pytestmark = pytest.mark.integration

PEER_BROKER = "broker-peer"
CONNECT_TIMEOUT_S = 1.0
"""A dropped SYN or datagram is a timeout: long enough for an allowed one on a loaded machine."""

LISTEN = """
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(512); s.sendto(data, peer)
for spec in sys.argv[1:]:
    port, proto = spec.split("/")
    threading.Thread(target=tcp if proto == "TCP" else udp, args=(int(port),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""

PROBE = """
import json, socket, sys, concurrent.futures as cf
timeout = float(sys.argv[1])
def attempt(target):
    ip, port, proto = target
    kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        try:
            if proto == "TCP":
                s.connect((ip, port))
            else:
                s.sendto(b"x", (ip, port)); s.recvfrom(16)
            return True
        except OSError:
            return False
targets = json.loads(sys.argv[2])
with cf.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(attempt, [tuple(t) for t in targets]))))
"""


@pytest.fixture
def layout() -> Iterator[netns.NetnsLayout]:
    requires("root", "nft")
    created = netns.create(1)
    try:
        yield created
    finally:
        netns.destroy(created)


def _in(ns: str, code: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]


def test_every_allowed_pair_connects_and_every_other_is_refused(plan: Plan, layout: netns.NetnsLayout) -> None:
    objects = load(plan.directory)
    pods = catalogue(objects, NS)
    want = {t for t in spec_table(pods, tls=plan.stack == "prod") if t[0] in pods and t[1] in pods}
    kube = load_plan(plan.directory)
    ports = {
        "broker": tuple(p for c in kube.statefulsets[0].template.spec.containers for p in c.ports),
        "worker": tuple(p for c in kube.deployments[0].template.spec.containers for p in c.ports),
        "dns": (ContainerPort(53, "dns", "UDP"), ContainerPort(53, "dns-tcp")),
    }
    # A second broker: the table's broker -> broker pairs are between two broker pods (a pod reaching
    # itself is loopback, which no policy filters).
    pods = {**pods, PEER_BROKER: pods["broker"]}
    slots = {name: k for k, name in enumerate(sorted(pods))}
    for slot in slots.values():
        netns.add_pod(layout, 0, slot)
    networks = [
        PodNetwork(
            Endpoint(name, layout.pod_ip(slots[name]), pod.namespace, pod.labels, ports.get(name, ())),
            layout.pod_ns(slots[name]),
            layout.node_ip(0),
        )
        for name, pod in pods.items()
        if pod.namespace is not None  # "internet": an address no policy can name but by ipBlock
    ]
    events: list[tuple[str, str, str]] = []
    plane = PolicyDataplane(lambda *e: events.append(e), enforce=True)
    namespaces = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in objects if o["kind"] == "Namespace"}
    policies = [parse_network_policy(o) for o in objects if o["kind"] == "NetworkPolicy"]
    plane.sync(policies, networks, namespaces=namespaces)
    assert not [e for e in events if e[1] == "PolicyFailed"], events

    listeners = [
        subprocess.Popen(
            _in(layout.pod_ns(slots[dst]), LISTEN, *(f"{p}/{proto}" for p, proto in dst_ports)),
            stdout=subprocess.PIPE,
            text=True,
        )
        for dst, dst_ports in PORTS.items()
        if dst in pods
    ]
    for listener in listeners:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"

    tried = [(dst, p, proto) for dst, dst_ports in PORTS.items() if dst in pods for p, proto in dst_ports]
    targets = json.dumps([[layout.pod_ip(slots[dst]), p, proto] for dst, p, proto in tried])
    probes = {
        src: subprocess.Popen(
            _in(layout.pod_ns(slots[src]), PROBE, str(CONNECT_TIMEOUT_S), targets), stdout=subprocess.PIPE, text=True
        )
        for src in pods
    }
    got: set[tuple[str, str, int, str]] = set()
    for src, probe in probes.items():
        out, _ = probe.communicate(timeout=60)
        results = json.loads(out)
        for (dst, p, proto), ok in zip(tried, results, strict=True):
            if ok and src != dst and (src != PEER_BROKER or dst == "broker"):
                got.add(("broker" if src == PEER_BROKER else src, dst, p, proto))

    # A pod reaching itself is loopback (never filtered); the table's broker -> broker is the peer's.
    want = {t for t in want if t[0] != t[1] or t[0] == "broker"}
    assert not got - want, f"connected but not in the table: {sorted(got - want)}"
    assert not want - got, f"in the table but refused: {sorted(want - got)}"
    refused = plane.read_denied()
    # Each refusal is reported by the pod whose rules dropped it: the worker's egress stops its
    # packets to the management API before they leave; the broker's ingress stops a stranger's.
    broker, stranger = layout.pod_ip(slots["broker"]), layout.pod_ip(slots["ops-elsewhere"])
    assert f"worker: egress to {broker} (broker) tcp/15672 refused" in refused, refused
    assert f"broker: ingress from {stranger} (ops-elsewhere) tcp/{AMQP_PORT} refused" in refused, refused
