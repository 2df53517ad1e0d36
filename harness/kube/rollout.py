"""What the StatefulSet and Deployment controllers do next, as pure functions of the object and its pods.

The pod runner's controllers call these every reconcile; an update (a changed template, replicas)
is then rolled out exactly as the steady state is kept: by the same decisions, one sync at a time.

Sources (kubernetes v1.31):

* StatefulSet: ``pkg/controller/statefulset/stateful_set_control.go``,
  ``updateStatefulSetAfterInvariantEstablished``: missing ordinals are created (Parallel: at
  once; OrderedReady: one at a time, each waiting for the previous to be Running and Ready),
  condemned ordinals (at or above ``replicas``) are deleted highest first (Parallel: all at once),
  and a RollingUpdate walks from the highest ordinal down to ``partition``: the first pod not at
  the update revision is deleted, and the walk stops at the first pod that is not healthy, so
  the next pod goes only once the one before is back Running and Ready. A pod recreated for an
  ordinal at or above ``partition`` gets the update revision. OnDelete never deletes a pod.
* Deployment: ``pkg/controller/deployment/rolling.go`` and ``util/deployment_util.go``
  (``NewRSNewReplicas``, ``reconcileOldReplicaSets``, ``cleanupUnhealthyReplicas``,
  ``scaleDownOldReplicaSetsForRollingUpdate``): the new ReplicaSet grows while all pods stay
  within ``replicas + maxSurge``; old pods go while ``replicas - maxUnavailable`` stay
  available, unhealthy old pods first. A sync that scaled the new ReplicaSet up does nothing
  else. Recreate deletes every old pod and creates new ones once none is left.

Revisions are compared by the pod template itself (the controllers' revision hashes are hashes
of it); terminating pods count for nothing, as in the controllers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.kube.objects import Deployment, PodSpec, StatefulSet
from harness.kube.workloads import rolling_bounds, statefulset_ordinals


@dataclass(frozen=True)
class PodView:
    """What a controller knows of one of its pods."""

    name: str
    updated: bool
    """The pod runs the object's current template (the update revision)."""
    ready: bool = True
    terminating: bool = False
    scheduled: bool = True
    ordinal: int | None = None
    created: float = 0.0
    """Its creation time (monotonic): among equals, the ReplicaSet controller deletes the newest."""

    @property
    def healthy(self) -> bool:
        """Running and Ready and not being deleted (the StatefulSet controller's ``isHealthy``)."""
        return self.scheduled and self.ready and not self.terminating


@dataclass(frozen=True)
class Actions:
    """One sync's decisions: pods to create (StatefulSet: ordinals; Deployment: a count) and to delete."""

    create_ordinals: tuple[int, ...] = ()
    create: int = 0
    delete: tuple[str, ...] = ()
    why: str = ""


# --- StatefulSet ---------------------------------------------------------------------------------


def statefulset_sync(sts: StatefulSet, pods: Sequence[PodView], held: frozenset[int] = frozenset()) -> Actions:
    """One sync of the StatefulSet controller; ``held``: ordinals not to recreate now (a drill's power-off)."""
    wanted = statefulset_ordinals(sts)
    by_ordinal = {p.ordinal: p for p in pods if p.ordinal is not None}
    parallel = sts.pod_management_policy == "Parallel"
    missing = [o for o in wanted if o not in by_ordinal and o not in held]
    if missing:
        if parallel:
            return Actions(create_ordinals=tuple(missing), why="missing pods (Parallel: all at once)")
        first = missing[0]
        if all(by_ordinal[o].healthy for o in wanted if o < first and o in by_ordinal):
            return Actions(create_ordinals=(first,), why="missing pod (OrderedReady: one at a time)")
        return Actions(why="OrderedReady: waiting for a lower ordinal to be Ready")
    condemned = sorted((p for p in pods if p.ordinal is not None and p.ordinal not in wanted), key=_desc_ordinal)
    live_condemned = [p for p in condemned if not p.terminating]
    if live_condemned:
        if parallel:
            return Actions(delete=tuple(p.name for p in live_condemned), why="scaled down (Parallel: all at once)")
        if any(p.terminating for p in condemned):
            return Actions(why="OrderedReady: waiting for a condemned pod to terminate")
        return Actions(delete=(live_condemned[0].name,), why="scaled down, highest ordinal first")
    return _rolling_update(sts, by_ordinal, wanted)


def _desc_ordinal(pod: PodView) -> int:
    return -(pod.ordinal or 0)


def _rolling_update(sts: StatefulSet, by_ordinal: dict[int, PodView], wanted: list[int]) -> Actions:
    if sts.update_strategy == "OnDelete":
        return Actions(why="OnDelete: pods change only when deleted")
    for ordinal in reversed(wanted):
        if ordinal < sts.partition:
            break
        pod = by_ordinal.get(ordinal)
        if pod is None:
            return Actions(why=f"waiting for ordinal {ordinal} to be recreated")
        if not pod.updated and not pod.terminating:
            return Actions(delete=(pod.name,), why=f"RollingUpdate: {pod.name} is at the old revision")
        if not pod.healthy:
            return Actions(why=f"RollingUpdate: waiting for {pod.name} to be Running and Ready")
    return Actions(why="up to date")


def statefulset_rolled_out(sts: StatefulSet, pods: Sequence[PodView]) -> bool:
    """Every wanted ordinal at or above the partition runs the current template and is healthy, and no
    condemned pod is left: what pulumi-kubernetes' StatefulSet await waits for
    (``currentRevision == updateRevision``, ``readyReplicas == replicas``)."""
    wanted = set(statefulset_ordinals(sts))
    by_ordinal = {p.ordinal: p for p in pods if p.ordinal is not None}
    if any(o not in wanted for o in by_ordinal):
        return False
    for ordinal in wanted:
        pod = by_ordinal.get(ordinal)
        if pod is None or not pod.healthy:
            return False
        if ordinal >= sts.partition and not pod.updated and sts.update_strategy != "OnDelete":
            return False
    return True


# --- Deployment ----------------------------------------------------------------------------------


def deployment_sync(deploy: Deployment, pods: Sequence[PodView], replicas: int | None = None) -> Actions:
    """One sync of the Deployment controller (``replicas``: a scale's count instead of the object's)."""
    want = deploy.replicas if replicas is None else replicas
    live = [p for p in pods if not p.terminating]
    old = [p for p in live if not p.updated]
    new = [p for p in live if p.updated]
    if deploy.strategy == "Recreate":
        if old:
            return Actions(delete=tuple(p.name for p in old), why="Recreate: every old pod first")
        if any(not p.updated for p in pods):
            return Actions(why="Recreate: waiting for the old pods to be gone")
        return _scale(new, want)
    if not old:
        return _scale(new, want)
    surge, unavailable = rolling_bounds(replace(deploy, replicas=want))
    total = len(old) + len(new)
    grow = min(want + surge - total, want - len(new))
    if grow > 0:
        return Actions(create=grow, why=f"RollingUpdate: new pods within {want}+{surge} (maxSurge)")
    min_available = want - unavailable
    new_unavailable = sum(1 for p in new if not p.ready)
    budget = total - min_available - new_unavailable
    if budget <= 0:
        return Actions(why=f"RollingUpdate: waiting for new pods to be available ({min_available} must stay)")
    unhealthy = [p.name for p in sorted(old, key=_unhealthy_first) if not (p.scheduled and p.ready)][:budget]
    available = sum(1 for p in live if p.scheduled and p.ready)
    healthy_down = min(budget - len(unhealthy), available - min_available)
    healthy = [p.name for p in sorted(old, key=lambda p: p.name) if p.scheduled and p.ready][: max(healthy_down, 0)]
    if not unhealthy and not healthy:
        return Actions(why=f"RollingUpdate: {available} available, {min_available} must stay (maxUnavailable)")
    return Actions(delete=(*unhealthy, *healthy), why="RollingUpdate: old pods within maxUnavailable")


def _unhealthy_first(pod: PodView) -> tuple[bool, bool, str]:
    return (pod.scheduled, pod.ready, pod.name)


def _scale_down_first(pod: PodView) -> tuple[bool, bool, float, str]:
    """The ReplicaSet controller's order of victims (``controller.ActivePodsWithRanks.Less``), for what
    the pod runner models: unscheduled, then not Ready, then the newest (its last tie-breakers: a
    shorter Ready time, then a newer creation; both follow creation here). Not modelled: the
    ``controller.kubernetes.io/pod-deletion-cost`` annotation (no pod of the plan sets it), restart
    counts, and pods doubled up on a node."""
    return (pod.scheduled, pod.ready, -pod.created, pod.name)


def _scale(pods: Sequence[PodView], want: int) -> Actions:
    if len(pods) < want:
        return Actions(create=want - len(pods), why=f"{len(pods)} of {want} pods")
    surplus = sorted(pods, key=_scale_down_first)[: len(pods) - want]
    return Actions(delete=tuple(p.name for p in surplus), why=f"scaled to {want}") if surplus else Actions()


def deployment_rolled_out(deploy: Deployment, pods: Sequence[PodView], replicas: int | None = None) -> bool:
    """No old pod left that is not terminating, and ``replicas`` new pods Ready: what
    pulumi-kubernetes' Deployment await waits for (updatedReplicas == replicas, the new
    ReplicaSet available)."""
    want = deploy.replicas if replicas is None else replicas
    live = [p for p in pods if not p.terminating]
    return all(p.updated for p in live) and sum(1 for p in live if p.ready) >= want and len(live) == want


# --- what a running pod does not pick up ----------------------------------------------------------


def stale_uses(spec: PodSpec, changed: set[tuple[str, str]]) -> list[str]:
    """How a running pod with ``spec`` keeps the old data of ``changed`` (``configMap``|``secret``, name)
    objects, as Kubernetes leaves it: environment variables are read at container start, subPath
    mounts never update, and what an init container copied stays a copy. Empty: every use updates
    (mounted directories are rewritten by the kubelet)."""
    out: list[str] = []
    main = {m.name for c in spec.containers for m in c.volume_mounts}
    for c in (*spec.init_containers, *spec.containers):
        for env in c.env:
            for kind, ref in (("secret", env.secret_ref), ("configMap", env.config_map_ref)):
                if ref is not None and (kind, ref.name) in changed:
                    out.append(f"container {c.name}: env {env.name} from {kind} {ref.name} (read at start)")
        for env_from in c.env_from:
            for kind, name in (("secret", env_from.secret), ("configMap", env_from.config_map)):
                if name is not None and (kind, name) in changed:
                    out.append(f"container {c.name}: envFrom {kind} {name} (read at start)")
    for v in spec.volumes:
        sources = [f"{src.kind} {src.name}" for src in v.sources if (src.kind, src.name) in changed]
        if not sources:
            continue
        if v.name not in main:
            out.append(f"volume {v.name} ({', '.join(sources)}): mounted by init containers only (copied at start)")
        for c in spec.containers:
            out.extend(
                f"container {c.name}: subPath mount of volume {v.name} ({', '.join(sources)}) never updates"
                for m in c.volume_mounts
                if m.name == v.name and m.sub_path
            )
    return out
