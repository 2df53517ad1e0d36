"""Who may reach which port, derived from the plan's own NetworkPolicy objects and checked against a
table written here (the table is the spec).

The evaluator below implements the NetworkPolicy API's semantics for the fields the plan uses
(podSelector, namespaceSelector, both in one peer, ports with endPort, policyTypes) and refuses any
other field, so a policy it cannot read fails the test instead of being misread: a connection is
allowed when the source's egress and the destination's ingress both allow it, and a direction no
policy selects a pod for is open. Every (source, destination, port) of the catalogue below is
checked, so anything the table does not list must be denied.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.metrics import WORKER_METRICS_PORT
from contract.wire import (
    AMQP_PORT,
    AMQPS_PORT,
    CLIENT_LABEL,
    DIST_PORT,
    EPMD_PORT,
    MANAGEMENT_PORT,
    NAMESPACE_NAME_LABEL,
    OPS_LABEL,
    PROMETHEUS_PORT,
)
from harness.kube.dataplane import PolicyDataplane
from harness.kube.netpol import parse_network_policy
from harness.kube.objects import load_plan
from tests.conftest import Plan

NS = "ha-celery"
Object = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str | None
    """None: an address outside the cluster."""
    labels: Mapping[str, str]


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    assert not unknown, f"selector fields this evaluator does not implement: {unknown}"
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, pod: Pod) -> bool:
    unknown = set(peer) - {"podSelector", "namespaceSelector"}
    assert not unknown, f"peer fields this evaluator does not implement (ipBlock needs addresses): {unknown}"
    if pod.namespace is None:
        return False
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = pod.namespace == policy_ns
    else:
        in_namespace = _selects(ns_selector, {NAMESPACE_NAME_LABEL: pod.namespace})
    pod_selector = peer.get("podSelector")
    return in_namespace and (pod_selector is None or _selects(pod_selector, pod.labels))


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        unknown = set(entry) - {"port", "endPort", "protocol"}
        assert not unknown, f"port fields this evaluator does not implement: {unknown}"
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        assert isinstance(entry["port"], int), f"named port {entry['port']!r}: the test needs numbers"
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


def _policy_types(spec: Mapping[str, Any]) -> list[str]:
    return list(spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"]))


def _direction_allows(
    policies: Iterable[Object], subject: Pod, other: Pod, port: tuple[int, str], direction: str
) -> bool:
    """Whether the policies that select ``subject`` for ``direction`` admit ``other`` on the port."""
    number, protocol = port
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    applicable = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in _policy_types(p["spec"])
        and _selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not applicable:
        return True
    for policy in applicable:
        unknown = set(policy["spec"]) - {"podSelector", "policyTypes", "ingress", "egress"}
        assert not unknown, f"NetworkPolicy fields this evaluator does not implement: {unknown}"
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers)
            if peer_ok and _port_matches(rule.get("ports"), number, protocol):
                return True
    return False


def reachable(policies: list[Object], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    return _direction_allows(policies, src, dst, (port, protocol), "Egress") and _direction_allows(
        policies, dst, src, (port, protocol), "Ingress"
    )


def _template_labels(objects: list[Object], kind: str, name: str | None = None) -> Mapping[str, str] | None:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    if not found:
        return None
    (obj,) = found
    labels: Mapping[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def load(directory: Path) -> list[Object]:
    return [yaml.safe_load(p.read_text()) for p in sorted((directory / "kubernetes").glob("*.yaml"))]


def catalogue(objects: list[Object], ops_namespace: str) -> dict[str, Pod]:
    """The pods of the plan (labels from its own templates) and the ones around it."""
    pods = {
        "broker": Pod("broker", NS, _template_labels(objects, "StatefulSet") or {}),
        "worker": Pod("worker", NS, _template_labels(objects, "Deployment", "celery-worker") or {}),
        "worker-long": Pod("worker-long", NS, _template_labels(objects, "Deployment", "celery-worker-long") or {}),
        "ops": Pod("ops", ops_namespace, {OPS_LABEL: "true"}),
        "ops-elsewhere": Pod("ops-elsewhere", "default", {OPS_LABEL: "true"}),
        "client-elsewhere": Pod("client-elsewhere", "default", {CLIENT_LABEL: "true"}),
        "plain": Pod("plain", NS, {"app": "something-else"}),
        "gmp": Pod("gmp", "gmp-system", {"app.kubernetes.io/name": "collector"}),
        "keda": Pod("keda", "keda", {"app": "keda-operator"}),
        "prometheus": Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "dns": Pod("dns", "kube-system", {"k8s-app": "kube-dns"}),
        "internet": Pod("internet", None, {}),
    }
    scheduler = _template_labels(objects, "Job")
    if scheduler is not None:
        pods["scheduler"] = Pod("scheduler", NS, scheduler)
    return pods


CLI_PORTS = (35672, 35682)
PORTS: dict[str, list[tuple[int, str]]] = {
    "broker": [
        (p, "TCP")
        for p in (AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT, EPMD_PORT, DIST_PORT, *CLI_PORTS, 35683, 22, 5671)
    ],
    "worker": [(WORKER_METRICS_PORT, "TCP"), (8080, "TCP")],
    "worker-long": [(WORKER_METRICS_PORT, "TCP"), (8080, "TCP")],
    "scheduler": [(WORKER_METRICS_PORT, "TCP"), (8080, "TCP")],
    "dns": [(53, "UDP"), (53, "TCP")],
    "internet": [(443, "TCP")],
    "plain": [(8080, "TCP")],
}
"""Destinations and the ports tried on each (including neighbours of every allowed range)."""
CLIENTS = ("worker", "worker-long", "scheduler")
"""Every lane's workers (dev and prod: default and long) and the scheduler: the same rules."""


def spec_table(
    pods: Iterable[str], *, keda: bool = False, prometheus: bool = False, tls: bool = False
) -> set[tuple[str, str, int, str]]:
    """THE SPEC: every (source, destination, port, protocol) that must be reachable; nothing else may be.

    ``tls`` (brokerTls): AMQP is 5671 only, for clients and for a blank seed probing its peers."""
    scrapers = ["gmp", *(["prometheus"] if prometheus else [])]
    amqp = AMQPS_PORT if tls else AMQP_PORT
    allowed = {(src, "broker", amqp, "TCP") for src in (*CLIENTS, "ops")}
    allowed |= {("ops", "broker", MANAGEMENT_PORT, "TCP")}
    if keda:
        allowed |= {("keda", "broker", MANAGEMENT_PORT, "TCP")}
    allowed |= {(s, "broker", PROMETHEUS_PORT, "TCP") for s in scrapers}
    allowed |= {("broker", "broker", port, "TCP") for port in (amqp, EPMD_PORT, DIST_PORT, *CLI_PORTS)}
    allowed |= {(s, dst, WORKER_METRICS_PORT, "TCP") for s in scrapers for dst in CLIENTS}
    for src in pods:
        # DNS from everyone; the clients' egress stops there and at the broker.
        allowed |= {(src, "dns", 53, "UDP"), (src, "dns", 53, "TCP")}
        if src not in CLIENTS:
            allowed |= {(src, "internet", 443, "TCP"), (src, "plain", 8080, "TCP")}
    return allowed


def derived(objects: list[Object], pods: Mapping[str, Pod]) -> set[tuple[str, str, int, str]]:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert policies, "the plan has no NetworkPolicy"
    return {
        (src, dst, port, protocol)
        for src in pods
        for dst, ports in PORTS.items()
        if dst in pods
        for port, protocol in ports
        if reachable(policies, pods[src], pods[dst], port, protocol)
    }


def _check(objects: list[Object], ops_namespace: str, **variant: bool) -> None:
    pods = catalogue(objects, ops_namespace)
    want = {t for t in spec_table(pods, **variant) if t[0] in pods and t[1] in pods}
    got = derived(objects, pods)
    assert not got - want, f"reachable but not in the table: {sorted(got - want)}"
    assert not want - got, f"in the table but blocked: {sorted(want - got)}"


def test_reachability_of_each_stack_matches_the_table(plan: Plan) -> None:
    objects = load(plan.directory)
    _check(objects, NS, tls=plan.stack == "prod")  # brokerTls is on in prod


VARIANTS: dict[str, tuple[tuple[str, ...], str, dict[str, bool]]] = {
    "keda": (("autoscaling=keda", "autoscalingMaxReplicas=12"), NS, {"keda": True}),
    "prometheus": (("prometheusNamespace=monitoring",), NS, {"prometheus": True}),
    "ops-namespace": (("opsNamespace=ops-tools",), "ops-tools", {}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reachability_follows_the_settings(
    plan_runner: Callable[..., subprocess.CompletedProcess[str]], variant: str
) -> None:
    overrides, ops_namespace, flags = VARIANTS[variant]
    result = plan_runner("dev", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    objects = load(Path(result.stdout.split("-> ")[-1].strip()))
    _check(objects, ops_namespace, **flags)
    if variant == "ops-namespace":
        # The default namespace's ops pods lose their access with the setting.
        pods = {**catalogue(objects, ops_namespace), "ops": Pod("ops", NS, {OPS_LABEL: "true"})}
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        assert not reachable(policies, pods["ops"], pods["broker"], AMQP_PORT)


def test_the_evaluator_reads_namespace_and_pod_selectors_as_the_api_does() -> None:
    """One peer with both selectors is an AND; two peers are an OR; a podSelector alone is this namespace."""
    policy: Object = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "a"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "b"}},
                            "podSelector": {"matchLabels": {"x": "1"}},
                        },
                        {"podSelector": {"matchLabels": {"y": "1"}}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 10, "endPort": 12}],
                }
            ],
        },
    }
    dst = Pod("dst", "a", {})
    cases = [
        (Pod("b-x", "b", {"x": "1"}), True),
        (Pod("c-x", "c", {"x": "1"}), False),
        (Pod("b-plain", "b", {}), False),
        (Pod("a-y", "a", {"y": "1"}), True),
        (Pod("b-y", "b", {"y": "1"}), False),
    ]
    for src, expected in cases:
        assert reachable([policy], src, dst, 11) is expected, src.name
    assert not reachable([policy], Pod("b-x", "b", {"x": "1"}), dst, 13)
    assert reachable([policy], Pod("any", "z", {}), Pod("elsewhere", "z", {}), 1)


def test_the_pod_runner_enforces_every_policy_or_reports_it(plan: Plan) -> None:
    """The pod runner enforces these objects with nftables (harness.kube.dataplane; the same table on
    real packets: tests/integration/kube/test_netpol_dataplane.py). Without nft that must be a
    reported delta per NetworkPolicy (DESIGN.md "Honest emulation"), never a silent skip."""
    raw = [o for o in load(plan.directory) if o["kind"] == "NetworkPolicy"]
    names = {f"NetworkPolicy/{o['metadata']['namespace']}/{o['metadata']['name']}" for o in raw}
    assert names
    assert not [d for d in load_plan(plan.directory).deltas if d.obj.startswith("NetworkPolicy/")]
    policies = [parse_network_policy(o) for o in raw]
    unenforced = PolicyDataplane(lambda *_: None, enforce=False).deltas(policies, "198.18.0.254", [])
    assert {d.obj for d in unenforced if "not enforced" in d.local} == names
    assert PolicyDataplane(lambda *_: None, enforce=True).deltas(policies, "198.18.0.254", []) == []
