"""The local pod runner: the plan's StatefulSets and Deployments run on three local "nodes".

``KubeCluster(plan_dir, workdir, images, secret_rules=...)`` loads ``<plan_dir>/kubernetes/*.yaml``
(refusing any field it does not implement, by name), gives the masked Secrets fresh local values
by the caller's rules (the runner knows no project's Secrets), creates the nodes (network
namespaces, labelled with the stack's zones) and then acts as the controllers and the scheduler
of a Kubernetes control plane:

* StatefulSet: pods ``<name>-<ordinal>`` with hostname and subdomain, their claims kept across
  pod deletions (and pinned to the zone they were first used in), a deleted pod recreated under
  the same name once the old one is gone, Parallel pod management;
* Deployment: ``replicas`` pods named ``<name>-<template hash>-<suffix>``, a deleted pod replaced
  at once by a new one; ``scale`` changes ``replicas`` (surplus pods deleted with their grace);
* the scheduler: placement by the pod's anti-affinity and topology spread (``harness.kube.schedule``);
  a pod that fits nowhere stays Pending and is retried;
* the kubelet of each pod: ``harness.kube.kubelet``; a new pod gets a new address;
* the cluster DNS: dnsmasq answering the Services' and the StatefulSet pods' names from the live
  pods (``harness.kube.dns``, ``harness.kube.dns_server``), what every pod's resolv.conf names;
* updates (``set_objects``, as ``harness.kube.apply`` writes an update's objects): a changed
  template rolled per the workload's strategy (``harness.kube.rollout``), the mounted files of a
  changed ConfigMap or Secret rewritten in the running pods, the pods of a deleted workload
  garbage-collected.

``KubeCluster`` is a façade: the records live in ``store`` (the API server's), the loop in
``controllers`` (controllers and scheduler), the operator's commands in ``kubectl`` and the
injected failures in ``faults``; its methods hand each call to one of them.

Jobs are not run (the drills publish their own tasks): that, like every other difference
between the plan and what runs, is listed in :attr:`KubeCluster.deltas`.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Mapping
from pathlib import Path

from harness.kube import faults, kubectl
from harness.kube.controllers import Controllers, PodAdditions
from harness.kube.dataplane import HostPeer, PolicyDataplane
from harness.kube.dns_server import ClusterDns
from harness.kube.fields import EMULATION_DELTAS, Delta
from harness.kube.kubectl import DrainReport
from harness.kube.kubelet import Event, PodWorker
from harness.kube.netpol import parse_network_policy
from harness.kube.nodes import NodeRecord, NodeTiming
from harness.kube.objects import Plan, PodSpec, PodTemplate, StatefulSet, load_plan
from harness.kube.rollout import PodView
from harness.kube.schedule import Node
from harness.kube.secretfill import SecretRules, fill_secrets, rules_generator
from harness.kube.store import KubeError, Pod, Store
from harness.kube.volumes import VolumeStore
from harness.runtime import netns, processes
from harness.runtime.cleanup import cleanup_stale
from harness.runtime.images import Image, image_for
from harness.runtime.poll import poll

__all__ = ["DrainReport", "HostPeer", "KubeCluster", "KubeError", "Pod", "PodAdditions", "plan_nodes"]

log = logging.getLogger(__name__)


NODE_DELTAS = (
    Delta(
        "Node",
        "timing",
        "Kubernetes' node-monitor grace, tolerationSeconds, GKE auto-repair",
        "the same, divided by the drill's compression factor (report: node.compression)",
        "a drill lasts seconds, not the ten minutes auto-repair takes",
    ),
    Delta(
        "Node",
        "binding during the grace period",
        "a pod may be bound to a dead node until its taints land, and waits there",
        "a node whose kubelet does not report takes no pod",
        "the local kubelet of a dead node cannot hold a pod that never runs",
    ),
    Delta(
        "Node",
        "a machine that boots again",
        "its kubelet restarts the containers of the pods still bound to it",
        "their controllers recreate them (new pods, same names for a StatefulSet)",
        "a local pod's processes are not kept across a node's restart",
    ),
    Delta(
        "PersistentVolumeClaim",
        "detach from a lost node",
        "force-detached after 6 min (maxWaitForUnmountDuration) or at once when out-of-service",
        "attached until the old pod's processes end (at once when its machine is dead)",
        "a claim is a host directory: nothing can yank it from a running process",
    ),
)
"""What the node lifecycle here does not reproduce (``harness.kube.nodes``)."""


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
        secret_rules: SecretRules,
        additions: Mapping[str, PodAdditions] | None = None,
        host_peers: list[HostPeer] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.plan_dir = plan_dir.resolve()
        self.workdir = workdir.resolve()
        self.images = images
        self.rng = rng or random.Random()
        plan = load_plan(self.plan_dir)
        self.secret_generator = rules_generator(secret_rules(plan, self.rng))
        """Fills masked Secret values, here and for an update's new objects (``harness.kube.apply``)."""
        self.plan: Plan = fill_secrets(plan, self.secret_generator)
        self._store = Store(
            self.plan, plan_nodes(self.plan_dir), VolumeStore(self.workdir / "volumes"), self.workdir / "events.log"
        )
        self._record = processes.GroupRecord(f"kube-{id(self):x}-{uuid.uuid4().hex[:6]}", self.workdir)
        self._image_refs: dict[str, str] = {}
        self._dataplane = PolicyDataplane(self._store.event)
        self._controllers = Controllers(
            self._store,
            image=self._image,
            additions=dict(additions or {}),
            rng=self.rng,
            record=self._record,
            pods_dir=self.workdir / "pods",
            dataplane=self._dataplane,
            host_peers=list(host_peers or ()),
            dns=ClusterDns(self.workdir / "dns"),
        )
        self.namespace_prefix = ""
        """The prefix of every network namespace this cluster creates (set by :meth:`start`)."""
        self._check_images()

    @property
    def additions(self) -> dict[str, PodAdditions]:
        """Workload name -> what the drill adds to its pods; a change applies to pods launched after it."""
        return self._controllers.additions

    @property
    def host_peers(self) -> list[HostPeer]:
        """The pod identities the host's address carries in the NetworkPolicies (each a reported delta);
        a change applies from the controllers' next pass."""
        return self._controllers.host_peers

    @property
    def host_ip(self) -> str | None:
        """The host's address on the cluster's network (where the drills' clients connect from), once started."""
        return None if self._store.layout is None else self._store.layout.root_ip

    @property
    def nodes(self) -> list[Node]:
        return self._store.nodes

    @property
    def pods(self) -> dict[str, Pod]:
        return self._store.pods

    @property
    def events(self) -> list[Event]:
        return self._store.events

    @property
    def dns(self) -> ClusterDns:
        """The cluster DNS server (its ``address`` once started)."""
        return self._controllers.dns

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
        layout = netns.create(len(self.nodes))
        self._store.layout = layout
        self.namespace_prefix = f"{netns.PREFIX}{layout.tag}-"
        try:
            self._controllers.dns.start(layout)
        except BaseException:
            self.stop()  # a failed start has no __exit__: the namespaces go now
            raise
        self._controllers.start()
        self._dataplane.start()

    def stop(self) -> None:
        """Kill every pod at once (as deleting the machines would), remove the nodes. Idempotent."""
        self._controllers.stop()
        with self._store.lock:
            workers = [pod.worker for pod in self.pods.values() if pod.worker is not None]
        for worker in workers:
            worker.kill_hard()
        for worker in workers:
            worker.wait(timeout=30)
        self._dataplane.stop()
        self._controllers.dns.stop()
        if self._store.layout is not None:
            layout, self._store.layout = self._store.layout, None
            netns.destroy(layout)
        self._record.remove()

    def wait_ready(self, timeout: float, owner: str | None = None) -> None:
        """Wait until every workload (or ``owner``, e.g. ``StatefulSet/rabbitmq``) has all its pods Ready."""
        poll(lambda: self._store.all_ready(owner), timeout, f"{owner or 'every workload'} to be ready", interval=0.5)

    # ------------------------------------------------------------------------------- queries

    def pods_of(self, owner: str) -> list[Pod]:
        return self._store.pods_of(owner)

    def pods_on(self, node: str) -> list[Pod]:
        return self._store.pods_on(node)

    def pod(self, name: str) -> Pod:
        return self._store.pod(name)

    def running(self, name: str) -> PodWorker:
        """The worker of a scheduled pod, or KubeError."""
        return self._store.running(name)

    def node_of(self, name: str) -> str:
        return self._store.node_of(name)

    def events_of(self, pod: str | None = None) -> list[Event]:
        return self._store.events_of(pod)

    @property
    def deltas(self) -> list[Delta]:
        """Every difference between the plan and what runs here."""
        out = [*self.plan.deltas, *EMULATION_DELTAS]
        policies = [parse_network_policy(o) for o in self.plan.network_policies]
        host = self._store.layout.root_ip if self._store.layout is not None else "of the host"
        out += self._dataplane.deltas(policies, host, self.host_peers)
        for ref, local in sorted(self._image_refs.items()):
            image = self.images[local]
            out.append(Delta("image", ref, ref, f"{image.name}: {image.version}", "; ".join(image.differences)))
        for owner in self._jobs():
            out.append(Delta(owner, "spec", "run the Job", "not run", "the drills publish their own tasks"))
        out.extend(NODE_DELTAS)
        for workload, extra in sorted(self.additions.items()):
            for key, value in sorted(extra.env.items()):
                out.append(Delta(workload, f"env {key}", "(absent)", value, extra.why))
            for bind in extra.binds:
                out.append(Delta(workload, f"mount {bind.target}", "(absent)", str(bind.source), extra.why))
        return out

    # ------------------------------------------------------------------------------- kubectl

    def delete_pod(self, name: str, grace: float | None = None, wait: float | None = None) -> None:
        """``kubectl delete pod`` (:func:`harness.kube.kubectl.delete_pod`)."""
        kubectl.delete_pod(self._store, name, grace, wait)

    def scale(self, owner: str, replicas: int) -> None:
        """``kubectl scale`` (:func:`harness.kube.kubectl.scale`); allowed before :meth:`start`."""
        kubectl.scale(self._store, owner, replicas)

    def exec(self, name: str, *command: str, timeout: float = 60) -> str:
        """``kubectl exec`` (:func:`harness.kube.kubectl.exec_in`): stdout, or KubeError."""
        return kubectl.exec_in(self._store, name, *command, timeout=timeout)

    def cordon(self, node: str, cordoned: bool = True) -> None:
        """``kubectl cordon`` or uncordon (:func:`harness.kube.kubectl.cordon`)."""
        kubectl.cordon(self._store, node, cordoned)

    def eviction(self, name: str) -> tuple[bool, str]:
        """Would the eviction API let pod ``name`` go now (:func:`harness.kube.kubectl.eviction`)?"""
        return kubectl.eviction(self._store, name)

    def drain(self, node: str, timeout: float) -> DrainReport:
        """``kubectl drain`` through the PDBs (:func:`harness.kube.kubectl.drain`)."""
        return kubectl.drain(self._store, node, timeout)

    # ------------------------------------------------------------------------------- faults

    def kill_container(self, name: str) -> None:
        """SIGKILL a pod's container (:func:`harness.kube.faults.kill_container`)."""
        faults.kill_container(self._store, name)

    def kill_node(self, node: str) -> list[str]:
        """The machine vanishes with its pods (:func:`harness.kube.faults.kill_node`); returns the pods that died."""
        return faults.kill_node(self._store, node)

    def restore_node(self, node: str) -> None:
        """The machine boots again under its Node object (:func:`harness.kube.faults.restore_node`)."""
        faults.restore_node(self._store, node)

    def register_node(self, node: str) -> None:
        """A new machine registers under a deleted node's name (:func:`harness.kube.faults.register_node`)."""
        faults.register_node(self._store, node)

    # ------------------------------------------------------------------------------- nodes

    @property
    def node_timing(self) -> NodeTiming:
        """The node lifecycle's timings (Kubernetes' unless a drill compressed them)."""
        return self._store.node_timing

    @node_timing.setter
    def node_timing(self, timing: NodeTiming) -> None:
        self._store.node_timing = timing

    def node_record(self, node: str) -> NodeRecord:
        """The node's condition, taints and their history (``harness.kube.nodes``)."""
        return self._store.node_record(node)

    def incarnations(self, name: str) -> int:
        """How many copies of pod ``name`` have processes alive now: its record's and any force-deleted
        one's still running (a StatefulSet pod must never have two: two brokers on one claim)."""
        with self._store.lock:
            pods = [self._store.pods.get(name), *(p for p in self._store.orphans if p.name == name)]
            return sum(1 for p in pods if p is not None and p.worker is not None and not p.worker.finished)

    def delete_node(self, node: str) -> list[str]:
        """``kubectl delete node`` (:func:`harness.kube.kubectl.delete_node`); returns the pods bound to it."""
        return kubectl.delete_node(self._store, node)

    def taint_out_of_service(self, node: str) -> None:
        """``kubectl taint node ... out-of-service`` (:func:`harness.kube.kubectl.taint_out_of_service`)."""
        kubectl.taint_out_of_service(self._store, node)

    def force_delete_pod(self, name: str) -> None:
        """``kubectl delete pod --force --grace-period=0`` (:func:`harness.kube.kubectl.force_delete_pod`)."""
        kubectl.force_delete_pod(self._store, name)

    def lose_disk(self, name: str, timeout: float = 120) -> None:
        """A StatefulSet pod comes back on blank claims (:func:`harness.kube.faults.lose_disk`)."""
        faults.lose_disk(self._store, name, timeout)

    def freeze(self, name: str, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) a pod's container (:func:`harness.kube.faults.freeze`)."""
        faults.freeze(self._store, name, frozen)

    def power_off(self, name: str, timeout: float = 60) -> None:
        """A StatefulSet pod's machine loses power, disks kept (:func:`harness.kube.faults.power_off`)."""
        faults.power_off(self._store, name, timeout)

    def power_on(self, name: str) -> None:
        """Its StatefulSet recreates a powered-off pod (:func:`harness.kube.faults.power_on`)."""
        faults.power_on(self._store, name)

    def set_node_link(self, node: str, up: bool) -> None:
        """Cut or restore a node's link (:func:`harness.kube.faults.set_node_link`)."""
        faults.set_node_link(self._store, node, up)

    # ------------------------------------------------------------------------------- updates

    def set_objects(self, plan: Plan) -> set[tuple[str, str]]:
        """The API server now holds ``plan``'s objects (one apply step: ``harness.kube.apply`` decides
        them); the controllers act on them from their next sync. The files of every mounted ConfigMap
        and Secret whose data changed are rewritten in the running pods that mount them (subPath mounts
        keep the old file, as in Kubernetes). Returns those objects as (``configMap``|``secret``, name)."""
        changed, running = self._store.set_objects(plan)
        for pod in running:
            volumes = self._store.volumes.refresh_api_volumes(
                pod.template.spec, pod.uid, changed, secrets=self.plan.secrets, configmaps=self.plan.configmaps
            )
            if volumes:
                self._store.event(pod.name, "VolumesUpdated", f"mounted files of {', '.join(volumes)} rewritten")
        return changed

    def owner_views(self, owner: str, template: PodTemplate | None) -> list[PodView]:
        """What ``owner``'s controller sees of its pods, ``template`` being its current one."""
        return self._store.owner_views(owner, template)

    def pod_specs(self) -> dict[str, tuple[str, PodSpec]]:
        """Pod uid -> (name, spec) of every pod that runs (an apply's bookkeeping of what each pod has seen)."""
        return self._store.pod_specs()

    def delete_claims(self, sts: StatefulSet) -> list[str]:
        """The garbage collector deletes a deleted StatefulSet's claims (``whenDeleted: Delete``) once no
        pod uses them: their disks are gone. Returns the claims deleted."""
        wiped = self._store.volumes.wipe_claims(sts.name, [c.name for c in sts.claims])
        if wiped:
            self._store.event(f"StatefulSet/{sts.name}", "ClaimsDeleted", ", ".join(wiped))
        return wiped

    # ------------------------------------------------------------------------------- images

    def _jobs(self) -> list[str]:
        return [f"Job/{job.name}" for job in self.plan.jobs]

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
