"""A node that stops answering, as Kubernetes treats it: pure decisions of (state, now) -> actions.

The pod runner's controllers call :func:`node_lifecycle` every reconcile and apply what it returns
(``harness.kube.controllers``). Sources (kubernetes v1.32):

* the node lifecycle controller (``pkg/controller/nodelifecycle/node_lifecycle_controller.go``,
  ``tryUpdateNodeHealth``, ``monitorNodeHealth``): a node whose kubelet posted no status for
  ``--node-monitor-grace-period`` gets ``Ready=Unknown``; a kubelet that posts ``Ready=False`` makes it
  ``False``. Either way its pods are marked not Ready (``MarkPodsNotReady``) and the node is tainted
  (``doNoExecuteTaintingPass``, and ``TaintNodesByCondition`` for NoSchedule):
  ``node.kubernetes.io/unreachable`` for Unknown, ``node.kubernetes.io/not-ready`` for False, each
  with effect NoExecute and NoSchedule. A node Ready again loses those taints;
* the API server's ``DefaultTolerationSeconds`` admission
  (``plugin/pkg/admission/defaulttolerationseconds``): a pod with no toleration for one of the two
  NoExecute taints gets ``tolerationSeconds: 300`` for it (:func:`admitted`);
* the taint manager (``pkg/controller/tainteviction/taint_eviction.go``): a pod on a node with a
  NoExecute taint it does not tolerate is deleted at once; one it tolerates for ``tolerationSeconds``
  is deleted that long after the taint was added (the smallest of its matching tolerations); one it
  tolerates without a limit stays. Deleted means a graceful deletion through the API: on a node whose
  kubelet is gone the pod stays Terminating, nothing kills it;
* the pod garbage collector (``pkg/controller/podgc/gc_controller.go``): pods bound to a node that
  no longer exists are force-deleted (``gcOrphaned``), and Terminating pods on a NotReady node tainted
  ``node.kubernetes.io/out-of-service`` too (``gcTerminating``, GA in 1.28);
* then the workload controllers: a Deployment's ReplicaSet replaces a Terminating pod at once; a
  StatefulSet recreates ``<name>-<ordinal>`` only once the old pod object is gone (it never runs two
  pods of one identity), so its pod on a lost node is held until the node is deleted, the node is
  tainted out-of-service, or someone force-deletes the pod (``kubectl delete pod --force``).

Every duration is divided by :attr:`NodeTiming.factor` (the drills compress them as they compress
the alert timing): the grace period and each pod's ``tolerationSeconds`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from contract.timing import (
    DEFAULT_TOLERATION_S,
    GKE_AUTO_REPAIR_S,
    NODE_MONITOR_GRACE_S,
    NODE_NOT_READY_TAINT,
    NODE_OUT_OF_SERVICE_TAINT,
    NODE_UNREACHABLE_TAINT,
)
from harness.kube.objects import Toleration

UNREACHABLE = NODE_UNREACHABLE_TAINT
NOT_READY = NODE_NOT_READY_TAINT
OUT_OF_SERVICE = NODE_OUT_OF_SERVICE_TAINT
NO_EXECUTE = "NoExecute"
NO_SCHEDULE = "NoSchedule"


class Condition(StrEnum):
    """The node's ``Ready`` condition."""

    TRUE = "True"
    FALSE = "False"
    """The kubelet says it is not ready (the ``not-ready`` taint)."""
    UNKNOWN = "Unknown"
    """The kubelet has not been heard from for the grace period (the ``unreachable`` taint)."""


@dataclass(frozen=True)
class NodeTiming:
    """Kubernetes' node timings (``contract.timing``), all divided by ``factor``."""

    factor: float = 1.0
    monitor_grace_s: float = NODE_MONITOR_GRACE_S
    default_toleration_s: float = DEFAULT_TOLERATION_S
    auto_repair_s: float = GKE_AUTO_REPAIR_S

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"node timing compression must be >= 1, got {self.factor}")

    def scaled(self, seconds: float) -> float:
        """``seconds`` of Kubernetes time, in this timing's seconds."""
        return seconds / self.factor

    @property
    def grace(self) -> float:
        return self.scaled(self.monitor_grace_s)


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    added_at: float
    """``timeAdded``: the taint manager counts ``tolerationSeconds`` from it."""


@dataclass(frozen=True)
class NodeView:
    """What the control plane knows of a node."""

    name: str
    heard_at: float
    """When its kubelet last posted status (renewed its Lease)."""
    kubelet_ready: bool = True
    """What the kubelet last said of itself (False: it posts ``Ready=False``)."""
    condition: Condition = Condition.TRUE
    taints: tuple[Taint, ...] = ()
    registered: bool = True
    """False once the Node object is deleted (``kubectl delete node``, GKE auto-repair)."""

    def has(self, key: str, effect: str = NO_EXECUTE) -> bool:
        return any(t.key == key and t.effect == effect for t in self.taints)


@dataclass(frozen=True)
class PodOnNode:
    """What the taint manager and the pod GC know of a pod bound to a node."""

    name: str
    node: str
    tolerations: tuple[Toleration, ...]
    """As admitted (:func:`admitted`): the defaults included."""
    terminating: bool = False
    ready: bool = True


@dataclass(frozen=True)
class NodeActions:
    """One pass's decisions."""

    nodes: tuple[NodeView, ...] = ()
    """Nodes whose condition or taints changed, as they are now."""
    not_ready: tuple[str, ...] = ()
    """Pods to mark not Ready (their node is no longer Ready)."""
    evict: tuple[tuple[str, str], ...] = ()
    """(pod, why): graceful deletions by the taint manager."""
    force_delete: tuple[tuple[str, str], ...] = ()
    """(pod, why): force deletions by the pod GC (the object goes at once, whatever runs)."""


def admitted(tolerations: Sequence[Toleration], timing: NodeTiming | None = None) -> tuple[Toleration, ...]:
    """The pod's tolerations after ``DefaultTolerationSeconds``: 300 s for ``not-ready`` and
    ``unreachable`` (NoExecute) unless the pod already tolerates that taint itself."""
    default = int((timing or NodeTiming()).default_toleration_s)
    out = list(tolerations)
    for key in (NOT_READY, UNREACHABLE):
        if not any(t.tolerates(key, NO_EXECUTE) for t in tolerations):
            out.append(Toleration(key, "Exists", "", NO_EXECUTE, default))
    return tuple(out)


def condition_of(node: NodeView, now: float, timing: NodeTiming) -> Condition:
    """The Ready condition the node lifecycle controller would write now."""
    if now - node.heard_at > timing.grace:
        return Condition.UNKNOWN
    return Condition.TRUE if node.kubelet_ready else Condition.FALSE


_CONDITION_TAINT = {Condition.UNKNOWN: UNREACHABLE, Condition.FALSE: NOT_READY}


def _taints_for(node: NodeView, condition: Condition, now: float) -> tuple[Taint, ...]:
    kept = [t for t in node.taints if t.key not in (UNREACHABLE, NOT_READY)]
    key = _CONDITION_TAINT.get(condition)
    if key is not None:
        for effect in (NO_EXECUTE, NO_SCHEDULE):
            old = next((t for t in node.taints if t.key == key and t.effect == effect), None)
            kept.append(old or Taint(key, effect, now))
    return tuple(kept)


def eviction_due(pod: PodOnNode, taints: Sequence[Taint], timing: NodeTiming) -> tuple[float, str] | None:
    """When the taint manager deletes ``pod`` (and why), or None if it tolerates every NoExecute taint for ever."""
    due: tuple[float, str] | None = None
    for taint in (t for t in taints if t.effect == NO_EXECUTE):
        matching = [t for t in pod.tolerations if t.tolerates(taint.key, NO_EXECUTE)]
        if not matching:
            return -math.inf, f"taint {taint.key} not tolerated"
        limits = [t.seconds for t in matching if t.seconds is not None]
        if len(limits) < len(matching):
            continue  # one toleration without a limit: tolerated for ever
        # The taint manager takes the smallest tolerationSeconds; a negative one means 0.
        seconds = max(0, min(limits))
        at = taint.added_at + timing.scaled(seconds)
        if due is None or at < due[0]:
            due = (at, f"tolerated {taint.key} for {seconds}s")
    return due


def node_lifecycle(nodes: Sequence[NodeView], pods: Sequence[PodOnNode], now: float, timing: NodeTiming) -> NodeActions:
    """One pass of the node lifecycle controller, the taint manager and the pod GC."""
    changed: list[NodeView] = []
    current: dict[str, NodeView] = {}
    for node in nodes:
        if not node.registered:
            current[node.name] = node
            continue
        condition = condition_of(node, now, timing)
        view = replace(node, condition=condition, taints=_taints_for(node, condition, now))
        if view != node:
            changed.append(view)
        current[node.name] = view
    not_ready: list[str] = []
    evict: list[tuple[str, str]] = []
    force: list[tuple[str, str]] = []
    for pod in pods:
        on = current.get(pod.node)
        if on is None or not on.registered:
            force.append((pod.name, f"node {pod.node} is gone (pod GC: orphaned)"))
            continue
        if on.condition is not Condition.TRUE and pod.ready:
            not_ready.append(pod.name)
        if pod.terminating:
            if on.has(OUT_OF_SERVICE) and on.condition is not Condition.TRUE:
                force.append((pod.name, f"node {on.name} is out of service (pod GC: terminating)"))
            continue
        due = eviction_due(pod, on.taints, timing)
        if due is not None and now >= due[0]:
            evict.append((pod.name, f"{due[1]} (taint manager)"))
    return NodeActions(tuple(changed), tuple(not_ready), tuple(evict), tuple(force))


@dataclass
class NodeRecord:
    """A node as the machine and the API server both know it (mutable: the pod runner's record)."""

    name: str
    heard_at: float
    vm_up: bool = True
    """The machine runs (its kubelet and its pods' processes)."""
    link_up: bool = True
    """Its network reaches the control plane."""
    registered: bool = True
    kubelet_ready: bool = True
    condition: Condition = Condition.TRUE
    taints: tuple[Taint, ...] = ()
    history: list[tuple[float, str]] = field(default_factory=list)
    """(when, what) of every condition and taint change, for the drills' report."""

    @property
    def reporting(self) -> bool:
        """Its kubelet reaches the API server (it then also hears of its pods' deletions, even when
        its Node object was deleted under it)."""
        return self.vm_up and self.link_up

    def has_taint(self, key: str, effect: str = NO_EXECUTE) -> bool:
        return any(t.key == key and t.effect == effect for t in self.taints)

    def view(self) -> NodeView:
        return NodeView(self.name, self.heard_at, self.kubelet_ready, self.condition, self.taints, self.registered)

    def schedulable_taints(self) -> tuple[tuple[str, str], ...]:
        return tuple((t.key, t.effect) for t in self.taints)


def describe(before: NodeView, after: NodeView) -> list[str]:
    """What changed on a node, in ``kubectl describe node`` words."""
    out: list[str] = []
    if before.condition is not after.condition:
        out.append(f"Ready={after.condition.value}")
    old = {(t.key, t.effect) for t in before.taints}
    new = {(t.key, t.effect) for t in after.taints}
    out += [f"taint {k}:{e} added" for k, e in sorted(new - old)]
    out += [f"taint {k}:{e} removed" for k, e in sorted(old - new)]
    return out
