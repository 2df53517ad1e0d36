"""Scheduling: anti-affinity (required/preferred), topology spread (hard/soft), cordon, tie-break."""

from __future__ import annotations

from typing import Any

from harness.kube.objects import PodSpec, parse_statefulset
from harness.kube.schedule import HOSTNAME, ZONE, Node, PlacedPod, schedule
from tests.unit.harness.kube.conftest import pod_spec

LABELS = {"app": "rabbitmq"}
SEL = {"matchLabels": LABELS}


def three_zones() -> list[Node]:
    return [Node.make("node-a", "zone-a"), Node.make("node-b", "zone-b"), Node.make("node-c", "zone-c")]


def spec_with(sts: dict[str, Any], **fields: Any) -> PodSpec:
    pod_spec(sts).update(fields)
    return parse_statefulset(sts).template.spec


def place_all(spec: PodSpec, nodes: list[Node], n: int) -> list[str | None]:
    placed: list[PlacedPod] = []
    out: list[str | None] = []
    for i in range(n):
        p = schedule("ns", LABELS, spec, nodes, placed)
        out.append(p.node)
        if p.node:
            placed.append(PlacedPod(f"rabbitmq-{i}", "ns", LABELS, p.node, spec.anti_affinity_required))
    return out


def required(sts: dict[str, Any]) -> PodSpec:
    term = {"labelSelector": SEL, "topologyKey": HOSTNAME}
    return spec_with(sts, affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})


def test_required_anti_affinity_one_per_node_then_pending(sts: dict[str, Any]) -> None:
    spec = required(sts)
    nodes = three_zones()
    assert place_all(spec, nodes, 3) == ["node-a", "node-b", "node-c"]
    placed = [PlacedPod(f"r-{i}", "ns", LABELS, n.name) for i, n in enumerate(nodes)]
    p = schedule("ns", LABELS, spec, nodes, placed)
    assert p.node is None
    assert p.reason == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."


def test_required_anti_affinity_is_symmetric(sts: dict[str, Any]) -> None:
    spec = required(sts)
    other = parse_statefulset(sts).template.spec.anti_affinity_required
    placed = [PlacedPod("x", "ns", {"app": "other"}, "node-a", other)]
    # The incoming pod's own terms ignore "other", but the placed pod's term matches the newcomer.
    assert schedule("ns", LABELS, PodSpec(containers=spec.containers), three_zones(), placed).node == "node-b"


def test_other_namespace_does_not_count(sts: dict[str, Any]) -> None:
    spec = required(sts)
    placed = [PlacedPod("x", "elsewhere", LABELS, "node-a")]
    assert schedule("ns", LABELS, spec, three_zones(), placed).node == "node-a"


def test_cordoned_node_is_skipped(sts: dict[str, Any]) -> None:
    spec = required(sts)
    nodes = [Node.make("node-a", "zone-a", cordoned=True), Node.make("node-b", "zone-b")]
    assert schedule("ns", LABELS, spec, nodes, []).node == "node-b"
    p = schedule("ns", LABELS, spec, nodes, [PlacedPod("r", "ns", LABELS, "node-b")])
    assert p.node is None
    assert "1 node(s) were unschedulable" in p.reason
    assert "1 node(s) didn't match pod anti-affinity rules" in p.reason


def test_preferred_anti_affinity_spreads_but_never_blocks(sts: dict[str, Any]) -> None:
    term = {"weight": 100, "podAffinityTerm": {"labelSelector": SEL, "topologyKey": HOSTNAME}}
    spec = spec_with(sts, affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}})
    nodes = three_zones()
    assert place_all(spec, nodes, 4) == ["node-a", "node-b", "node-c", "node-a"]
    # Two nodes cordoned: the soft rule yields and doubles up.
    two_down = [Node.make("node-a", "z"), Node.make("node-b", "z", True), Node.make("node-c", "z", True)]
    assert place_all(spec, two_down, 2) == ["node-a", "node-a"]


def test_hard_zone_spread(sts: dict[str, Any]) -> None:
    spread = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": SEL}]
    spec = spec_with(sts, topologySpreadConstraints=spread)
    nodes = [Node.make("a1", "zone-a"), Node.make("a2", "zone-a"), Node.make("b1", "zone-b")]
    placed = [PlacedPod("r-0", "ns", LABELS, "a1")]
    p = schedule("ns", LABELS, spec, nodes, placed)
    assert p.node == "b1"
    # zone-b cordoned still counts as a domain (nodeTaintsPolicy Ignore): zone-a would make skew 2.
    cordoned = [Node.make("a1", "zone-a"), Node.make("a2", "zone-a"), Node.make("b1", "zone-b", cordoned=True)]
    p = schedule("ns", LABELS, spec, cordoned, placed)
    assert p.node is None
    assert "2 node(s) didn't match pod topology spread constraints" in p.reason


def test_hard_spread_missing_label(sts: dict[str, Any]) -> None:
    spread = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": SEL}]
    spec = spec_with(sts, topologySpreadConstraints=spread)
    nodes = [Node("bare", {HOSTNAME: "bare"}), Node.make("z", "zone-a")]
    assert schedule("ns", LABELS, spec, nodes, []).node == "z"


def test_soft_zone_spread_prefers_empty_zone(sts: dict[str, Any]) -> None:
    spread = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": SEL}]
    spec = spec_with(sts, topologySpreadConstraints=spread)
    nodes = [Node.make("a1", "zone-a"), Node.make("a2", "zone-a"), Node.make("b1", "zone-b")]
    placed = [PlacedPod("r-0", "ns", LABELS, "a1")]
    assert schedule("ns", LABELS, spec, nodes, placed).node == "b1"
    only_a = [Node.make("a1", "zone-a"), Node.make("a2", "zone-a"), Node.make("b1", "zone-b", cordoned=True)]
    assert schedule("ns", LABELS, spec, only_a, placed).node == "a1", "soft: still schedules, lowest name"


def test_tie_break_is_lowest_name(sts: dict[str, Any]) -> None:
    spec = parse_statefulset(sts).template.spec
    nodes = [Node.make("node-c", "z"), Node.make("node-a", "z"), Node.make("node-b", "z")]
    assert schedule("ns", LABELS, spec, nodes, []).node == "node-a"


def test_node_selector(sts: dict[str, Any]) -> None:
    spec = spec_with(sts, nodeSelector={ZONE: "zone-c"})
    p = schedule("ns", LABELS, spec, three_zones(), [])
    assert p.node == "node-c"
    assert schedule("ns", LABELS, spec, three_zones()[:2], []).node is None


def test_bound_claim_pins_the_zone(sts: dict[str, Any]) -> None:
    spec = parse_statefulset(sts).template.spec
    nodes = [Node.make("node-a", "zone-a", cordoned=True), Node.make("node-b", "zone-b")]
    p = schedule("ns", LABELS, spec, nodes, [], claim_zones=["zone-a"])
    assert p.node is None
    assert "1 node(s) had volume node affinity conflict" in p.reason
    assert schedule("ns", LABELS, spec, nodes, [], claim_zones=["zone-b"]).node == "node-b"
