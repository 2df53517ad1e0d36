"""The control plane's loop: the workload controllers and the scheduler, over the store's records.

The workload controllers' decisions are pure functions in :mod:`harness.kube.rollout`.

Every ``RECONCILE_S`` (one pass, under the store's lock):

0. the node lifecycle (``harness.kube.node_control``): the kubelets' reports, NotReady and its
   taints, the taint manager's evictions, the pod GC's force deletions;
1. reap: a pod whose containers ended for good leaves the records, its address and volumes freed;
2. the garbage collector: pods whose StatefulSet or Deployment is gone are deleted, with their grace;
3. the StatefulSet controller (kubernetes ``pkg/controller/statefulset``, ``stateful_set_control.go``):
   pods ``<name>-<ordinal>`` with hostname and subdomain, a deleted pod recreated under the same name
   once the old one is gone (unless a fault holds it down), condemned ordinals deleted, a changed
   template rolled per ``updateStrategy``;
4. the Deployment controller (``pkg/controller/deployment`` and ``pkg/controller/replicaset``):
   ``replicas`` pods (``kubectl scale``'s count if set), surplus ones deleted in the ReplicaSet
   controller's order, a changed template rolled per ``strategy``;
5. the scheduler (``pkg/scheduler``, ``schedule_one.go``): each Pending pod placed by
   :func:`harness.kube.schedule.schedule`, its claims bound to the node's zone, then launched on
   the node: a network namespace (the CNI's part) with a new address per pod, and a
   :class:`~harness.kube.kubelet.PodWorker`;
6. the cluster DNS: the records of the Services and the pods now (:func:`harness.kube.dns.cluster_records`)
   served by :class:`~harness.kube.dns_server.ClusterDns` when they changed.

A new workload behaviour is one more ``_reconcile_*`` step called from :meth:`Controllers.reconcile`,
reading and writing the store as these do.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.kube import dns_server
from harness.kube.dataplane import HostPeer, PolicyDataplane
from harness.kube.dns import cluster_records
from harness.kube.dns_server import ClusterDns
from harness.kube.kubelet import PodContext, PodSandbox, PodWorker
from harness.kube.node_control import reconcile_nodes
from harness.kube.objects import Deployment, StatefulSet
from harness.kube.rollout import Actions, deployment_sync, statefulset_sync
from harness.kube.schedule import ZONE, Node, PlacedPod, schedule
from harness.kube.store import Pod, Store
from harness.kube.workloads import PodAddress, deployment_pod_name, etc_hosts
from harness.runtime import netns, processes, rootfs
from harness.runtime.images import Image

log = logging.getLogger(__name__)

RECONCILE_S = 0.25
"""How often the controllers and the scheduler look at the cluster."""


@dataclass(frozen=True)
class PodAdditions:
    """What a drill adds to the pods of one workload; every item is reported as a delta."""

    env: Mapping[str, str] = field(default_factory=dict)
    binds: Sequence[rootfs.Bind] = ()
    why: str = ""


class Controllers:
    """The loop of the module docstring, on a thread of its own between :meth:`start` and :meth:`stop`.

    ``image`` resolves a container's image reference; ``additions`` (workload name -> what the
    drill adds to its pods) is read at each pod's launch, so a change applies to the pods launched
    after it; ``record`` lists the pods' process groups for a later run's cleanup; ``dns`` is the
    cluster DNS server (started with the nodes, before this loop).
    """

    def __init__(
        self,
        store: Store,
        *,
        image: Callable[[str], Image],
        additions: dict[str, PodAdditions],
        rng: random.Random,
        record: processes.GroupRecord,
        pods_dir: Path,
        dns: ClusterDns,
        dataplane: PolicyDataplane | None = None,
        host_peers: list[HostPeer] | None = None,
    ) -> None:
        self.store = store
        self.dns = dns
        self.additions = additions
        self.dataplane = dataplane
        self.host_peers: list[HostPeer] = host_peers if host_peers is not None else []
        """Pod identities the host's address carries in the NetworkPolicies (read at every pass)."""
        self._image = image
        self._rng = rng
        self._record = record
        self._pods_dir = pods_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_forever, name="controllers", daemon=True)
        self._free_slots: list[int] = []
        self._recorded: list[int] = []

    def start(self) -> None:
        """Start the loop (the store's ``layout`` is set: pods are launched on its nodes)."""
        self._free_slots = list(range(netns.POD_SLOTS))
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (the pods keep running). Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _reconcile_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # a controller error must be seen, and must not stop the controllers
                log.exception("reconcile failed")
                self.store.event("controllers", "Error", "reconcile failed (see the log)")
            self._stop.wait(RECONCILE_S)

    def reconcile(self) -> None:
        """One pass of every controller, then of the scheduler."""
        store = self.store
        with store.lock:
            groups = self._runner_groups()
            if groups != self._recorded:
                self._record.write(groups)
                self._recorded = groups
            reconcile_nodes(store)
            self._reap()
            self._collect_garbage()
            for sts in store.plan.statefulsets:
                self._reconcile_statefulset(sts)
            for deploy in store.plan.deployments:
                self._reconcile_deployment(deploy)
            for pod in sorted(store.pods.values(), key=lambda p: p.name):
                if pod.worker is None:
                    self._schedule(pod)
            self.dns.publish(cluster_records(store.plan.services, self._addresses()))
            self._sync_policies()

    # ------------------------------------------------------------------------------- controllers

    def _reap(self) -> None:
        # A pod on a node that does not report is not reaped: the API does not hear that it ended.
        store = self.store
        gone = [p for p in store.pods.values() if p.worker is not None and p.worker.finished and not p.lost]
        for pod in gone:
            del store.pods[pod.name]
            self._free(pod)
            store.event(pod.name, "Removed", f"pod gone from {pod.node}")
        ended = [p for p in store.orphans if p.worker is not None and p.worker.finished]
        for pod in ended:
            store.orphans.remove(pod)
            self._free(pod)
            store.event(pod.name, "OrphanGone", f"force-deleted pod's processes ended on {pod.node}")

    def _free(self, pod: Pod) -> None:
        store = self.store
        if store.layout is not None and pod.slot is not None:
            netns.remove_pod(store.layout, pod.slot)
            self._free_slots.append(pod.slot)
        store.volumes.remove_pod(pod.uid)

    def _reconcile_statefulset(self, sts: StatefulSet) -> None:
        # The controller's decisions (creation, scale-down, rolling update): harness.kube.rollout.
        store = self.store
        owner = f"StatefulSet/{sts.name}"
        pods = [p for p in store.pods.values() if p.owner == owner]
        prefix = f"{sts.name}-"
        held = frozenset(
            int(n[len(prefix) :]) for n in store.held if n.startswith(prefix) and n[len(prefix) :].isdigit()
        )
        actions = statefulset_sync(sts, [p.view(sts.template) for p in pods], held)
        for ordinal in actions.create_ordinals:
            name = f"{sts.name}-{ordinal}"
            store.pods[name] = Pod(name, sts.namespace, owner, sts.template, ordinal, name, sts.service_name)
            store.event(name, "Created", f"by {owner}")
        self._delete_for(owner, actions)

    def _reconcile_deployment(self, deploy: Deployment) -> None:
        store = self.store
        owner = f"Deployment/{deploy.name}"
        pods = [p for p in store.pods.values() if p.owner == owner]
        actions = deployment_sync(deploy, [p.view(deploy.template) for p in pods], store.scaled.get(owner))
        for _ in range(actions.create):
            name = deployment_pod_name(deploy, self._rng)
            store.pods[name] = Pod(name, deploy.namespace, owner, deploy.template)
            store.event(name, "Created", f"by {owner}")
        self._delete_for(owner, actions)

    def _delete_for(self, owner: str, actions: Actions) -> None:
        store = self.store
        for name in actions.delete:
            pod = store.pods[name]
            if pod.worker is None:
                del store.pods[name]
                store.event(name, "Removed", f"unscheduled; {owner}: {actions.why}")
            else:
                store.event(name, "Deleting", f"{owner}: {actions.why}; grace from spec")
                pod.worker.delete()

    def _collect_garbage(self) -> None:
        # The garbage collector: pods whose owner is gone are deleted (foreground propagation, as
        # pulumi-kubernetes deletes), each with its preStop hook and grace period.
        plan = self.store.plan
        owners = {f"StatefulSet/{s.name}" for s in plan.statefulsets}
        owners |= {f"Deployment/{d.name}" for d in plan.deployments}
        for pod in [p for p in self.store.pods.values() if p.owner not in owners and not p.terminating]:
            self._delete_for(pod.owner, Actions(delete=(pod.name,), why="owner deleted"))

    # ------------------------------------------------------------------------------- scheduler

    def _schedule(self, pod: Pod) -> None:
        store = self.store
        sts = store.statefulset_of(pod)
        claims: dict[str, Path] = {}
        zones: list[str] = []
        if sts is not None and pod.ordinal is not None:
            claims = store.volumes.claims_for(sts, pod.ordinal)
            zones = [z for c in sts.claims if (z := store.volumes.claim_zone(sts.name, c.name, pod.ordinal))]
        placed = [
            PlacedPod(p.name, p.namespace, dict(p.template.labels), p.node, p.template.spec.anti_affinity_required)
            for p in store.pods.values()
            if p.node is not None
        ]
        attached = self._attached_elsewhere(pod)
        if attached is not None:
            if attached != pod.pending_reason:
                pod.pending_reason = attached
                store.event(pod.name, "FailedAttachVolume", attached)
            return
        placement = schedule(
            pod.namespace, pod.template.labels, pod.template.spec, self._nodes(), placed, claim_zones=zones
        )
        if placement.node is None:
            if placement.reason != pod.pending_reason:
                pod.pending_reason = placement.reason
                store.event(pod.name, "FailedScheduling", placement.reason)
            return
        zone = next(n.labels[ZONE] for n in store.nodes if n.name == placement.node)
        if sts is not None and pod.ordinal is not None:
            for claim in sts.claims:
                store.volumes.bind_claim(sts.name, claim.name, pod.ordinal, zone)
        self._launch(pod, placement.node, claims)

    def _nodes(self) -> list[Node]:
        # Registered nodes, with their taints. A node whose kubelet stopped reporting takes no pod
        # even before its taints land (a pod bound to it in that window would wait there on a
        # cluster; here it waits unbound: a reported delta).
        out = []
        for node in self.store.nodes:
            record = self.store.node_records[node.name]
            if record.registered:
                cordoned = node.cordoned or not record.reporting
                out.append(replace(node, cordoned=cordoned, taints=record.schedulable_taints()))
        return out

    def _attached_elsewhere(self, pod: Pod) -> str | None:
        # A ReadWriteOnce disk is attached to one node at a time: the claims of a force-deleted pod
        # whose processes still run (its node cut off) stay attached until they end.
        for orphan in self.store.orphans:
            if orphan.owner == pod.owner and orphan.ordinal == pod.ordinal and pod.ordinal is not None:
                return (
                    f"Multi-Attach error: the claims of {pod.name} are still attached to {orphan.node} "
                    "(its old pod was force-deleted and still runs there)"
                )
        return None

    def _launch(self, pod: Pod, node: str, claims: Mapping[str, Path]) -> None:
        layout = self.store.layout
        if layout is None:
            return
        # A new pod gets a new address, as a CNI's IPAM hands them out: a freed slot goes to the
        # back of the list, so a recreated StatefulSet pod comes back elsewhere and its clients
        # find it again by its DNS name. A container restart keeps the pod, hence its address.
        slot = self._free_slots.pop(0)
        try:
            pod_ns = netns.add_pod(layout, self.store.node_index(node), slot)
        except BaseException:
            self._free_slots.append(slot)
            raise
        try:
            self._start_worker(pod, node, slot, pod_ns, claims)
        except BaseException:
            netns.remove_pod(layout, slot)
            self._free_slots.append(slot)
            pod.node, pod.slot, pod.worker = None, None, None
            raise

    def _start_worker(self, pod: Pod, node: str, slot: int, pod_ns: str, claims: Mapping[str, Path]) -> None:
        store = self.store
        assert store.layout is not None
        pod.node, pod.slot = node, slot
        sandbox = PodSandbox(
            node,
            pod_ns,
            store.layout.pod_ip(slot),
            self._pods_dir / pod.name / pod.uid,
            node_netns=store.layout.node_ns(store.node_index(node)),
            node_ip=store.layout.node_ip(store.node_index(node)),
        )
        extra = self.additions.get(pod.owner.split("/", 1)[1], PodAdditions())
        ctx = PodContext(
            images=self._image,
            secrets=store.plan.secrets,
            configmaps=store.plan.configmaps,
            volumes=store.volumes,
            hosts_file=self._hosts_for,
            nameserver=self.dns.address,
            on_event=store.on_event,
            extra_env=extra.env,
            extra_binds=extra.binds,
        )
        pod.worker = PodWorker(
            pod.name,
            namespace=pod.namespace,
            uid=pod.uid,
            template=pod.template,
            sandbox=sandbox,
            ctx=ctx,
            hostname=pod.hostname,
            subdomain=pod.subdomain,
            claims=claims,
        )
        store.event(pod.name, "Scheduled", f"on {node} ({pod_ns}, {sandbox.ip})")
        # Its NetworkPolicy rules before its first container: an isolated pod is never open.
        self._sync_policies()
        pod.worker.start()

    # ------------------------------------------------------------------------------- helpers

    def _sync_policies(self) -> None:
        # Every pass: a pod started, stopped or readdressed changes its peers' rules (harness.kube.dataplane).
        # The cluster DNS stands where kube-system's kube-dns pods stand, the peer the clients' egress
        # admits on port 53 (its own delta is the DNS server's).
        if self.dataplane is None or self.store.layout is None:
            return
        dns = HostPeer(dns_server.NAMESPACE, dns_server.LABELS, "the cluster DNS", ip=self.store.layout.dns_ip)
        self.dataplane.sync_store(self.store, [*self.host_peers, dns])

    def _addresses(self) -> list[PodAddress]:
        return [
            PodAddress(
                p.name, p.namespace, p.ip, p.hostname, p.subdomain, p.ready, dict(p.template.labels), p.terminating
            )
            for p in self.store.pods.values()
            if p.ip is not None
        ]

    def _hosts_for(self, name: str) -> str:
        with self.store.lock:
            pod = self.store.pods[name]
            return etc_hosts(PodAddress(pod.name, pod.namespace, pod.ip or "", pod.hostname, pod.subdomain))

    def _runner_groups(self) -> list[int]:
        groups: list[int] = []
        for pod in self.store.pods.values():
            pid = None if pod.worker is None else pod.worker.runner_pid
            if pid is not None:
                groups.append(pid)
        return groups
