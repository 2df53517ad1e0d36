"""The drills of a whole machine, with Kubernetes' node lifecycle (``harness.kube.nodes``) at
:data:`NODE_COMPRESSION` times its speed:

* kill-node: the VM dies with its pods. The Node stays: NotReady after the node-monitor grace, its
  pods evicted at their toleration (the workers' 30 s; the broker tolerates ``unreachable`` for ever
  and would be held anyway: a StatefulSet never recreates a pod whose object still exists), the
  Deployment replaces the workers elsewhere, the broker pod is held on the dead node until GKE
  auto-repair deletes the Node (~10 min), then recreated elsewhere on its claim, and the VM comes back
  empty under the same name.
* node-unreachable: the node's link is cut (the VM and its pods run on, cut off) for longer than the
  workers' toleration, then restored. The evicted workers are replaced elsewhere while cut; once back,
  its kubelet kills the pods the API deleted meanwhile; the broker, never evicted, rejoins as it is.
* delete-node: ``kubectl delete node`` on a running node (GKE auto-repair's first step): the pod GC
  force-deletes its pods, its kubelet kills them, the StatefulSet recreates the broker on another
  node on the same claim (one zone in dev: the disk can attach there); the VM re-registers empty.

The node picked is the queue leader's if it runs no other broker (dev's one-broker-per-node rule is
only preferred: after a node drill two brokers may share a node, and losing both would take the
majority), else another node that runs exactly one broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contract.timing import GKE_AUTO_REPAIR_S, WORKER_NODE_TOLERATION_S
from drill.pod_scenarios import BROKERS, REJOIN_TIMEOUT_S, WORKERS, Mark, queue_leader, running_members
from drill.scenario import Scenario
from harness.kube.cluster import KubeCluster, KubeError
from harness.kube.nodes import Condition, NodeTiming
from harness.runtime.poll import NOT_YET, poll

NODE_COMPRESSION = 30
"""Kubernetes' node timings run this many times faster in the node drills: the 50 s grace is 1.7 s,
the workers' 30 s toleration 1 s, auto-repair's 10 minutes 20 s. Not the alerts' 60: the workers'
toleration would be 0.5 s, two reconcile passes, too coarse to tell NotReady from their eviction."""
UNREACHABLE_FOR_S = 120.0
"""node-unreachable: how long the link is cut (Kubernetes seconds, compressed): longer than the
grace and the workers' toleration together (80 s), shorter than the 300 s default toleration."""
SAMPLE_S = 0.1


@dataclass
class NodeReport:
    """What a node drill saw: the node's conditions and taints, the evictions, the pods held."""

    scenario: str
    node: str = ""
    compression: int = NODE_COMPRESSION
    fault_at: float | None = None
    workers_before: int = 0
    not_ready_at: float | None = None
    node_changes: list[tuple[float, str]] = field(default_factory=list)
    evictions: list[tuple[float, str, str]] = field(default_factory=list)
    """(when, pod, why) of the taint manager's evictions and the pod GC's force deletions."""
    held: dict[str, float] = field(default_factory=dict)
    """StatefulSet pod -> how long (s) it stayed on the lost node, its object kept, not recreated."""
    node_deleted_at: float | None = None
    full_worker_capacity_at: float | None = None
    max_incarnations: dict[str, int] = field(default_factory=dict)
    """Broker pod -> the most copies of it seen alive at once (must be 1)."""
    killed_on_return: list[str] = field(default_factory=list)
    """node-unreachable: pods its kubelet killed once back because the API had deleted them."""

    @property
    def time_to_full_worker_capacity_s(self) -> float | None:
        if self.fault_at is None or self.full_worker_capacity_at is None:
            return None
        return self.full_worker_capacity_at - self.fault_at

    @property
    def at_gke_timing_s(self) -> float | None:
        """The same at Kubernetes' own timing: the compressed grace and toleration given back."""
        measured = self.time_to_full_worker_capacity_s
        if measured is None or self.scenario == Scenario.DELETE_NODE.value:
            return measured
        timing = NodeTiming(factor=self.compression)
        waited = timing.monitor_grace_s + WORKER_NODE_TOLERATION_S
        return measured + waited - timing.scaled(waited)

    def to_json(self, started_at: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - started_at, 3)

        measured = self.time_to_full_worker_capacity_s
        gke = self.at_gke_timing_s
        return {
            "node": self.node,
            "compression": self.compression,
            "fault_at": rel(self.fault_at),
            "not_ready_at": rel(self.not_ready_at),
            "changes": [{"t": rel(t), "change": what} for t, what in self.node_changes],
            "evictions": [{"t": rel(t), "pod": pod, "why": why} for t, pod, why in self.evictions],
            "held_s": {pod: round(s, 3) for pod, s in self.held.items()},
            "node_deleted_at": rel(self.node_deleted_at),
            "workers_before": self.workers_before,
            "time_to_full_worker_capacity_s": None if measured is None else round(measured, 3),
            "time_to_full_worker_capacity_at_gke_timing_s": None if gke is None else round(gke, 1),
            "max_incarnations": self.max_incarnations,
            "killed_on_return": self.killed_on_return,
        }


def ready_workers(cluster: KubeCluster) -> int:
    return sum(1 for p in cluster.pods_of(WORKERS) if p.ready)


class _Watch:
    """Samples in a thread: when the workers are back to full strength, the most copies of each broker alive."""

    def __init__(self, cluster: KubeCluster, report: NodeReport) -> None:
        self.cluster, self.report = cluster, report
        self._stop = threading.Event()
        self._dipped = False
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        report, cluster = self.report, self.cluster
        ready = ready_workers(cluster)
        if ready < report.workers_before:
            self._dipped = True
        elif self._dipped and report.full_worker_capacity_at is None:
            report.full_worker_capacity_at = time.time()
        for pod in cluster.pods_of(BROKERS):
            seen = cluster.incarnations(pod.name)
            report.max_incarnations[pod.name] = max(report.max_incarnations.get(pod.name, 0), seen)


def pick_node(cluster: KubeCluster) -> tuple[str, str]:
    """(node, its broker pod): the queue leader's node if it runs no other broker, else a node with one."""
    per_node: dict[str, list[str]] = {}
    for pod in cluster.pods_of(BROKERS):
        if pod.node is not None:
            per_node.setdefault(pod.node, []).append(pod.name)
    leader = queue_leader(cluster)
    lone = {node: pods[0] for node, pods in per_node.items() if len(pods) == 1}
    node = cluster.node_of(leader)
    if node in lone:
        return node, leader
    if not lone:
        raise KubeError(f"no node runs exactly one broker: {per_node}")
    node = sorted(lone)[0]
    return node, lone[node]


def _wait_member(cluster: KubeCluster, pod: str, what: str) -> None:
    def back() -> bool:
        return cluster.pod(pod).ready and pod in running_members(cluster, avoid=pod)

    poll(back, REJOIN_TIMEOUT_S, what, interval=1.0, not_yet=(KubeError, *NOT_YET))


def _collect(cluster: KubeCluster, report: NodeReport) -> None:
    """The node's changes and the evictions, from the cluster's records."""
    since = report.fault_at or 0.0
    report.node_changes = [(t, what) for t, what in cluster.node_record(report.node).history if t >= since]
    report.evictions = [
        (e.at, e.pod, e.message)
        for e in cluster.events_of()
        if e.at >= since and e.reason in ("TaintManagerEviction", "ForceDeleted")
    ]
    unknown = [t for t, what in report.node_changes if what == f"Ready={Condition.UNKNOWN.value}"]
    report.not_ready_at = unknown[0] if unknown else None


def _start(cluster: KubeCluster, report: NodeReport) -> str:
    cluster.node_timing = NodeTiming(factor=NODE_COMPRESSION)
    node, broker = pick_node(cluster)
    report.node = node
    report.workers_before = ready_workers(cluster)
    return broker


def _condition(cluster: KubeCluster, node: str, condition: Condition, what: str) -> None:
    poll(lambda: cluster.node_record(node).condition is condition, 60, what, interval=SAMPLE_S)


def kill_node(cluster: KubeCluster, mark: Mark, report: NodeReport) -> None:
    broker = _start(cluster, report)
    node, timing = report.node, cluster.node_timing
    workers = [p.name for p in cluster.pods_on(node) if p.owner == WORKERS]
    try:
        with _Watch(cluster, report):
            died = cluster.kill_node(node)
            report.fault_at = mark(f"{node}'s VM died with {', '.join(died)}; its Node object stays")
            if not workers:
                report.full_worker_capacity_at = report.fault_at
            _condition(cluster, node, Condition.UNKNOWN, f"{node} to be NotReady")
            mark(f"{node} NotReady (Ready=Unknown), tainted unreachable (grace {timing.grace:.1f}s)")
            if workers:
                poll(
                    lambda: all(_gone_or_terminating(cluster, w) for w in workers),
                    60,
                    f"the workers on {node} to be evicted",
                    interval=SAMPLE_S,
                )
                mark(f"workers {', '.join(workers)} evicted at their toleration; replaced elsewhere")
            poll(
                lambda: report.full_worker_capacity_at is not None,
                REJOIN_TIMEOUT_S,
                "the workers back to full strength",
                interval=SAMPLE_S,
            )
            mark(f"workers at full strength again ({report.workers_before} Ready)")
            repair_at = report.fault_at + timing.scaled(GKE_AUTO_REPAIR_S)
            time.sleep(max(0.0, repair_at - time.time()))
            _check_held(cluster, broker, node)
            report.held[broker] = time.time() - report.fault_at
            mark(f"{broker} still held on {node} (Terminating or not, never recreated) until auto-repair")
            report.node_deleted_at = time.time()
            cluster.delete_node(node)
            mark(f"auto-repair: Node {node} deleted; the pod GC force-deletes its pods")
            _new_vm(cluster, broker, node, mark, ("auto-repair: a new VM", time.time()))
    finally:
        _collect(cluster, report)
        cluster.node_timing = NodeTiming()


def _gone_or_terminating(cluster: KubeCluster, name: str) -> bool:
    try:
        return cluster.pod(name).terminating
    except KubeError:
        return True


def _check_held(cluster: KubeCluster, broker: str, node: str) -> None:
    pod = cluster.pod(broker)
    if pod.node != node or cluster.incarnations(broker) != 0:
        raise KubeError(f"{broker} was not held on the dead {node}: now on {pod.node}")


def _back_elsewhere(cluster: KubeCluster, broker: str, node: str, mark: Mark) -> None:
    def recreated() -> bool:
        pod = cluster.pod(broker)
        return pod.node not in (None, node) and pod.ready

    poll(recreated, REJOIN_TIMEOUT_S, f"{broker} recreated on another node", interval=0.5, not_yet=(KubeError,))
    mark(f"{broker} recreated on {cluster.node_of(broker)} on its own claim; Ready")


def _new_vm(cluster: KubeCluster, broker: str, node: str, mark: Mark, vm: tuple[str, float]) -> None:
    """After the Node's deletion: the broker recreated elsewhere, then ``vm`` (what registers, and
    when) under the node's name, empty, and every pod Ready again with the broker back in the cluster."""
    what, at = vm
    _back_elsewhere(cluster, broker, node, mark)
    time.sleep(max(0.0, at - time.time()))
    cluster.register_node(node)
    mark(f"{what} registered as {node}, empty")
    cluster.wait_ready(REJOIN_TIMEOUT_S)
    _wait_member(cluster, broker, f"{broker} to be back in the cluster")
    mark("every broker and worker pod Ready again")


def node_unreachable(cluster: KubeCluster, mark: Mark, report: NodeReport) -> None:
    broker = _start(cluster, report)
    node, timing = report.node, cluster.node_timing
    workers = [p.name for p in cluster.pods_on(node) if p.owner == WORKERS]
    restarts = cluster.running(broker).restarts
    try:
        with _Watch(cluster, report):
            cluster.set_node_link(node, up=False)
            report.fault_at = mark(f"{node}'s network cut (its VM and pods run on, cut off)")
            _condition(cluster, node, Condition.UNKNOWN, f"{node} to be NotReady")
            mark(f"{node} NotReady (Ready=Unknown), tainted unreachable")
            time.sleep(max(0.0, report.fault_at + timing.scaled(UNREACHABLE_FOR_S) - time.time()))
            evicted = [w for w in workers if _gone_or_terminating(cluster, w)]
            if evicted != workers:
                raise KubeError(f"workers on {node} not evicted after {UNREACHABLE_FOR_S:.0f}s: {workers}")
            running = [w for w in workers if cluster.incarnations(w)]
            mark(f"evicted while cut, still running there: {', '.join(running) or 'none'}")
            cluster.set_node_link(node, up=True)
            mark(f"{node}'s network back; its kubelet hears of the deletions")
            poll(lambda: not any(cluster.incarnations(w) for w in workers), 120, "the evicted workers to be killed")
            report.killed_on_return = running
            mark(f"its kubelet killed {', '.join(running) or 'nothing'}: no old pod beside its replacement")
            cluster.wait_ready(REJOIN_TIMEOUT_S)
            _wait_member(cluster, broker, f"{broker} to be back in the cluster")
            if cluster.running(broker).restarts != restarts or cluster.node_of(broker) != node:
                raise KubeError(f"{broker} was restarted or moved; it tolerates unreachable and should rejoin as it is")
            mark(f"{broker} never evicted, rejoined without a restart")
    finally:
        _collect(cluster, report)
        cluster.node_timing = NodeTiming()


NODE_BACK_AFTER_S = 10.0
"""delete-node: how long until the recreated VM registers (a managed instance group's recreate is slower)."""


def delete_node(cluster: KubeCluster, mark: Mark, report: NodeReport) -> None:
    broker = _start(cluster, report)
    node = report.node
    try:
        with _Watch(cluster, report):
            bound = cluster.delete_node(node)
            report.fault_at = report.node_deleted_at = mark(f"kubectl delete node {node} (bound: {', '.join(bound)})")
            _new_vm(cluster, broker, node, mark, ("the recreated VM", report.fault_at + NODE_BACK_AFTER_S))
    finally:
        _collect(cluster, report)
        cluster.node_timing = NodeTiming()


NODE_FAULTS: dict[Scenario, Callable[[KubeCluster, Mark, NodeReport], None]] = {
    Scenario.KILL_NODE: kill_node,
    Scenario.NODE_UNREACHABLE: node_unreachable,
    Scenario.DELETE_NODE: delete_node,
}
