"""Place a pod on a local node as kube-scheduler's default profile would, for the plugins the plan uses.

Filters: cordon (NodeUnschedulable), taints (TaintToleration: a NoSchedule or NoExecute taint the
pod does not tolerate, e.g. a NotReady node's ``node.kubernetes.io/unreachable``), nodeSelector,
required pod anti-affinity (both the incoming pod's terms and already placed pods' terms against
it), and hard topology spread (DoNotSchedule).
Scores: preferred pod anti-affinity (InterPodAffinity, weight 2) and soft topology spread
(PodTopologySpread, weight 2), each normalised to 0..100 as kube-scheduler does. Plugins that
only look at capacity or images are not modelled: local nodes are equal for them. Ties go to
the lowest node name (kube-scheduler picks at random) so that runs and tests are reproducible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.kube.objects import AffinityTerm, LabelSelector, PodSpec, SpreadConstraint

HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
MAX_NODE_SCORE = 100
PLUGIN_WEIGHT = 2
"""Weight of both InterPodAffinity and PodTopologySpread in the default scheduler profile."""


@dataclass(frozen=True)
class Node:
    """A local node: its labels carry hostname and zone like a GKE node's."""

    name: str
    labels: Mapping[str, str]
    cordoned: bool = False
    taints: tuple[tuple[str, str], ...] = ()
    """(key, effect) of each taint (set by the node lifecycle, ``harness.kube.nodes``)."""

    @classmethod
    def make(cls, name: str, zone: str, cordoned: bool = False) -> Node:
        """A node labelled with its hostname and zone."""
        return cls(name, {HOSTNAME: name, ZONE: zone}, cordoned)


@dataclass(frozen=True)
class PlacedPod:
    """A pod already bound to a node (running, starting or not yet deleted)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    node: str
    anti_affinity_required: tuple[AffinityTerm, ...] = ()


@dataclass(frozen=True)
class Placement:
    """The chosen node, or None (Pending) with kube-scheduler's style of reason."""

    node: str | None
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)


def _domain_pods(term_matches: Sequence[PlacedPod], nodes: Mapping[str, Node], key: str) -> Counter[str]:
    """Matching pods per value of ``key`` (pods on nodes without the key count nowhere)."""
    counts: Counter[str] = Counter()
    for p in term_matches:
        node = nodes.get(p.node)
        if node is not None and key in node.labels:
            counts[node.labels[key]] += 1
    return counts


@dataclass(frozen=True)
class _Ctx:
    """The pod being placed and the cluster it is placed into."""

    ns: str
    labels: Mapping[str, str]
    spec: PodSpec
    placed: Sequence[PlacedPod]
    nodes: Mapping[str, Node]
    eligible: Sequence[Node]

    def matching(self, selector: LabelSelector) -> list[PlacedPod]:
        return [p for p in self.placed if p.namespace == self.ns and selector.matches(p.labels)]


def _anti_affinity_fails(node: Node, ctx: _Ctx) -> str | None:
    for term in ctx.spec.anti_affinity_required:
        if term.topology_key not in node.labels:
            continue
        if _domain_pods(ctx.matching(term.selector), ctx.nodes, term.topology_key)[node.labels[term.topology_key]]:
            return "didn't match pod anti-affinity rules"
    for p in ctx.placed:
        other = ctx.nodes.get(p.node)
        if other is None or p.namespace != ctx.ns:
            continue
        for term in p.anti_affinity_required:
            key = term.topology_key
            same = key in node.labels and other.labels.get(key) == node.labels[key]
            if same and term.selector.matches(ctx.labels):
                return "didn't satisfy existing pods anti-affinity rules"
    return None


def _spread_counts(c: SpreadConstraint, ctx: _Ctx) -> Counter[str]:
    # Every eligible node's domain counts, even an empty one: that is what makes the skew.
    counts: Counter[str] = Counter({n.labels[c.topology_key]: 0 for n in ctx.eligible if c.topology_key in n.labels})
    for domain, n in _domain_pods(ctx.matching(c.selector), ctx.nodes, c.topology_key).items():
        if domain in counts:
            counts[domain] += n
    return counts


def _spread_fails(node: Node, ctx: _Ctx) -> str | None:
    for c in ctx.spec.spread:
        if not c.hard:
            continue
        if c.topology_key not in node.labels:
            return "didn't match pod topology spread constraints (missing required label)"
        counts = _spread_counts(c, ctx)
        self_match = 1 if c.selector.matches(ctx.labels) else 0
        skew = counts[node.labels[c.topology_key]] + self_match - min(counts.values())
        if skew > c.max_skew:
            return "didn't match pod topology spread constraints"
    return None


def _normalise_anti_affinity(raw: Mapping[str, float]) -> dict[str, float]:
    lo, hi = min(raw.values()), max(raw.values())
    return {n: (MAX_NODE_SCORE * (s - lo) / (hi - lo) if hi > lo else 0.0) for n, s in raw.items()}


def _anti_affinity_scores(candidates: Sequence[Node], ctx: _Ctx) -> dict[str, float]:
    raw: dict[str, float] = {}
    for node in candidates:
        score = 0.0
        for term in ctx.spec.anti_affinity_preferred:
            if term.topology_key not in node.labels:
                continue
            domain = node.labels[term.topology_key]
            score -= term.weight * _domain_pods(ctx.matching(term.selector), ctx.nodes, term.topology_key)[domain]
        raw[node.name] = score
    return _normalise_anti_affinity(raw)


def _spread_scores(candidates: Sequence[Node], ctx: _Ctx) -> dict[str, float]:
    soft = [c for c in ctx.spec.spread if not c.hard]
    raw: dict[str, float] = {}
    for node in candidates:
        if any(c.topology_key not in node.labels for c in soft):
            continue
        score = 0.0
        for c in soft:
            counts = _spread_counts(c, ctx)
            # kube-scheduler weighs a constraint by log(domains + 2): more domains, more say.
            weight = math.log(len(counts) + 2)
            score += counts[node.labels[c.topology_key]] * weight + (c.max_skew - 1)
        raw[node.name] = score
    out = {n.name: 0.0 for n in candidates}
    if not raw:
        return out
    lo, hi = min(raw.values()), max(raw.values())
    for name, s in raw.items():
        out[name] = float(MAX_NODE_SCORE) if hi == 0 else MAX_NODE_SCORE * (hi + lo - s) / hi
    return out


def _untolerated(node: Node, spec: PodSpec) -> str | None:
    for key, effect in node.taints:
        if effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(key, effect) for t in spec.tolerations):
            return key
    return None


def schedule(
    namespace: str,
    labels: Mapping[str, str],
    spec: PodSpec,
    nodes: Sequence[Node],
    placed: Sequence[PlacedPod],
    *,
    claim_zones: Sequence[str] = (),
) -> Placement:
    """Choose a node for a pod with ``labels`` and ``spec``, given the pods already placed.

    ``claim_zones``: zones of the pod's already bound claims. A zonal disk (WaitForFirstConsumer
    binds it where the pod first lands) pins the pod to that zone for good: VolumeBinding's filter.
    """
    by_name = {n.name: n for n in nodes}
    eligible = [n for n in nodes if all(n.labels.get(k) == v for k, v in spec.node_selector.items())]
    ctx = _Ctx(namespace, labels, spec, placed, by_name, eligible)
    reasons: Counter[str] = Counter()
    candidates: list[Node] = []
    for node in sorted(nodes, key=lambda n: n.name):
        reason = None
        if node.cordoned:
            reason = "were unschedulable"
        elif untolerated := _untolerated(node, spec):
            reason = f"had untolerated taint {{{untolerated}: }}"
        elif node not in eligible:
            reason = "didn't match Pod's node affinity/selector"
        elif any(node.labels.get(ZONE) != z for z in claim_zones):
            reason = "had volume node affinity conflict"
        else:
            reason = _anti_affinity_fails(node, ctx) or _spread_fails(node, ctx)
        if reason:
            reasons[reason] += 1
        else:
            candidates.append(node)
    if not candidates:
        detail = ", ".join(f"{n} node(s) {r}" for r, n in sorted(reasons.items()))
        return Placement(None, f"0/{len(nodes)} nodes are available: {detail or 'no nodes'}.")
    aa = _anti_affinity_scores(candidates, ctx)
    ts = _spread_scores(candidates, ctx)
    total = {n.name: PLUGIN_WEIGHT * (aa[n.name] + ts[n.name]) for n in candidates}
    best = max(total.values())
    chosen = min(n for n, s in total.items() if s == best)
    return Placement(chosen, f"scheduled on {chosen} (score {best:.1f})", total)
