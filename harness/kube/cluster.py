"""The local pod runner: the plan's StatefulSets and Deployments run on three local "nodes".

``KubeCluster(plan_dir, workdir, images)`` loads ``<plan_dir>/kubernetes/*.yaml`` (refusing any
field it does not implement, by name), gives the masked Secrets fresh local values, creates the
nodes (network namespaces, labelled with the stack's zones) and then acts as the controllers
and the scheduler of a Kubernetes control plane:

* StatefulSet: pods ``<name>-<ordinal>`` with hostname and subdomain, their claims kept across
  pod deletions (and pinned to the zone they were first used in), a deleted pod recreated under
  the same name once the old one is gone, Parallel pod management;
* Deployment: ``replicas`` pods named ``<name>-<template hash>-<suffix>``, a deleted pod replaced
  at once by a new one; ``scale`` changes ``replicas`` (surplus pods deleted with their grace);
* the scheduler: placement by the pod's anti-affinity and topology spread (``harness.kube.schedule``);
  a pod that fits nowhere stays Pending and is retried;
* the kubelet of each pod: ``harness.kube.kubelet``.

Jobs are not run (the drills publish their own tasks): that, like every other difference
between the plan and what runs, is listed in :attr:`KubeCluster.deltas`.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from harness import netns, processes, rootfs
from harness.cluster import cleanup_stale
from harness.images import Image, image_for
from harness.kube.fields import Delta
from harness.kube.kubelet import Event, PodContext, PodSandbox, PodWorker
from harness.kube.objects import Deployment, Plan, PodSpec, PodTemplate, StatefulSet, load_plan
from harness.kube.rollout import Actions, PodView, deployment_sync, statefulset_sync
from harness.kube.schedule import Node, PlacedPod, schedule
from harness.kube.secretfill import fill_secrets, ha_celery_rules, rules_generator
from harness.kube.volumes import VolumeStore, changed_sources
from harness.kube.workloads import PodAddress, PodState, deployment_pod_name, etc_hosts, eviction_allowed
from harness.poll import poll

log = logging.getLogger(__name__)

RECONCILE_S = 0.25
"""How often the controllers and the scheduler look at the cluster."""
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"


class KubeError(RuntimeError):
    """The pod runner cannot do what was asked; the message says which object and why."""


@dataclass(frozen=True)
class PodAdditions:
    """What a drill adds to the pods of one workload; every item is reported as a delta."""

    env: Mapping[str, str] = field(default_factory=dict)
    binds: Sequence[rootfs.Bind] = ()
    why: str = ""


@dataclass
class DrainReport:
    """What a drain did: which pods it evicted, which a PDB held back (and why), how long it took."""

    node: str
    evicted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    """Pod -> the PDB's refusal the first time it was refused (the drain waited and retried)."""
    seconds: float = 0.0


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
    node: str | None = None
    slot: int | None = None
    worker: PodWorker | None = None
    pending_reason: str = ""

    @property
    def ip(self) -> str | None:
        return None if self.worker is None else self.worker.sandbox.ip

    @property
    def ready(self) -> bool:
        return self.worker is not None and self.worker.ready and not self.worker.terminating

    @property
    def terminating(self) -> bool:
        return self.worker is not None and self.worker.terminating

    def view(self, template: PodTemplate | None) -> PodView:
        """What its controller sees of it, ``template`` being the controller's current one."""
        return PodView(
            self.name, self.template == template, self.ready, self.terminating, self.worker is not None, self.ordinal
        )


def plan_nodes(plan_dir: Path) -> list[Node]:
    """The stack's nodes: ``node_count`` of them spread over the plan's zones (dev: 3 in one
    zone; prod: one in each of three), as settings.ClusterSettings.nodes_per_zone counts them."""
    settings = json.loads((plan_dir / "settings.json").read_text())
    zones: list[str] = settings["cluster"]["node_zones"]
    per_zone = int(settings["cluster"]["node_count"]) // len(zones)
    names = [(zone, f"node-{i}") for i, zone in enumerate(z for z in zones for _ in range(per_zone))]
    return [Node.make(name, zone) for zone, name in names]


class KubeCluster:
    """See the module docstring. Use as a context manager: everything it started stops on exit."""

    def __init__(
        self,
        plan_dir: Path,
        workdir: Path,
        images: Mapping[str, Image],
        *,
        additions: Mapping[str, PodAdditions] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.plan_dir = plan_dir.resolve()
        self.workdir = workdir.resolve()
        self.images = images
        self.additions = dict(additions or {})
        self.rng = rng or random.Random()
        plan = load_plan(self.plan_dir)
        brokers = max((s.replicas for s in plan.statefulsets), default=0)
        self.secret_generator = rules_generator(ha_celery_rules(self.rng, broker_nodes=brokers))
        """Fills masked Secret values, here and for an update's new objects (``harness.kube.apply``)."""
        self.plan: Plan = fill_secrets(plan, self.secret_generator)
        self.nodes = plan_nodes(self.plan_dir)
        self.events: list[Event] = []
        self.pods: dict[str, Pod] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._controllers = threading.Thread(target=self._reconcile_forever, name="controllers", daemon=True)
        self._layout: netns.NetnsLayout | None = None
        self._free_slots: list[int] = []
        self._sticky_slots: dict[str, int] = {}
        """StatefulSet pod name -> its address slot, kept across recreations (see _launch)."""
        self._events_lock = threading.Lock()
        self._recorded: list[int] = []
        self._held: set[str] = set()
        """StatefulSet pods not to recreate for now (their disk is being replaced)."""
        self._scaled: dict[str, int] = {}
        """Deployment -> replicas set by :meth:`scale`, instead of the plan's."""
        self._volumes = VolumeStore(self.workdir / "volumes")
        self._record = processes.GroupRecord(f"kube-{id(self):x}-{uuid.uuid4().hex[:6]}", self.workdir)
        self._events_log = self.workdir / "events.log"
        self._image_refs: dict[str, str] = {}
        self.namespace_prefix = ""
        """The prefix of every network namespace this cluster creates (set by :meth:`start`)."""
        self._check_images()

    # ------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the nodes and start the controllers (pods are created and scheduled from then on)."""
        netns.require_root()
        for leftover in cleanup_stale():
            log.warning("removed what a crashed run left: %s", leftover)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._layout = netns.create(len(self.nodes))
        self.namespace_prefix = f"{netns.PREFIX}{self._layout.tag}-"
        self._free_slots = list(range(240))
        self._controllers.start()

    def stop(self) -> None:
        """Kill every pod at once (as deleting the machines would), remove the nodes. Idempotent."""
        self._stop.set()
        if self._controllers.is_alive():
            self._controllers.join(timeout=10)
        with self._lock:
            workers = [pod.worker for pod in self.pods.values() if pod.worker is not None]
        for worker in workers:
            worker.kill_hard()
        for worker in workers:
            worker.wait(timeout=30)
        if self._layout is not None:
            layout, self._layout = self._layout, None
            netns.destroy(layout)
        self._record.remove()

    def wait_ready(self, timeout: float, owner: str | None = None) -> None:
        """Wait until every workload (or ``owner``, e.g. ``StatefulSet/rabbitmq``) has all its pods Ready."""
        poll(lambda: self._all_ready(owner), timeout, f"{owner or 'every workload'} to be ready", interval=0.5)

    # ------------------------------------------------------------------------------- queries

    def pods_of(self, owner: str) -> list[Pod]:
        with self._lock:
            return sorted((p for p in self.pods.values() if p.owner == owner), key=lambda p: p.name)

    def pod(self, name: str) -> Pod:
        with self._lock:
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

    @property
    def deltas(self) -> list[Delta]:
        """Every difference between the plan and what runs here."""
        out = list(self.plan.deltas)
        for ref, local in sorted(self._image_refs.items()):
            image = self.images[local]
            out.append(Delta("image", ref, ref, f"{image.name}: {image.version}", "; ".join(image.differences)))
        for owner in self._jobs():
            out.append(Delta(owner, "spec", "run the Job", "not run", "the drills publish their own tasks"))
        for sts in self.plan.statefulsets:
            out.append(
                Delta(
                    f"StatefulSet/{sts.name}",
                    "pod IP",
                    "a new address per pod incarnation",
                    "the same address when the pod is recreated",
                    "the drill's publisher runs on the host and connects by address, not by DNS name",
                )
            )
        for workload, extra in sorted(self.additions.items()):
            for key, value in sorted(extra.env.items()):
                out.append(Delta(workload, f"env {key}", "(absent)", value, extra.why))
            for bind in extra.binds:
                out.append(Delta(workload, f"mount {bind.target}", "(absent)", str(bind.source), extra.why))
        return out

    def events_of(self, pod: str | None = None) -> list[Event]:
        with self._events_lock:
            return [e for e in self.events if pod is None or e.pod == pod]

    # ------------------------------------------------------------------------------- actions

    def delete_pod(self, name: str, grace: float | None = None, wait: float | None = None) -> None:
        """``kubectl delete pod``: preStop, SIGTERM, SIGKILL after the grace; its controller recreates it."""
        worker = self.running(name)
        self._event(name, "Deleting", f"grace {'spec' if grace is None else f'{grace:.0f}s'}")
        worker.delete(grace)
        if wait is not None and not worker.wait(wait):
            raise KubeError(f"pod {name!r} still terminating after {wait:.0f}s")

    def scale(self, owner: str, replicas: int) -> None:
        """``kubectl scale deployment/<name> --replicas=N``: its controller creates the missing pods,
        or deletes the surplus ones (unscheduled, then not Ready, then by name), each with its preStop
        hook and grace period. Allowed before :meth:`start` (the pods then start at that count)."""
        kind, _, name = owner.partition("/")
        if kind != "Deployment" or not any(d.name == name for d in self.plan.deployments):
            raise KubeError(f"cannot scale {owner!r}: the pod runner scales the plan's Deployments only")
        if replicas < 0:
            raise KubeError(f"cannot scale {owner} to {replicas} replicas")
        with self._lock:
            self._scaled[owner] = replicas
        self.workdir.mkdir(parents=True, exist_ok=True)  # the events log's, before start() too
        self._event(owner, "Scaled", f"replicas {replicas}")

    def kill_container(self, name: str) -> None:
        """SIGKILL a pod's container: the kubelet restarts it (restartPolicy Always)."""
        self.running(name).kill_container()

    def exec(self, name: str, *command: str, timeout: float = 60) -> str:
        """``kubectl exec``; stdout, or KubeError with the output on a non-zero exit."""
        done = self.running(name).exec(command, timeout)
        if done.returncode != 0:
            raise KubeError(f"`{' '.join(command)}` in {name} exited {done.returncode}: {done.stderr.strip()[-800:]}")
        return done.stdout

    def cordon(self, node: str, cordoned: bool = True) -> None:
        """``kubectl cordon`` (or uncordon): no new pod is placed on ``node``; running pods stay."""
        with self._lock:
            i = self._node_index(node)
            self.nodes[i] = replace(self.nodes[i], cordoned=cordoned)
        self._event(node, "Cordon" if cordoned else "Uncordon", "unschedulable" if cordoned else "schedulable")

    def pods_on(self, node: str) -> list[Pod]:
        with self._lock:
            return sorted((p for p in self.pods.values() if p.node == node), key=lambda p: p.name)

    def kill_node(self, node: str) -> list[str]:
        """The machine vanishes: its link goes, every pod on it dies at the same instant (no preStop,
        no grace), and it takes no pod until :meth:`restore_node`. Its pods' controllers replace them
        where the pods' scheduling rules allow. Returns the pods that died."""
        self.cordon(node)
        self.set_node_link(node, up=False)
        victims = [p for p in self.pods_on(node) if p.worker is not None]
        for pod in victims:
            assert pod.worker is not None
            pod.worker.kill_hard()
        self._event(node, "NodeDown", f"killed {', '.join(p.name for p in victims) or 'no pod'}")
        return [p.name for p in victims]

    def restore_node(self, node: str) -> None:
        """The machine is back (empty): its link returns and it takes pods again."""
        self.set_node_link(node, up=True)
        self.cordon(node, cordoned=False)
        self._event(node, "NodeUp", "back and schedulable")

    def eviction(self, name: str) -> tuple[bool, str]:
        """Would the eviction API let pod ``name`` go now? Checked against every PDB that covers it."""
        with self._lock:
            pod = self.pods.get(name)
            if pod is None:
                return False, f"pod {name} not found"
            states = [self._pod_state(p) for p in self.pods.values()]
            for pdb in self.plan.pdbs:
                if not pdb.selector.matches(pod.template.labels):
                    continue
                allowed, why = eviction_allowed(pdb, states, name, self._replicas(pod.owner))
                if not allowed:
                    return False, why
        return True, "no PDB blocks it"

    def drain(self, node: str, timeout: float) -> DrainReport:
        """``kubectl drain``: cordon, then evict every pod on ``node`` through the PDBs (an eviction a
        PDB refuses is retried every second), each deleted with its preStop hook and grace period."""
        started = time.monotonic()
        self.cordon(node)
        report = DrainReport(node)
        while time.monotonic() - started < timeout:
            left = [p for p in self.pods_on(node) if p.worker is not None]
            if not left:
                break
            for pod in left:
                if pod.terminating:
                    continue
                allowed, why = self.eviction(pod.name)
                if allowed and pod.worker is not None:
                    self._event(pod.name, "Evicted", f"drain of {node}: {why}")
                    report.evicted.append(pod.name)
                    pod.worker.delete()
                elif pod.name not in report.blocked:
                    self._event(pod.name, "EvictionBlocked", why)
                    report.blocked[pod.name] = why
            time.sleep(1.0)
        else:
            raise KubeError(f"drain of {node} not done after {timeout:.0f}s: {[p.name for p in self.pods_on(node)]}")
        report.seconds = time.monotonic() - started
        return report

    def lose_disk(self, name: str, timeout: float = 120) -> None:
        """The pod's disk is gone: kill it, empty its claims while no pod uses them, let the
        StatefulSet recreate it on the blank volume (a deleted PVC, a lost persistent disk)."""
        pod = self.pod(name)
        sts = self._statefulset_of(pod)
        if sts is None or pod.ordinal is None:
            raise KubeError(f"pod {name!r} has no claims: it is not a StatefulSet pod")
        try:
            # Down (and kept down) first: a claim is emptied only while no pod uses it.
            self.power_off(name, timeout)
            for claim in sts.claims:
                self._volumes.wipe_claim(sts.name, claim.name, pod.ordinal)
            self._event(name, "DiskLost", f"claims {[c.name for c in sts.claims]} emptied")
        finally:
            self.power_on(name)

    def freeze(self, name: str, frozen: bool = True) -> None:
        """Stop (SIGSTOP) or resume (SIGCONT) every process of a pod's container: it keeps its
        sockets open and answers nothing, as a paused VM or a stalled disk does."""
        self.running(name).signal_container(signal.SIGSTOP if frozen else signal.SIGCONT)

    def power_off(self, name: str, timeout: float = 60) -> None:
        """Kill a StatefulSet pod outright (no hook, no grace) and keep it down until :meth:`power_on`,
        its disks kept: a machine that lost power."""
        if self._statefulset_of(self.pod(name)) is None:
            raise KubeError(f"pod {name!r} is not a StatefulSet pod: nothing would keep it down")
        with self._lock:
            self._held.add(name)
        self.running(name).kill_hard()
        poll(lambda: name not in self.pods, timeout, f"{name} to be gone", interval=0.2)
        self._event(name, "PowerOff", "down until powered on")

    def power_on(self, name: str) -> None:
        """Let the StatefulSet recreate a pod taken down by :meth:`power_off`, on its own disks."""
        with self._lock:
            self._held.discard(name)
        self._event(name, "PowerOn", "recreated by its StatefulSet")

    def set_node_link(self, node: str, up: bool) -> None:
        """Cut (or restore) a node's network link: its pods reach each other, nothing else reaches them."""
        if self._layout is None:
            raise KubeError("the cluster is not started")
        netns.set_node_link(self._layout, self._node_index(node), up)
        self._event(node, "NodeLink", "link up" if up else "link cut")

    # ------------------------------------------------------------------------------- updates

    def set_objects(self, plan: Plan) -> set[tuple[str, str]]:
        """The API server now holds ``plan``'s objects (one apply step: ``harness.kube.apply`` decides
        them); the controllers act on them from their next sync. The files of every mounted ConfigMap
        and Secret whose data changed are rewritten in the running pods that mount them (subPath mounts
        keep the old file, as in Kubernetes). Returns those objects as (``configMap``|``secret``, name)."""
        with self._lock:
            changed = changed_sources(self.plan, plan)
            # In place: the kubelets' contexts hold these lists (a restarted container reads them anew).
            self.plan.secrets[:] = plan.secrets
            self.plan.configmaps[:] = plan.configmaps
            for f in fields(Plan):
                if f.name not in ("secrets", "configmaps", "deltas"):
                    setattr(self.plan, f.name, list(getattr(plan, f.name)))
            self.plan.deltas.extend(d for d in plan.deltas if d not in self.plan.deltas)
            running = [p for p in self.pods.values() if p.worker is not None and not p.worker.finished]
        for pod in running:
            volumes = self._volumes.refresh_api_volumes(
                pod.template.spec, pod.uid, changed, secrets=self.plan.secrets, configmaps=self.plan.configmaps
            )
            if volumes:
                self._event(pod.name, "VolumesUpdated", f"mounted files of {', '.join(volumes)} rewritten")
        return changed

    def owner_views(self, owner: str, template: PodTemplate | None) -> list[PodView]:
        """What ``owner``'s controller sees of its pods, ``template`` being its current one."""
        return [p.view(template) for p in self.pods_of(owner)]

    def pod_specs(self) -> dict[str, tuple[str, PodSpec]]:
        """Pod uid -> (name, spec) of every pod that runs (an apply's bookkeeping of what each pod has seen)."""
        with self._lock:
            return {p.uid: (p.name, p.template.spec) for p in self.pods.values() if p.worker is not None}

    def delete_claims(self, sts: StatefulSet) -> list[str]:
        """The garbage collector deletes a deleted StatefulSet's claims (``whenDeleted: Delete``) once no
        pod uses them: their disks are gone. Returns the claims deleted."""
        wiped = self._volumes.wipe_claims(sts.name, [c.name for c in sts.claims])
        if wiped:
            self._event(f"StatefulSet/{sts.name}", "ClaimsDeleted", ", ".join(wiped))
        return wiped

    # ------------------------------------------------------------------------------- controllers

    def _reconcile_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception:  # a controller error must be seen, and must not stop the controllers
                log.exception("reconcile failed")
                self._event("controllers", "Error", "reconcile failed (see the log)")
            self._stop.wait(RECONCILE_S)

    def _reconcile(self) -> None:
        with self._lock:
            groups = self._runner_groups()
            if groups != self._recorded:
                self._record.write(groups)
                self._recorded = groups
            self._reap()
            self._collect_garbage()
            for sts in self.plan.statefulsets:
                self._reconcile_statefulset(sts)
            for deploy in self.plan.deployments:
                self._reconcile_deployment(deploy)
            for pod in sorted(self.pods.values(), key=lambda p: p.name):
                if pod.worker is None:
                    self._schedule(pod)

    def _reap(self) -> None:
        gone = [p for p in self.pods.values() if p.worker is not None and p.worker.finished]
        for pod in gone:
            del self.pods[pod.name]
            if self._layout is not None and pod.slot is not None:
                netns.remove_pod(self._layout, pod.slot)
                self._free_slots.append(pod.slot)
            self._volumes.remove_pod(pod.uid)
            self._event(pod.name, "Removed", f"pod gone from {pod.node}")
        if gone:
            self._refresh_hosts()

    def _reconcile_statefulset(self, sts: StatefulSet) -> None:
        # The controller's decisions (creation, scale-down, rolling update): harness.kube.rollout.
        owner = f"StatefulSet/{sts.name}"
        pods = [p for p in self.pods.values() if p.owner == owner]
        prefix = f"{sts.name}-"
        held = frozenset(
            int(n[len(prefix) :]) for n in self._held if n.startswith(prefix) and n[len(prefix) :].isdigit()
        )
        actions = statefulset_sync(sts, [p.view(sts.template) for p in pods], held)
        for ordinal in actions.create_ordinals:
            name = f"{sts.name}-{ordinal}"
            self.pods[name] = Pod(name, sts.namespace, owner, sts.template, ordinal, name, sts.service_name)
            self._event(name, "Created", f"by {owner}")
        self._delete_for(owner, actions)

    def _reconcile_deployment(self, deploy: Deployment) -> None:
        owner = f"Deployment/{deploy.name}"
        pods = [p for p in self.pods.values() if p.owner == owner]
        actions = deployment_sync(deploy, [p.view(deploy.template) for p in pods], self._scaled.get(owner))
        for _ in range(actions.create):
            name = deployment_pod_name(deploy, self.rng)
            self.pods[name] = Pod(name, deploy.namespace, owner, deploy.template)
            self._event(name, "Created", f"by {owner}")
        self._delete_for(owner, actions)

    def _delete_for(self, owner: str, actions: Actions) -> None:
        for name in actions.delete:
            pod = self.pods[name]
            if pod.worker is None:
                del self.pods[name]
                self._event(name, "Removed", f"unscheduled; {owner}: {actions.why}")
            else:
                self._event(name, "Deleting", f"{owner}: {actions.why}; grace from spec")
                pod.worker.delete()

    def _collect_garbage(self) -> None:
        # The garbage collector: pods whose owner is gone are deleted (foreground propagation, as
        # pulumi-kubernetes deletes), each with its preStop hook and grace period.
        owners = {f"StatefulSet/{s.name}" for s in self.plan.statefulsets}
        owners |= {f"Deployment/{d.name}" for d in self.plan.deployments}
        for pod in [p for p in self.pods.values() if p.owner not in owners and not p.terminating]:
            self._delete_for(pod.owner, Actions(delete=(pod.name,), why="owner deleted"))

    def _schedule(self, pod: Pod) -> None:
        sts = self._statefulset_of(pod)
        claims: dict[str, Path] = {}
        zones: list[str] = []
        if sts is not None and pod.ordinal is not None:
            claims = self._volumes.claims_for(sts, pod.ordinal)
            zones = [z for c in sts.claims if (z := self._volumes.claim_zone(sts.name, c.name, pod.ordinal))]
        placed = [
            PlacedPod(p.name, p.namespace, dict(p.template.labels), p.node, p.template.spec.anti_affinity_required)
            for p in self.pods.values()
            if p.node is not None
        ]
        placement = schedule(
            pod.namespace, pod.template.labels, pod.template.spec, self.nodes, placed, claim_zones=zones
        )
        if placement.node is None:
            if placement.reason != pod.pending_reason:
                pod.pending_reason = placement.reason
                self._event(pod.name, "FailedScheduling", placement.reason)
            return
        zone = next(n.labels[ZONE_LABEL] for n in self.nodes if n.name == placement.node)
        if sts is not None and pod.ordinal is not None:
            for claim in sts.claims:
                self._volumes.bind_claim(sts.name, claim.name, pod.ordinal, zone)
        self._launch(pod, placement.node, claims)

    def _slot_for(self, pod: Pod) -> int:
        # A StatefulSet pod keeps its address when it is recreated. On a cluster it gets a new
        # one and clients follow its DNS name; the drill's publisher, on the host, connects by
        # address, so a stable one keeps it pointed at the pod (a reported delta).
        if pod.ordinal is not None and pod.name in self._sticky_slots:
            slot = self._sticky_slots[pod.name]
            self._free_slots.remove(slot)
            return slot
        slot = self._free_slots.pop(0)
        if pod.ordinal is not None:
            self._sticky_slots[pod.name] = slot
        return slot

    def _launch(self, pod: Pod, node: str, claims: Mapping[str, Path]) -> None:
        if self._layout is None:
            return
        slot = self._slot_for(pod)
        try:
            pod_ns = netns.add_pod(self._layout, self._node_index(node), slot)
        except BaseException:
            self._free_slots.append(slot)
            raise
        try:
            self._start_worker(pod, node, slot, pod_ns, claims)
        except BaseException:
            netns.remove_pod(self._layout, slot)
            self._free_slots.append(slot)
            pod.node, pod.slot, pod.worker = None, None, None
            raise

    def _start_worker(self, pod: Pod, node: str, slot: int, pod_ns: str, claims: Mapping[str, Path]) -> None:
        assert self._layout is not None
        pod.node, pod.slot = node, slot
        sandbox = PodSandbox(
            node,
            pod_ns,
            self._layout.pod_ip(slot),
            self.workdir / "pods" / pod.name / pod.uid,
            node_netns=self._layout.node_ns(self._node_index(node)),
            node_ip=self._layout.node_ip(self._node_index(node)),
        )
        extra = self.additions.get(pod.owner.split("/", 1)[1], PodAdditions())
        ctx = PodContext(
            images=self._image,
            secrets=self.plan.secrets,
            configmaps=self.plan.configmaps,
            volumes=self._volumes,
            hosts_file=self._hosts_for,
            on_event=self._on_event,
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
        self._event(pod.name, "Scheduled", f"on {node} ({pod_ns}, {sandbox.ip})")
        self._refresh_hosts()
        pod.worker.start()

    # ------------------------------------------------------------------------------- helpers

    def _pod_state(self, pod: Pod) -> PodState:
        running = pod.worker is not None and not pod.worker.finished
        return PodState(pod.name, dict(pod.template.labels), running, pod.ready, pod.terminating)

    def _replicas(self, owner: str) -> int | None:
        if owner in self._scaled:
            return self._scaled[owner]
        kind, _, name = owner.partition("/")
        workloads = self.plan.statefulsets if kind == "StatefulSet" else self.plan.deployments
        return next((w.replicas for w in workloads if w.name == name), None)

    def _all_ready(self, owner: str | None) -> bool:
        expected = {f"StatefulSet/{s.name}": s.replicas for s in self.plan.statefulsets}
        expected.update({f"Deployment/{d.name}": d.replicas for d in self.plan.deployments})
        expected.update(self._scaled)
        if owner is not None:
            expected = {owner: expected[owner]}
        with self._lock:
            return all(
                sum(1 for p in self.pods.values() if p.owner == name and p.ready) >= count
                for name, count in expected.items()
            )

    def _statefulset_of(self, pod: Pod) -> StatefulSet | None:
        kind, _, name = pod.owner.partition("/")
        return next((s for s in self.plan.statefulsets if s.name == name), None) if kind == "StatefulSet" else None

    def _jobs(self) -> list[str]:
        return [f"Job/{job.name}" for job in self.plan.jobs]

    def _node_index(self, node: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == node:
                return i
        raise KubeError(f"no node {node!r} (nodes: {[n.name for n in self.nodes]})")

    def _check_images(self) -> None:
        workloads = [(f"StatefulSet/{s.name}", s.template) for s in self.plan.statefulsets]
        workloads += [(f"Deployment/{d.name}", d.template) for d in self.plan.deployments]
        for owner, template in workloads:
            if len(template.spec.containers) != 1:
                raise KubeError(
                    f"unsupported: {owner} spec.template.spec.containers has {len(template.spec.containers)} "
                    "entries; the pod runner runs exactly one container per pod"
                )
            for container in (*template.spec.init_containers, *template.spec.containers):
                self._image_refs[container.image] = image_for(container.image, self.images).name

    def _image(self, ref: str) -> Image:
        return self.images[self._image_refs[ref]] if ref in self._image_refs else image_for(ref, self.images)

    def _addresses(self) -> list[PodAddress]:
        return [
            PodAddress(p.name, p.namespace, p.ip, p.hostname, p.subdomain, p.ready)
            for p in self.pods.values()
            if p.ip is not None
        ]

    def _hosts_for(self, name: str) -> str:
        with self._lock:
            pod = self.pods[name]
            me = PodAddress(pod.name, pod.namespace, pod.ip or "", pod.hostname, pod.subdomain, pod.ready)
            return etc_hosts(me, self._addresses(), self.plan.services)

    def _refresh_hosts(self) -> None:
        for pod in self.pods.values():
            if pod.worker is not None and pod.worker.sandbox.directory.exists():
                pod.worker.write_hosts()

    def _runner_groups(self) -> list[int]:
        groups: list[int] = []
        for pod in self.pods.values():
            pid = None if pod.worker is None else pod.worker.runner_pid
            if pid is not None:
                groups.append(pid)
        return groups

    def _on_event(self, event: Event) -> None:
        # Its own lock: a pod worker reporting must never wait for the controllers (it may be
        # counting down a grace period).
        with self._events_lock:
            self.events.append(event)
            with self._events_log.open("a") as out:
                out.write(f"{event.at:.3f} {event.pod} {event.reason}: {event.message}\n")
        log.info("%s %s: %s", event.pod, event.reason, event.message)

    def _event(self, subject: str, reason: str, message: str) -> None:
        self._on_event(Event(time.time(), subject, reason, message))
