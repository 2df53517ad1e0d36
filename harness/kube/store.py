"""The API server's records of the running cluster: pods, nodes, claims, events.

What the controllers, the kubectl-like commands and the faults share, as Kubernetes' own share the
API server's objects (a controller reads them through client-go's ``cache.Store``). One re-entrant
lock guards the pods and nodes; the events have a lock of their own, so a pod worker reporting
never waits for the controllers (it may be counting down a grace period).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.kube.kubelet import Event, PodWorker
from harness.kube.nodes import NodeRecord, NodeTiming
from harness.kube.objects import Plan, PodSpec, PodTemplate, StatefulSet
from harness.kube.rollout import PodView
from harness.kube.schedule import Node
from harness.kube.volumes import VolumeStore, changed_sources
from harness.kube.workloads import PodState
from harness.runtime import netns

log = logging.getLogger(__name__)


class KubeError(RuntimeError):
    """The pod runner cannot do what was asked; the message says which object and why."""


@dataclass
class Pod:
    """The API server's record of one pod."""

    name: str
    namespace: str
    owner: str
    """``StatefulSet/<name>`` or ``Deployment/<name>``."""
    template: PodTemplate
    ordinal: int | None = None
    hostname: str = ""
    subdomain: str = ""
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.monotonic)
    """When the API created it (``metadata.creationTimestamp``): the ReplicaSet deletes newer pods first."""
    node: str | None = None
    slot: int | None = None
    worker: PodWorker | None = None
    pending_reason: str = ""
    lost: bool = False
    """Its node's kubelet no longer reports: the API keeps the last status it heard (``lost_ready``,
    ``deletion_requested``), whatever the processes do (dead with the VM, or running cut off)."""
    lost_ready: bool = False
    deletion_requested: bool = False
    """A deletion the API accepted while the kubelet could not hear it (Terminating until it can)."""

    @property
    def ip(self) -> str | None:
        return None if self.worker is None else self.worker.sandbox.ip

    @property
    def ready(self) -> bool:
        if self.lost:
            return self.lost_ready and not self.deletion_requested
        return self.worker is not None and self.worker.ready and not self.worker.terminating

    @property
    def terminating(self) -> bool:
        if self.lost:
            return self.deletion_requested
        return self.deletion_requested or (self.worker is not None and self.worker.terminating)

    def lose(self) -> None:
        """Its kubelet stops reporting: freeze what the API knows of it."""
        if not self.lost:
            self.lost_ready, self.deletion_requested = self.ready, self.terminating
            self.lost = True

    def view(self, template: PodTemplate | None) -> PodView:
        """What its controller sees of it, ``template`` being the controller's current one."""
        return PodView(
            self.name,
            self.template == template,
            self.ready,
            self.terminating,
            self.worker is not None,
            self.ordinal,
            self.created,
        )


class Store:
    """The records: the plan's objects, the nodes, the pods, the claims (``volumes``) and the events.

    ``scaled`` is the Deployments' ``spec.replicas`` as ``kubectl scale`` set it; ``held`` the
    StatefulSet pods a fault keeps down (their controller does not recreate them); ``layout`` the
    nodes' network once the cluster started.
    """

    def __init__(self, plan: Plan, nodes: list[Node], volumes: VolumeStore, events_log: Path) -> None:
        self.plan = plan
        self.nodes = nodes
        self.volumes = volumes
        self.pods: dict[str, Pod] = {}
        self.events: list[Event] = []
        self.lock = threading.RLock()
        self.layout: netns.NetnsLayout | None = None
        self.held: set[str] = set()
        """StatefulSet pods not to recreate for now (their disk is being replaced)."""
        self.scaled: dict[str, int] = {}
        """Deployment -> replicas set by ``kubectl scale``, instead of the plan's."""
        now = time.time()
        self.node_records: dict[str, NodeRecord] = {n.name: NodeRecord(n.name, now) for n in nodes}
        """Each node as its machine and the API server know it (``harness.kube.nodes``)."""
        self.node_timing = NodeTiming()
        """Kubernetes' node timings; a drill may compress them (``NodeTiming(factor=...)``)."""
        self.orphans: list[Pod] = []
        """Pods force-deleted from the API whose processes may still run (their node was cut off):
        the kubelet kills them when it hears of it; until then their claims stay attached."""
        self._events_lock = threading.Lock()
        self.events_log = events_log

    # ------------------------------------------------------------------------------- pods and nodes

    def pods_of(self, owner: str) -> list[Pod]:
        with self.lock:
            return sorted((p for p in self.pods.values() if p.owner == owner), key=lambda p: p.name)

    def lose_pods_on(self, node: str) -> None:
        """Its kubelet stopped reporting: the API keeps what it last heard of each pod on ``node``."""
        with self.lock:
            for pod in self.pods.values():
                if pod.node == node:
                    pod.lose()

    def node_record(self, node: str) -> NodeRecord:
        record = self.node_records.get(node)
        if record is None:
            raise KubeError(f"no node {node!r} (nodes: {sorted(self.node_records)})")
        return record

    def pods_on(self, node: str) -> list[Pod]:
        with self.lock:
            return sorted((p for p in self.pods.values() if p.node == node), key=lambda p: p.name)

    def pod(self, name: str) -> Pod:
        with self.lock:
            found = self.pods.get(name)
        if found is None:
            raise KubeError(f"no pod {name!r} (pods: {sorted(self.pods)})")
        return found

    def running(self, name: str) -> PodWorker:
        """The worker of a scheduled pod, or KubeError."""
        worker = self.pod(name).worker
        if worker is None:
            raise KubeError(f"pod {name!r} is not scheduled: {self.pod(name).pending_reason}")
        return worker

    def node_of(self, name: str) -> str:
        node = self.pod(name).node
        if node is None:
            raise KubeError(f"pod {name!r} is not scheduled")
        return node

    def node_index(self, node: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == node:
                return i
        raise KubeError(f"no node {node!r} (nodes: {[n.name for n in self.nodes]})")

    def statefulset_of(self, pod: Pod) -> StatefulSet | None:
        kind, _, name = pod.owner.partition("/")
        return next((s for s in self.plan.statefulsets if s.name == name), None) if kind == "StatefulSet" else None

    def pod_state(self, pod: Pod) -> PodState:
        running = pod.worker is not None and not pod.worker.finished
        return PodState(pod.name, dict(pod.template.labels), running, pod.ready, pod.terminating)

    def replicas(self, owner: str) -> int | None:
        if owner in self.scaled:
            return self.scaled[owner]
        kind, _, name = owner.partition("/")
        workloads = self.plan.statefulsets if kind == "StatefulSet" else self.plan.deployments
        return next((w.replicas for w in workloads if w.name == name), None)

    def all_ready(self, owner: str | None) -> bool:
        expected = {f"StatefulSet/{s.name}": s.replicas for s in self.plan.statefulsets}
        expected.update({f"Deployment/{d.name}": d.replicas for d in self.plan.deployments})
        expected.update(self.scaled)
        if owner is not None:
            expected = {owner: expected[owner]}
        with self.lock:
            return all(
                sum(1 for p in self.pods.values() if p.owner == name and p.ready) >= count
                for name, count in expected.items()
            )

    # ------------------------------------------------------------------------------- updates

    def set_objects(self, plan: Plan) -> tuple[set[tuple[str, str]], list[Pod]]:
        """The API server now holds ``plan``'s objects; the controllers act on them from their next
        sync. Returns the ConfigMaps and Secrets whose data changed, as (``configMap``|``secret``, name),
        and the pods running now (whose mounted files of those the kubelet then rewrites)."""
        with self.lock:
            changed = changed_sources(self.plan, plan)
            # In place: the kubelets' contexts hold these lists (a restarted container reads them anew).
            self.plan.secrets[:] = plan.secrets
            self.plan.configmaps[:] = plan.configmaps
            for f in fields(Plan):
                if f.name not in ("secrets", "configmaps", "deltas"):
                    setattr(self.plan, f.name, list(getattr(plan, f.name)))
            self.plan.deltas.extend(d for d in plan.deltas if d not in self.plan.deltas)
            running = [p for p in self.pods.values() if p.worker is not None and not p.worker.finished]
        return changed, running

    def owner_views(self, owner: str, template: PodTemplate | None) -> list[PodView]:
        """What ``owner``'s controller sees of its pods, ``template`` being its current one."""
        return [p.view(template) for p in self.pods_of(owner)]

    def pod_specs(self) -> dict[str, tuple[str, PodSpec]]:
        """Pod uid -> (name, spec) of every pod that runs (an apply's bookkeeping of what each pod has seen)."""
        with self.lock:
            return {p.uid: (p.name, p.template.spec) for p in self.pods.values() if p.worker is not None}

    # ------------------------------------------------------------------------------- events

    def events_of(self, pod: str | None = None) -> list[Event]:
        with self._events_lock:
            return [e for e in self.events if pod is None or e.pod == pod]

    def on_event(self, event: Event) -> None:
        # Its own lock: a pod worker reporting must never wait for the controllers (it may be
        # counting down a grace period).
        with self._events_lock:
            self.events.append(event)
            with self.events_log.open("a") as out:
                out.write(f"{event.at:.3f} {event.pod} {event.reason}: {event.message}\n")
        log.info("%s %s: %s", event.pod, event.reason, event.message)

    def event(self, subject: str, reason: str, message: str) -> None:
        self.on_event(Event(time.time(), subject, reason, message))
