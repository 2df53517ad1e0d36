"""The arithmetic of the controllers: pod names, DNS names, the kubelet's /etc/hosts, PDB eviction, rollout order.

What the StatefulSet, Deployment and disruption controllers (and the eviction API) would decide,
as pure functions of the objects and of which pods exist and are ready.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.kube.objects import Deployment, PodDisruptionBudget, StatefulSet

CLUSTER_DOMAIN = "cluster.local"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""k8s.io/apimachinery/pkg/util/rand: no vowels (no words) and no look-alike characters."""


# --- names ---------------------------------------------------------------------------------------


def statefulset_ordinals(sts: StatefulSet) -> list[int]:
    """The ordinals the StatefulSet wants, ascending (``spec.ordinals.start`` honoured)."""
    return list(range(sts.ordinal_start, sts.ordinal_start + sts.replicas))


def statefulset_pod_names(sts: StatefulSet) -> list[str]:
    """``<name>-<ordinal>`` for every wanted ordinal."""
    return [f"{sts.name}-{i}" for i in statefulset_ordinals(sts)]


def pod_fqdn(hostname: str, subdomain: str, namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """``<hostname>.<subdomain>.<ns>.svc.<domain>``: the name a headless Service gives a pod."""
    return f"{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}"


def statefulset_pod_fqdn(sts: StatefulSet, ordinal: int, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """A StatefulSet pod's FQDN: hostname is the pod name, subdomain the serviceName."""
    return pod_fqdn(f"{sts.name}-{ordinal}", sts.service_name, sts.namespace, cluster_domain)


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(deploy: Deployment, collision_count: int = 0) -> str:
    """A pod-template-hash: fnv32a of the template, encoded like Kubernetes' SafeEncodeString.

    Deterministic and of the cloud's shape, but not the cloud's value (that hashes Go's spew dump).
    """
    data = json.dumps(deploy.raw_template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in str(_fnv32a(data)))


def deployment_pod_name(deploy: Deployment, rng: random.Random | None = None) -> str:
    """``<deploy>-<template hash>-<5 random safe chars>``, as ReplicaSet's generateName produces."""
    r = rng or random.Random()
    suffix = "".join(r.choice(SAFE_ALPHABET) for _ in range(5))
    return f"{deploy.name}-{template_hash(deploy)}-{suffix}"


def named_for(owner: str, pod: str) -> bool:
    """Whether ``pod`` has the name ``owner``'s controller gives its pods (``Deployment/<name>``:
    ``<name>-<template hash>-<suffix>``; ``StatefulSet/<name>``: ``<name>-<ordinal>``), so that the
    pods of ``celery-worker-long`` are not taken for ``celery-worker``'s, as a name prefix would."""
    kind, name = owner.split("/", 1)
    tail = r"-[a-z0-9]+-[a-z0-9]+" if kind == "Deployment" else r"-[0-9]+"
    return re.fullmatch(re.escape(name) + tail, pod) is not None


# --- /etc/hosts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodAddress:
    """A pod's identity as the endpoints and DNS would publish it."""

    name: str
    namespace: str
    ip: str
    hostname: str = ""
    subdomain: str = ""
    ready: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False

    @property
    def host(self) -> str:
        """The pod's hostname: spec.hostname, else its name."""
        return self.hostname or self.name


_HOSTS_HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def etc_hosts(pod: PodAddress, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's /etc/hosts as the kubelet writes it: localhost, and the pod's own address and names.

    Its peers and the Services are not here: they resolve through the cluster DNS (harness.kube.dns).
    """
    lines = [_HOSTS_HEADER.rstrip("\n")]
    if pod.subdomain:
        fqdn = pod_fqdn(pod.host, pod.subdomain, pod.namespace, cluster_domain)
        lines.append(f"{pod.ip}\t{fqdn}\t{pod.host}")
    else:
        lines.append(f"{pod.ip}\t{pod.host}")
    return "\n".join(lines) + "\n"


# --- disruption budgets --------------------------------------------------------------------------


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, ``"N%"`` of ``total`` rounded as asked."""
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        return int(value)
    exact = int(value[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True)
class PodState:
    """What the disruption controller knows of a pod."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    running: bool = True
    ready: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class BudgetStatus:
    """The PDB's status as the disruption controller computes it."""

    expected: int
    desired_healthy: int
    current_healthy: int
    disruptions_allowed: int


def budget_status(pdb: PodDisruptionBudget, pods: Sequence[PodState], expected: int | None = None) -> BudgetStatus:
    """``expected`` is the controller's replicas (defaults to the matching pods' count)."""
    matching = [p for p in pods if pdb.selector.matches(p.labels) and not p.terminating]
    total = len(matching) if expected is None else expected
    healthy = sum(1 for p in matching if p.running and p.ready)
    if pdb.max_unavailable is not None:
        desired = max(0, total - scaled_value(pdb.max_unavailable, total, round_up=True))
    else:
        desired = scaled_value(pdb.min_available if pdb.min_available is not None else 0, total, round_up=True)
    return BudgetStatus(total, desired, healthy, max(0, healthy - desired))


def _exempt(pdb: PodDisruptionBudget, pod: PodState) -> str | None:
    if not pdb.selector.matches(pod.labels):
        return f"pod {pod.name} is not covered by PDB {pdb.name}"
    if not pod.running or pod.terminating:
        return f"pod {pod.name} is not running: a PDB never blocks it"
    return None


def eviction_allowed(
    pdb: PodDisruptionBudget, pods: Sequence[PodState], victim: str, expected: int | None = None
) -> tuple[bool, str]:
    """Would the eviction API let ``victim`` go? (True, why) or (False, why), as a drain sees it."""
    pod = next((p for p in pods if p.name == victim), None)
    if pod is None:
        return False, f"pod {victim} not found"
    exempt = _exempt(pdb, pod)
    if exempt:
        return True, exempt
    status = budget_status(pdb, pods, expected)
    if not pod.ready:
        # unhealthyPodEvictionPolicy: IfHealthyBudget (the default) lets an unready pod go only while
        # the budget is met without it; AlwaysAllow always does.
        if pdb.always_allow_unhealthy or status.current_healthy >= status.desired_healthy:
            return True, f"pod {victim} is not ready and the budget is met"
        return False, f"PDB {pdb.name}: unready pod blocked, {status.current_healthy}/{status.desired_healthy} healthy"
    if status.disruptions_allowed > 0:
        return True, f"PDB {pdb.name} allows {status.disruptions_allowed} disruption(s)"
    return False, (
        f"Cannot evict pod as it would violate the pod's disruption budget {pdb.name}: "
        f"{status.current_healthy} healthy, {status.desired_healthy} needed"
    )


# --- rollout order -------------------------------------------------------------------------------


def startup_batches(sts: StatefulSet) -> list[list[int]]:
    """Ordinals to create together: OrderedReady one at a time (each waits for the previous to be
    Running and Ready), Parallel all at once."""
    ords = statefulset_ordinals(sts)
    if sts.pod_management_policy == "Parallel":
        return [ords]
    return [[o] for o in ords]


def scale_down_order(sts: StatefulSet, current: Sequence[int]) -> list[int]:
    """Ordinals to delete when scaling to ``sts.replicas``: highest first."""
    wanted = set(statefulset_ordinals(sts))
    return sorted((o for o in current if o not in wanted), reverse=True)


def update_order(sts: StatefulSet) -> list[int]:
    """Ordinals a RollingUpdate replaces, highest first, one at a time; below ``partition`` stays.

    OnDelete returns [] (pods change only when someone deletes them).
    """
    if sts.update_strategy == "OnDelete":
        return []
    return [o for o in reversed(statefulset_ordinals(sts)) if o >= sts.partition]


def rolling_bounds(deploy: Deployment) -> tuple[int, int]:
    """(max surge, max unavailable) in pods: surge rounds up, unavailable down; never both 0."""
    if deploy.strategy == "Recreate":
        return 0, deploy.replicas
    surge = scaled_value(deploy.max_surge, deploy.replicas, round_up=True)
    unavailable = scaled_value(deploy.max_unavailable, deploy.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable
