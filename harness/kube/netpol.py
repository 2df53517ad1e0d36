"""NetworkPolicy as the Kubernetes API defines it, compiled to one nftables ruleset per pod (pure).

:func:`parse_network_policy` reads a NetworkPolicy object (already audited by
:mod:`harness.kube.fields`); :func:`compile_pod` turns the policies and the addresses known now
(pods, and what the caller lets stand for a pod) into the ruleset of one pod's network namespace.
Applying it is :mod:`harness.kube.dataplane`'s part.

The semantics, from the API reference and the "Network Policies" concept page:

* a pod is isolated for a direction when a policy of its namespace selects it (``podSelector``)
  and lists that direction in ``policyTypes`` (absent: Ingress, plus Egress when ``egress`` is
  written); what an isolated pod may do is the union of every such policy's rules; a pod no
  policy selects for a direction is not restricted in it;
* a rule's peers (``from``/``to``): ``podSelector`` alone means pods of the policy's namespace,
  ``namespaceSelector`` alone every pod of the matching namespaces, both in one peer the matching
  pods of the matching namespaces, ``ipBlock`` an address range minus its ``except``; no peer
  means every address; no ``ports`` means every port and protocol;
* a port is a number, a range (``endPort``) or a name, resolved against the container ports of
  the destination pod (this pod for ingress, the peer for egress), so a named port matches
  nothing on a pod without it; no ``port`` means every port of the protocol (default TCP);
* a pod cannot block itself (loopback), replies of an allowed connection pass, and traffic to and
  from the node the pod runs on is always allowed (the kubelet's probes come from there);
* only TCP, UDP, SCTP and ICMP are filtered: other protocols are not affected.

A flow a pod's rules refuse is dropped, as GKE Dataplane V2 drops it (the client sees a timeout,
not a reset), and recorded in the ruleset's ``denied`` set, so a run can report what was refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.kube.fields import object_id, refuse
from harness.kube.objects import ContainerPort, LabelSelector, parse_selector

Json = dict[str, Any]
Direction = Literal["Ingress", "Egress"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server sets on every namespace to its name."""
TABLE = "hacel_netpol"
"""The nftables table of the rules (``inet`` family), one per pod network namespace."""
DENIED_SETS: Mapping[Direction, str] = {"Ingress": "denied_in", "Egress": "denied_out"}
"""The dynamic sets that record refused flows, per direction: (peer address, protocol, port)."""
PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})


@dataclass(frozen=True)
class PolicyPort:
    """A ``ports`` entry: ``port`` None means every port of ``protocol``."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class IPBlock:
    """An ``ipBlock``: ``cidr`` minus every ``except`` range."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Peer:
    """A ``from``/``to`` entry: either selectors (one may be None) or an ``ipBlock``."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyRule:
    """An ``ingress``/``egress`` entry; no peers means every address, no ports every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    """A NetworkPolicy with its ``policyTypes`` defaulted as the API server defaults them."""

    name: str
    namespace: str
    pod_selector: LabelSelector
    policy_types: frozenset[Direction]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction == "Ingress" else self.egress


@dataclass(frozen=True)
class Endpoint:
    """An address and the pod identity it carries: a pod, or what a caller lets stand for one
    (a process on the host acting as a pod of ``namespace`` with ``labels``)."""

    name: str
    ip: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()


# ------------------------------------------------------------------------------- parsing


def _port(raw: Json, oid: str, path: str) -> PolicyPort:
    protocol = str(raw.get("protocol", "TCP"))
    if protocol not in PROTOCOLS:
        raise refuse(oid, f"{path}.protocol", protocol)
    port = raw.get("port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    end = raw.get("endPort")
    if end is not None and not isinstance(port, int):
        raise refuse(oid, f"{path}.endPort", end)
    return PolicyPort(protocol, port, None if end is None else int(end))


def _peer(raw: Json) -> Peer:
    block = raw.get("ipBlock")
    if block is not None:
        excepts = tuple(ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or ())
        return Peer(ip_block=IPBlock(ipaddress.ip_network(str(block["cidr"]), strict=False), excepts))
    pods, namespaces = raw.get("podSelector"), raw.get("namespaceSelector")
    return Peer(
        None if pods is None else parse_selector(pods),
        None if namespaces is None else parse_selector(namespaces),
    )


def _rules(raw: Sequence[Json] | None, peers_key: str, oid: str, path: str) -> tuple[PolicyRule, ...]:
    return tuple(
        PolicyRule(
            tuple(_peer(p) for p in rule.get(peers_key) or ()),
            tuple(_port(p, oid, f"{path}[{i}].ports[{j}]") for j, p in enumerate(rule.get("ports") or ())),
        )
        for i, rule in enumerate(raw or ())
    )


def parse_network_policy(obj: Json) -> NetworkPolicy:
    """A NetworkPolicy from its YAML form (already audited by :mod:`harness.kube.fields`)."""
    oid = object_id(obj)
    meta, spec = obj["metadata"], obj.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
    if set(types) - {"Ingress", "Egress"}:
        raise refuse(oid, "spec.policyTypes", types)
    return NetworkPolicy(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace", "default")),
        pod_selector=parse_selector(spec.get("podSelector")),
        policy_types=frozenset(types),
        ingress=_rules(spec.get("ingress"), "from", oid, "spec.ingress"),
        egress=_rules(spec.get("egress"), "to", oid, "spec.egress"),
    )


# ------------------------------------------------------------------------------- selection


def namespace_labels(name: str, declared: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """A namespace's labels: those of its Namespace object, if the plan has one, and its name label."""
    return {**declared.get(name, {}), NAMESPACE_NAME_LABEL: name}


def isolating(policies: Iterable[NetworkPolicy], pod: Endpoint, direction: Direction) -> list[NetworkPolicy]:
    """The policies that select ``pod`` for ``direction`` (none: the pod is not isolated in it)."""
    return [
        p
        for p in policies
        if p.namespace == pod.namespace and direction in p.policy_types and p.pod_selector.matches(pod.labels)
    ]


def _selects(peer: Peer, policy_ns: str, other: Endpoint, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.ip_block is not None:
        return False  # address ranges are matched by address, not by identity (see _block)
    if peer.namespace_selector is None:
        in_namespace = other.namespace == policy_ns
    else:
        in_namespace = peer.namespace_selector.matches(namespace_labels(other.namespace, namespaces))
    return in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(other.labels))


# ------------------------------------------------------------------------------- compiling


def _family(ip: str | IPNetwork) -> str:
    version = ip.version if not isinstance(ip, str) else ipaddress.ip_address(ip).version
    return "ip" if version == 4 else "ip6"


def _port_numbers(port: PolicyPort, owner_ports: Sequence[ContainerPort] | None) -> str | None:
    """The nft port expression of one entry at a destination with ``owner_ports`` ("" for every port;
    None when it is a named port the destination lacks, or the destination is not a known pod)."""
    if port.port is None:
        return ""
    if isinstance(port.port, int):
        return f"{port.port}-{port.end_port}" if port.end_port is not None else str(port.port)
    named = {p.container_port for p in owner_ports or () if p.name == port.port and p.protocol == port.protocol}
    return ", ".join(str(n) for n in sorted(named)) if named else None


def _port_matches(ports: Sequence[PolicyPort], owner_ports: Sequence[ContainerPort] | None) -> list[str]:
    """The nft matches of a rule's ports at a destination with ``owner_ports`` ([""]: any port)."""
    if not ports:
        return [""]
    out: list[str] = []
    for port in ports:
        numbers = _port_numbers(port, owner_ports)
        if numbers is None:
            continue
        proto = port.protocol.lower()
        out.append(f"{proto} dport {{ {numbers} }}" if numbers else f"meta l4proto {proto}")
    return out


def _accept(address: str, match: str, comment: str) -> str:
    return " ".join(part for part in (address, match, "accept", f'comment "{comment}"') if part)


def _addresses(key: str, ips: Iterable[str]) -> list[str]:
    """``ip saddr { ... }`` (and ``ip6 ...``) matches for ``ips``, one per address family."""
    by_family: dict[str, list[str]] = {}
    for ip in ips:
        by_family.setdefault(_family(ip), []).append(ip)
    return [f"{family} {key} {{ {', '.join(sorted(group))} }}" for family, group in sorted(by_family.items())]


def _block(block: IPBlock, key: str) -> str:
    family = _family(block.cidr)
    out = f"{family} {key} {block.cidr}"
    if block.excepts:
        out += f" {family} {key} != {{ {', '.join(str(e) for e in block.excepts)} }}"
    return out


@dataclass(frozen=True)
class _Scope:
    """What one pod's rules are compiled for: the pod, the known addresses, the declared namespaces."""

    pod: Endpoint
    peers: Sequence[Endpoint]
    namespaces: Mapping[str, Mapping[str, str]]


def _rule_lines(policy: NetworkPolicy, index: int, rule: PolicyRule, direction: Direction, scope: _Scope) -> list[str]:
    """One rule's accept lines. Named ports resolve on the pod the connection ends at: this pod for
    ingress, the peer for egress (so an egress named port matches only known pods)."""
    pod, peers = scope.pod, scope.peers
    key = "saddr" if direction == "Ingress" else "daddr"
    comment = f"{policy.namespace}/{policy.name} {direction.lower()}[{index}]"
    ingress = direction == "Ingress"
    own_ports = pod.ports if ingress else None
    lines: list[str] = []
    if not rule.peers:
        lines += [_accept("", m, comment) for m in _port_matches(rule.ports, own_ports)]
        named = tuple(p for p in rule.ports if isinstance(p.port, str))
        if not ingress and named:
            for e in peers:
                lines += [
                    _accept(a, m, comment) for a in _addresses(key, [e.ip]) for m in _port_matches(named, e.ports)
                ]
        return lines
    matched = [e for e in peers if any(_selects(p, policy.namespace, e, scope.namespaces) for p in rule.peers)]
    if ingress:
        lines += [
            _accept(a, m, comment)
            for a in _addresses(key, [e.ip for e in matched])
            for m in _port_matches(rule.ports, own_ports)
        ]
    else:
        for e in matched:
            lines += [
                _accept(a, m, comment) for a in _addresses(key, [e.ip]) for m in _port_matches(rule.ports, e.ports)
            ]
    for peer in rule.peers:
        if peer.ip_block is not None:
            lines += [_accept(_block(peer.ip_block, key), m, comment) for m in _port_matches(rule.ports, own_ports)]
    return lines


def _chain(direction: Direction, policies: Sequence[NetworkPolicy], scope: _Scope, node_ip: str) -> list[str]:
    hook, iface, key = ("input", "iif", "saddr") if direction == "Ingress" else ("output", "oif", "daddr")
    denied = DENIED_SETS[direction]
    peer_addr = "ip saddr" if direction == "Ingress" else "ip daddr"
    lines = [
        f"type filter hook {hook} priority filter; policy accept;",
        f'{iface} "lo" accept comment "a pod cannot block itself"',
        'ct state established,related accept comment "replies of allowed connections"',
    ]
    if node_ip:
        lines.append(f'{_family(node_ip)} {key} {node_ip} accept comment "its node (the kubelet\'s probes)"')
    for policy in policies:
        for i, rule in enumerate(policy.rules(direction)):
            lines += _rule_lines(policy, i, rule, direction, scope)
    lines += [
        f"meta l4proto {{ tcp, udp, sctp }} update @{denied} {{ {peer_addr} . meta l4proto . th dport }}",
        'meta l4proto { tcp, udp, sctp, icmp } drop comment "isolated: not allowed by any policy"',
    ]
    name = direction.lower()
    return [f"\tchain {name} {{", *(f"\t\t{line}" for line in lines), "\t}"]


def compile_pod(
    policies: Sequence[NetworkPolicy],
    pod: Endpoint,
    node_ip: str,
    peers: Sequence[Endpoint],
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The nftables script that gives ``pod`` (whose node has ``node_ip``) its policies' rules.

    ``peers`` are every address known as a pod now (the pod itself may be among them);
    ``namespaces`` the labels of the namespaces the plan declares. The script replaces the table
    atomically (one ``nft -f`` transaction); a pod no policy isolates gets an empty table.
    """
    scope = _Scope(pod, peers, namespaces or {})
    body: list[str] = []
    for direction in ("Ingress", "Egress"):
        selecting = isolating(policies, pod, direction)
        if not selecting:
            continue
        set_type = "ipv4_addr . inet_proto . inet_service"
        body.append(f"\tset {DENIED_SETS[direction]} {{ type {set_type}; flags dynamic; size 1024; }}")
        body += _chain(direction, selecting, scope, node_ip)
    return "\n".join(
        [
            f"add table inet {TABLE}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            *body,
            "}",
            "",
        ]
    )
