"""Honest emulation: every leaf field of every plan object is implemented, a recorded delta, or refused.

The tables are data. A pattern is a dotted path from the object's root with ``[*]`` for any list
index; a pattern ending in ``.*`` covers the whole subtree below it (free-form maps such as labels,
or objects the local run accepts wholesale). A rule may be limited to some values: a value outside
them falls through to the next rule for the same pattern, and to a refusal if none is left.
A field that no rule covers is refused with its exact path: nothing is skipped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(Enum):
    """How the local run treats a field."""

    IMPLEMENTED = "implemented"
    DELTA = "delta"


@dataclass(frozen=True)
class Rule:
    """One row of a table: a path pattern, optionally limited to some values."""

    pattern: str
    status: Status
    values: frozenset[object] | None = None
    local: str = ""
    """For a delta: what runs locally instead."""
    why: str = ""
    """For a delta: why the local run may differ from the cloud."""


@dataclass(frozen=True)
class Delta:
    """A field the local run accepts but does not reproduce exactly: for the report."""

    obj: str
    path: str
    planned: str
    local: str
    why: str


@dataclass(frozen=True)
class Refusal:
    """A field the local run does not understand: it must not pretend to run it."""

    obj: str
    path: str
    value: str

    def __str__(self) -> str:
        return f"unsupported: {self.obj}: {self.path} = {self.value}"


class UnsupportedFieldError(ValueError):
    """Raised when a plan object has fields the model refuses; lists every one."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        super().__init__("\n".join(str(r) for r in refusals))


def _impl(pattern: str, values: frozenset[object] | None = None) -> Rule:
    return Rule(pattern, Status.IMPLEMENTED, values)


def _delta(pattern: str, local: str, why: str, values: frozenset[object] | None = None) -> Rule:
    return Rule(pattern, Status.DELTA, values, local, why)


def _vals(*values: object) -> frozenset[object]:
    return frozenset(values)


_META = [
    _impl("apiVersion"),
    _impl("kind"),
    _impl("metadata.name"),
    _impl("metadata.namespace"),
    _impl("metadata.labels.*"),
    # Annotations carry no behaviour the runner could owe (pulumi.com/skipAwait is for Pulumi).
    _impl("metadata.annotations.*"),
]

_SELECTOR = [
    "matchLabels.*",
    "matchExpressions[*].key",
    "matchExpressions[*].operator",
    "matchExpressions[*].values[*]",
]

_PROBE_FIELDS = [
    "exec.command[*]",
    "tcpSocket.port",
    "httpGet.path",
    "httpGet.port",
    "httpGet.httpHeaders[*].name",
    "httpGet.httpHeaders[*].value",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
]

_KEY_TO_PATH = ["items[*].key", "items[*].path", "items[*].mode", "defaultMode", "optional"]

_NO_CAPACITY = "local nodes have no capacity model: requests do not gate placement"


def _container_rules(prefix: str, *, init: bool) -> list[Rule]:
    """Rules for one container list (containers or initContainers) of a pod spec."""
    c = prefix + "[*]."
    rules = [
        _impl(c + "name"),
        _delta(c + "image", "the runtime's local root filesystem for this image name", "no registry pull locally"),
        _delta(c + "imagePullPolicy", "never pulled", "no registry pull locally"),
        _impl(c + "command[*]"),
        _impl(c + "args[*]"),
        _impl(c + "workingDir"),
        _impl(c + "env[*].name"),
        _impl(c + "env[*].value"),
        _impl(c + "env[*].valueFrom.fieldRef.fieldPath"),
        _impl(c + "env[*].valueFrom.fieldRef.apiVersion", _vals("v1")),
        _impl(c + "envFrom[*].prefix"),
        _impl(c + "envFrom[*].configMapRef.name"),
        _impl(c + "envFrom[*].configMapRef.optional"),
        _impl(c + "envFrom[*].secretRef.name"),
        _impl(c + "envFrom[*].secretRef.optional"),
        _impl(c + "volumeMounts[*].name"),
        _impl(c + "volumeMounts[*].mountPath"),
        _impl(c + "volumeMounts[*].readOnly"),
        _impl(c + "volumeMounts[*].subPath"),
        # harness.kube.limits: container and pod cgroups as the kubelet writes them, OOM kills as it reports them.
        _impl(c + "resources.limits.cpu"),
        _impl(c + "resources.limits.memory"),
        _delta(c + "resources.requests.cpu", "sets cpu.shares only", _NO_CAPACITY),
        _delta(c + "resources.requests.memory", "ignored", _NO_CAPACITY),
        _impl(c + "securityContext.runAsUser"),
        _impl(c + "securityContext.runAsGroup"),
        _impl(c + "securityContext.runAsNonRoot"),
        # The securityContext as containerd applies it: harness/kube/security.py decides, harness/runtime/enter.py
        # applies (read-only root remount, bounding set = the runtime's defaults less drop, no_new_privs).
        _impl(c + "securityContext.readOnlyRootFilesystem"),
        _impl(c + "securityContext.allowPrivilegeEscalation", _vals(True, False)),
        _impl(c + "securityContext.capabilities.drop[*]"),
    ]
    for key in ("configMapKeyRef", "secretKeyRef"):
        rules += [_impl(f"{c}env[*].valueFrom.{key}.{f}") for f in ("name", "key", "optional")]
    if not init:
        # Init containers with probes or a restartPolicy are sidecars, which the runner does not run.
        rules += [_impl(c + "lifecycle.postStart.exec.command[*]"), _impl(c + "lifecycle.preStop.exec.command[*]")]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            rules += [_impl(f"{c}{probe}.{f}") for f in _PROBE_FIELDS]
            rules.append(_impl(f"{c}{probe}.httpGet.scheme", _vals("HTTP")))
        rules += [_impl(c + "ports[*].name"), _impl(c + "ports[*].containerPort")]
        rules.append(_impl(c + "ports[*].protocol", _vals("TCP")))
    return rules


def _affinity_term_rules(prefix: str) -> list[Rule]:
    rules = [_impl(prefix + "topologyKey")]
    rules += [_impl(prefix + "labelSelector." + s) for s in _SELECTOR]
    return rules


def pod_spec_rules(p: str) -> list[Rule]:
    """Rules for a pod spec found at path ``p`` (e.g. ``spec.template.spec``)."""
    rules = _container_rules(p + ".containers", init=False) + _container_rules(p + ".initContainers", init=True)
    v = p + ".volumes[*]."
    rules += [
        _impl(v + "name"),
        _impl(v + "emptyDir"),
        # Memory: a tmpfs sized as the kubelet sizes it, its pages charged to the writer (harness.kube.limits).
        _impl(v + "emptyDir.medium", _vals("", "Memory")),
        _delta(
            v + "emptyDir.sizeLimit",
            "the tmpfs size of a medium: Memory emptyDir (writes past it fail, as on a node); no limit on a disk one",
            "no kubelet eviction of a pod whose disk-backed emptyDir outgrows its sizeLimit",
        ),
        _impl(v + "configMap.name"),
        _impl(v + "secret.secretName"),
        _impl(v + "projected.defaultMode"),
    ]
    rules += [_impl(v + "configMap." + f) for f in _KEY_TO_PATH]
    rules += [_impl(v + "secret." + f) for f in _KEY_TO_PATH]
    for src in ("configMap", "secret"):
        s = f"{v}projected.sources[*].{src}."
        rules += [_impl(s + "name")] + [_impl(s + f) for f in _KEY_TO_PATH if f != "defaultMode"]
    s = p + ".securityContext."
    rules += [_impl(s + f) for f in ("runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup")]
    # OnRootMismatch lets kubelet skip the recursive re-own when the volume root already matches.
    # The runner always re-owns (Always); the resulting ownership is the same for both values, since
    # a volume's files are written by the pod's own uid/gid, only the skip (a speed-up) is missing.
    rules.append(_impl(s + "fsGroupChangePolicy", _vals("Always", "OnRootMismatch")))
    rules.append(_impl(s + "seccompProfile.type", _vals("Unconfined")))
    rules.append(
        _delta(
            s + "seccompProfile.type",
            "a filter that refuses what the runtime default profile refuses (EPERM; clone3 ENOSYS)",
            "a denylist, not containerd's allowlist of ~370 syscalls: a syscall neither lists is allowed here",
            _vals("RuntimeDefault"),
        )
    )
    rules += [
        _impl(p + ".terminationGracePeriodSeconds"),
        _impl(p + ".restartPolicy", _vals("Always", "OnFailure", "Never")),
        # false means no token: exactly what the local run does anyway.
        _impl(p + ".automountServiceAccountToken", _vals(False)),
        _delta(
            p + ".automountServiceAccountToken",
            "no token mounted",
            "there is no API server locally",
            _vals(True),
        ),
        _impl(p + ".enableServiceLinks"),
        _impl(p + ".hostname"),
        _impl(p + ".subdomain"),
        _impl(p + ".nodeSelector.*"),
        # Taints and tolerations: the node lifecycle (harness.kube.nodes) taints a node that stops
        # answering, the taint manager evicts by tolerationSeconds, the scheduler filters by them.
        *(_impl(f"{p}.tolerations[*].{f}") for f in ("key", "value", "tolerationSeconds")),
        _impl(p + ".tolerations[*].operator", _vals("Equal", "Exists")),
        _impl(p + ".tolerations[*].effect", _vals("NoExecute", "NoSchedule", "PreferNoSchedule")),
        _delta(
            p + ".priorityClassName",
            "recorded, never acted on",
            "local nodes have no capacity model: nothing is ever preempted or queued by priority",
        ),
    ]
    aa = p + ".affinity.podAntiAffinity."
    rules += _affinity_term_rules(aa + "requiredDuringSchedulingIgnoredDuringExecution[*].")
    pref = aa + "preferredDuringSchedulingIgnoredDuringExecution[*]."
    rules += [_impl(pref + "weight"), *_affinity_term_rules(pref + "podAffinityTerm.")]
    t = p + ".topologySpreadConstraints[*]."
    rules += [_impl(t + f) for f in ("maxSkew", "topologyKey")]
    rules.append(_impl(t + "whenUnsatisfiable", _vals("DoNotSchedule", "ScheduleAnyway")))
    rules += [_impl(t + "labelSelector." + s) for s in _SELECTOR]
    return rules


def _template_rules(prefix: str) -> list[Rule]:
    return [
        _impl(prefix + ".metadata.labels.*"),
        _impl(prefix + ".metadata.annotations.*"),
        *pod_spec_rules(prefix + ".spec"),
    ]


def _selector_rules(prefix: str) -> list[Rule]:
    return [_impl(prefix + "." + s) for s in _SELECTOR]


def _statefulset_rules() -> list[Rule]:
    vct = "spec.volumeClaimTemplates[*]."
    return [
        *_META,
        _impl("spec.replicas"),
        *_selector_rules("spec.selector"),
        _impl("spec.serviceName"),
        _impl("spec.podManagementPolicy", _vals("OrderedReady", "Parallel")),
        _impl("spec.updateStrategy.type", _vals("RollingUpdate", "OnDelete")),
        _impl("spec.updateStrategy.rollingUpdate.partition"),
        _impl("spec.ordinals.start"),
        _impl("spec.minReadySeconds"),
        _impl("spec.persistentVolumeClaimRetentionPolicy.whenDeleted", _vals("Retain", "Delete")),
        _impl("spec.persistentVolumeClaimRetentionPolicy.whenScaled", _vals("Retain", "Delete")),
        *_template_rules("spec.template"),
        _impl(vct + "metadata.name"),
        _impl(vct + "metadata.labels.*"),
        _delta(
            vct + "spec.accessModes[*]",
            "a host directory, reachable only by the runner's pods",
            "no attach/detach: ReadWriteOnce is not enforced by a volume plugin",
        ),
        _delta(vct + "spec.resources.requests.storage", "no size limit", "a plain directory has no quota"),
        _delta(
            vct + "spec.storageClassName",
            "a host directory per claim and ordinal",
            "no provisioner locally; no zonal disk pins the pod to a zone",
        ),
    ]


def _deployment_rules() -> list[Rule]:
    return [
        *_META,
        _impl("spec.replicas"),
        *_selector_rules("spec.selector"),
        _impl("spec.minReadySeconds"),
        _impl("spec.strategy.type", _vals("RollingUpdate", "Recreate")),
        _impl("spec.strategy.rollingUpdate.maxSurge"),
        _impl("spec.strategy.rollingUpdate.maxUnavailable"),
        *_template_rules("spec.template"),
    ]


def _job_rules() -> list[Rule]:
    return [
        *_META,
        _impl("spec.backoffLimit"),
        _impl("spec.activeDeadlineSeconds"),
        _impl("spec.completions"),
        _impl("spec.parallelism"),
        _delta("spec.ttlSecondsAfterFinished", "finished Job kept", "no garbage collector locally"),
        *_template_rules("spec.template"),
    ]


def _service_rules() -> list[Rule]:
    return [
        *_META,
        _impl("spec.clusterIP", _vals("None")),
        _delta(
            "spec.type",
            "no virtual IP or kube-proxy: the cluster DNS answers the name with its ready pods' addresses",
            "no service dataplane between the local network namespaces",
            _vals("ClusterIP"),
        ),
        _impl("spec.selector.*"),
        _impl("spec.publishNotReadyAddresses"),
        _impl("spec.ports[*].name"),
        _impl("spec.ports[*].port"),
        _impl("spec.ports[*].targetPort"),
        _impl("spec.ports[*].protocol", _vals("TCP")),
        _impl("spec.ports[*].appProtocol"),
    ]


def _pdb_rules() -> list[Rule]:
    return [
        *_META,
        _impl("spec.maxUnavailable"),
        _impl("spec.minAvailable"),
        _impl("spec.unhealthyPodEvictionPolicy", _vals("IfHealthyBudget", "AlwaysAllow")),
        *_selector_rules("spec.selector"),
    ]


def _network_policy_rules() -> list[Rule]:
    # Enforced with nftables in each pod's namespace (harness.kube.netpol, harness.kube.dataplane);
    # without nft the cluster reports every policy as not enforced (PolicyDataplane.deltas).
    rules = [*_META, *_selector_rules("spec.podSelector"), _impl("spec.policyTypes[*]", _vals("Ingress", "Egress"))]
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        rule = f"spec.{direction}[*]."
        rules += [
            *_selector_rules(f"{rule}{peers}[*].podSelector"),
            *_selector_rules(f"{rule}{peers}[*].namespaceSelector"),
            _impl(f"{rule}{peers}[*].ipBlock.cidr"),
            _impl(f"{rule}{peers}[*].ipBlock.except[*]"),
            _impl(f"{rule}ports[*].port"),
            _impl(f"{rule}ports[*].endPort"),
            _impl(f"{rule}ports[*].protocol", _vals("TCP", "UDP", "SCTP")),
        ]
    return rules


TABLES: dict[str, list[Rule]] = {
    "StatefulSet": _statefulset_rules(),
    "Deployment": _deployment_rules(),
    "Job": _job_rules(),
    "Service": _service_rules(),
    "Secret": [*_META, _impl("type", _vals("Opaque")), _impl("data.*"), _impl("stringData.*")],
    "ConfigMap": [*_META, _impl("data.*"), _impl("binaryData.*")],
    "PodDisruptionBudget": _pdb_rules(),
    "Namespace": list(_META),
    "NetworkPolicy": _network_policy_rules(),
    "HorizontalPodAutoscaler": [
        *_META,
        _delta(
            "spec.*",
            "no autoscaling: the target keeps its spec.replicas",
            "no metrics pipeline or HPA controller locally",
        ),
    ],
    "ScaledObject": [
        *_META,
        _delta(
            "spec.*",
            "no autoscaling: the target keeps its spec.replicas",
            "KEDA is not installed locally",
        ),
    ],
    "TriggerAuthentication": [
        *_META,
        _delta("spec.*", "unused", "KEDA is not installed locally"),
    ],
    # Scrape and rule objects: the drills' own Prometheus scrapes the pods by the same jobs
    # (contract.metrics) and loads the same rules (monitoring.rules), not these objects.
    "PodMonitoring": [*_META, _delta("spec.*", "not read locally", "no GMP collector locally")],
    "Rules": [*_META, _delta("spec.*", "not read locally", "no GMP rule evaluator locally")],
    "PodMonitor": [*_META, _delta("spec.*", "not read locally", "no prometheus-operator locally")],
    "PrometheusRule": [*_META, _delta("spec.*", "not read locally", "no prometheus-operator locally")],
    "PriorityClass": [
        *_META,
        _delta("value", "not acted on", "no capacity model locally: no preemption, no priority queue"),
        _delta("preemptionPolicy", "not acted on", "no capacity model locally: no preemption"),
        _impl("globalDefault", _vals(False)),
        _impl("description"),
    ],
    "StorageClass": [
        *_META,
        _delta("provisioner", "no provisioner: claims are host directories", "no cloud disks locally"),
        _delta("parameters.*", "ignored (disk type)", "no cloud disks locally"),
        _delta("reclaimPolicy", "claim directories are kept until wiped", "no PersistentVolume objects locally"),
        _delta("volumeBindingMode", "bound when the pod is placed", "no zonal disks locally"),
        _delta("allowVolumeExpansion", "no size to expand", "a plain directory has no quota"),
    ],
}
"""Per kind, every rule. A kind missing here is refused as a whole."""

_INDEX = re.compile(r"\[\d+\]")


def _index(rules: list[Rule]) -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for r in rules:
        out.setdefault(r.pattern, []).append(r)
    return out


_TABLE_INDEX = {kind: _index(rules) for kind, rules in TABLES.items()}


@dataclass(frozen=True)
class Leaf:
    """One field as found in the object, with the pattern it normalises to."""

    path: str
    pattern: str
    value: object


def _leaves(node: object, path: str, pattern: str, subtrees: Mapping[str, list[Rule]]) -> Iterator[Leaf]:
    if pattern + ".*" in subtrees:
        # A subtree rule owns everything below: report it once, with the whole value.
        yield Leaf(path + ".*", pattern + ".*", node)
        return
    if isinstance(node, dict) and node:
        for key, child in node.items():
            sep = "." if path else ""
            yield from _leaves(child, f"{path}{sep}{key}", f"{pattern}{sep}{key}", subtrees)
    elif isinstance(node, list) and node:
        for i, child in enumerate(node):
            yield from _leaves(child, f"{path}[{i}]", f"{pattern}[*]", subtrees)
    else:
        yield Leaf(path, pattern, node)


def leaves(obj: Mapping[str, Any], kind: str | None = None) -> list[Leaf]:
    """Every leaf field of ``obj``, subtree-ruled maps collapsed to one leaf each."""
    table = _TABLE_INDEX.get(kind or str(obj.get("kind")), {})
    return list(_leaves(dict(obj), "", "", table))


def _value_ok(rule: Rule, value: object) -> bool:
    if rule.values is None:
        return True
    # bool is an int in Python: compare by type too, so that 0 never matches False.
    return any(type(v) is type(value) and v == value for v in rule.values)


def object_id(obj: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` (or ``Kind/name`` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns}/{meta.get('name')}" if ns else f"{obj.get('kind')}/{meta.get('name')}"


def audit(obj: Mapping[str, Any]) -> tuple[list[Delta], list[Refusal]]:
    """Classify every leaf of ``obj``: deltas to report, refusals that must stop the run."""
    kind = str(obj.get("kind"))
    oid = object_id(obj)
    table = _TABLE_INDEX.get(kind)
    if table is None:
        return [], [Refusal(oid, "kind", repr(kind))]
    deltas: list[Delta] = []
    refused: list[Refusal] = []
    for leaf in leaves(obj, kind):
        rule = next((r for r in table.get(leaf.pattern, []) if _value_ok(r, leaf.value)), None)
        if rule is None and _empty_container(leaf, table):
            # An empty list or map of a known field (volumes: []) asks for nothing.
            continue
        if rule is None:
            refused.append(Refusal(oid, leaf.path, repr(leaf.value)))
        elif rule.status is Status.DELTA:
            deltas.append(Delta(oid, leaf.path, _short(leaf.value), rule.local, rule.why))
    return deltas, refused


def _empty_container(leaf: Leaf, table: Mapping[str, list[Rule]]) -> bool:
    if leaf.value not in ({}, []):
        return False
    return any(p.startswith((leaf.pattern + ".", leaf.pattern + "[*]")) for p in table)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check(obj: Mapping[str, Any]) -> list[Delta]:
    """Deltas of ``obj``; raises :class:`UnsupportedFieldError` naming every refused path."""
    deltas, refused = audit(obj)
    if refused:
        raise UnsupportedFieldError(refused)
    return deltas


def refuse(obj: str, path: str, value: object) -> UnsupportedFieldError:
    """An error for a field the tables allow but whose value the parser cannot run."""
    return UnsupportedFieldError([Refusal(obj, path, repr(value))])


def format_deltas(deltas: list[Delta]) -> str:
    """A plain-text table of deltas for the run's report: object, path, plan value, local behaviour, reason."""
    lines = [f"{len(deltas)} delta(s) between the plan and the local run:"]
    for d in deltas:
        lines.append(f"- {d.obj} {d.path} = {d.planned}\n    local: {d.local}\n    why: {d.why}")
    return "\n".join(lines)


EMULATION_DELTAS: list[Delta] = [
    Delta(
        "(pod)",
        "configMap/secret/projected volumes",
        "kubelet's ..data symlink swap, updated live within about a minute of an object change",
        "each file replaced (a new inode) as soon as the object changes, one file after the other",
        "no atomic writer locally: a reader may see old and new files side by side for a moment",
    ),
    Delta(
        "(pod)",
        "cluster DNS",
        "kube-dns: A, PTR and SRV records of the Services and their pods",
        "dnsmasq (harness.kube.dns_server): A and PTR records of the Services and their pods; no SRV",
        "the plan's clients look up A records only; named-port SRV records are not served",
    ),
    Delta(
        "(scheduler)",
        "kube-scheduler",
        "all default plugins; random pick among equal scores",
        "cordon, nodeSelector, pod anti-affinity, topology spread, claim zone; lowest name wins ties",
        "local nodes have no capacity, taints or images to score; reproducible runs",
    ),
    Delta(
        "(Deployment)",
        "pod-template-hash",
        "fnv32a of Go's dump of the template",
        "fnv32a of the template's canonical JSON, same alphabet and shape",
        "Go's object dump format is not reproducible from Python",
    ),
    Delta(
        "(Secret)",
        "masked values ([secret])",
        "the stack's RandomPassword results",
        "fresh local values from fill_secrets rules (same length and alphabet)",
        "the plan never reveals secrets",
    ),
]
"""Differences of the emulation as a whole, not tied to a single field: for the run's report."""
