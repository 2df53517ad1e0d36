"""Typed model of the plan's Kubernetes objects, loaded from ``build/plan/<stack>/kubernetes/*.yaml``.

Every object is audited by :mod:`harness.kube.fields` before it is parsed, so the parser only ever
sees fields the tables accept; it then applies Kubernetes' defaults (probe timings, grace period,
restart policy, defaultMode) so that the runner never has to know them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.kube.fields import Delta, UnsupportedFieldError, audit, check, object_id, refuse

MASKED = "[secret]"
"""How the plan writes a secret value it must not reveal."""

Json = dict[str, Any]


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A label selector; an empty one matches everything, as in Kubernetes."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every label and every expression."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for r in self.match_expressions:
            present = r.key in labels
            ok = {
                "In": present and labels.get(r.key) in r.values,
                "NotIn": not present or labels.get(r.key) not in r.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[r.operator]
            if not ok:
                return False
        return True


@dataclass(frozen=True)
class KeyRef:
    """``secretKeyRef`` / ``configMapKeyRef``."""

    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class EnvVar:
    """One ``env`` entry: exactly one of value / field_ref / secret_ref / config_map_ref is set."""

    name: str
    value: str | None = None
    field_ref: str | None = None
    secret_ref: KeyRef | None = None
    config_map_ref: KeyRef | None = None


@dataclass(frozen=True)
class EnvFrom:
    """One ``envFrom`` entry."""

    prefix: str
    config_map: str | None
    secret: str | None
    optional: bool


@dataclass(frozen=True)
class KeyToPath:
    """An ``items`` entry of a configMap/secret volume or projection."""

    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class Projection:
    """A configMap or secret source, standalone or inside a projected volume."""

    kind: Literal["configMap", "secret"]
    name: str
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Volume:
    """A pod volume. ``sources`` holds one projection for configMap/secret, several for projected."""

    name: str
    kind: Literal["emptyDir", "configMap", "secret", "projected", "claim"]
    sources: tuple[Projection, ...] = ()
    default_mode: int = 0o644
    medium: str = ""
    size_limit: str | None = None


@dataclass(frozen=True)
class VolumeMount:
    """A ``volumeMounts`` entry."""

    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class ContainerPort:
    """A ``ports`` entry."""

    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Probe:
    """A probe with Kubernetes' defaults filled in."""

    kind: Literal["exec", "tcpSocket", "httpGet"]
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class SecurityContext:
    """Pod- or container-level identity; ``merged`` applies the container over the pod."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool | None = None
    drop_capabilities: tuple[str, ...] = ()
    seccomp_profile: str | None = None
    """seccompProfile.type: RuntimeDefault or Unconfined (None: unset, which Kubernetes runs Unconfined)."""

    def merged(self, container: SecurityContext) -> SecurityContext:
        """The effective context of a container: its own settings win over the pod's."""
        return SecurityContext(
            run_as_user=container.run_as_user if container.run_as_user is not None else self.run_as_user,
            run_as_group=container.run_as_group if container.run_as_group is not None else self.run_as_group,
            run_as_non_root=(
                container.run_as_non_root if container.run_as_non_root is not None else self.run_as_non_root
            ),
            fs_group=self.fs_group,
            read_only_root_filesystem=container.read_only_root_filesystem,
            allow_privilege_escalation=container.allow_privilege_escalation,
            drop_capabilities=container.drop_capabilities,
            seccomp_profile=container.seccomp_profile or self.seccomp_profile,
        )


@dataclass(frozen=True)
class Resources:
    """Requests and limits as written (quantities are strings; see :func:`parse_quantity`)."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    """A container or init container."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    post_start: tuple[str, ...] | None = None
    pre_stop: tuple[str, ...] | None = None
    resources: Resources = field(default_factory=Resources)
    security_context: SecurityContext = field(default_factory=SecurityContext)


@dataclass(frozen=True)
class AffinityTerm:
    """A pod (anti-)affinity term; ``weight`` is 0 for a required term."""

    selector: LabelSelector
    topology_key: str
    weight: int = 0


@dataclass(frozen=True)
class SpreadConstraint:
    """A ``topologySpreadConstraints`` entry."""

    max_skew: int
    topology_key: str
    hard: bool
    selector: LabelSelector


@dataclass(frozen=True)
class Toleration:
    """A ``tolerations`` entry. An empty ``effect`` matches every effect; an empty ``key`` with
    ``Exists`` tolerates every taint (``k8s.io/api/core/v1`` ``Toleration.ToleratesTaint``)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    seconds: int | None = None
    """``tolerationSeconds`` (NoExecute only): None tolerates the taint for ever."""

    def tolerates(self, key: str, effect: str, value: str = "") -> bool:
        if self.effect and self.effect != effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        return self.key == key and (self.operator == "Exists" or self.value == value)


@dataclass(frozen=True)
class PodSpec:
    """A pod template's spec with defaults applied."""

    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    security_context: SecurityContext = field(default_factory=SecurityContext)
    termination_grace_period_seconds: int = 30
    restart_policy: str = "Always"
    anti_affinity_required: tuple[AffinityTerm, ...] = ()
    anti_affinity_preferred: tuple[AffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    enable_service_links: bool = True
    hostname: str = ""
    subdomain: str = ""
    tolerations: tuple[Toleration, ...] = ()
    priority_class: str = ""
    """``priorityClassName``: recorded, not acted on (no capacity model, so no preemption)."""

    def volume(self, name: str) -> Volume:
        """The volume called ``name``."""
        for v in self.volumes:
            if v.name == name:
                return v
        raise KeyError(name)


@dataclass(frozen=True)
class PodTemplate:
    """A pod template: labels, annotations and spec."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    spec: PodSpec


@dataclass(frozen=True)
class ClaimTemplate:
    """A ``volumeClaimTemplates`` entry: the claim name is all the local run needs."""

    name: str
    storage: str
    storage_class: str


@dataclass(frozen=True)
class StatefulSet:
    """A StatefulSet."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    replicas: int
    selector: LabelSelector
    service_name: str
    pod_management_policy: str
    update_strategy: str
    partition: int
    ordinal_start: int
    min_ready_seconds: int
    template: PodTemplate
    claims: tuple[ClaimTemplate, ...]
    retain_when_deleted: bool
    retain_when_scaled: bool


@dataclass(frozen=True)
class Deployment:
    """A Deployment; surge/unavailable stay int-or-percent (see ``workloads.rolling_bounds``)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    replicas: int
    selector: LabelSelector
    strategy: str
    max_surge: int | str
    max_unavailable: int | str
    min_ready_seconds: int
    template: PodTemplate
    raw_template: Json


@dataclass(frozen=True)
class Job:
    """A Job (loaded and audited; the runner's brief does not boot it)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    backoff_limit: int
    active_deadline_seconds: int | None
    completions: int
    parallelism: int
    template: PodTemplate


@dataclass(frozen=True)
class ServicePort:
    """A Service port."""

    port: int
    target_port: int | str
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    """A Service; ``headless`` when clusterIP is None."""

    name: str
    namespace: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]
    headless: bool
    publish_not_ready_addresses: bool


@dataclass(frozen=True)
class Secret:
    """A Secret, ``data`` decoded and ``stringData`` merged over it; ``masked`` keys await fill_secrets."""

    name: str
    namespace: str
    data: Mapping[str, bytes]
    masked: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ConfigMap:
    """A ConfigMap; binaryData decoded into ``binary``."""

    name: str
    namespace: str
    data: Mapping[str, str]
    binary: Mapping[str, bytes] = field(default_factory=dict)

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` as bytes, from data or binaryData."""
        if key in self.data:
            return self.data[key].encode()
        return self.binary.get(key)


@dataclass(frozen=True)
class PodDisruptionBudget:
    """A PDB: exactly one of max_unavailable / min_available is set."""

    name: str
    namespace: str
    selector: LabelSelector
    max_unavailable: int | str | None
    min_available: int | str | None
    always_allow_unhealthy: bool = False


@dataclass
class Plan:
    """Every object of one plan directory, typed where the runner acts on it, raw where it only reports."""

    statefulsets: list[StatefulSet] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    configmaps: list[ConfigMap] = field(default_factory=list)
    pdbs: list[PodDisruptionBudget] = field(default_factory=list)
    namespaces: list[Json] = field(default_factory=list)
    network_policies: list[Json] = field(default_factory=list)
    storage_classes: list[Json] = field(default_factory=list)
    priority_classes: list[Json] = field(default_factory=list)
    """Recorded (a pod's ``priorityClassName`` is a reported delta: nothing is preempted locally)."""
    autoscalers: list[Json] = field(default_factory=list)
    """HorizontalPodAutoscaler, KEDA ScaledObject and TriggerAuthentication: reported, not run."""
    monitoring: list[Json] = field(default_factory=list)
    """PodMonitoring, Rules, PodMonitor, PrometheusRule: reported, not run (the drills' Prometheus
    scrapes the same jobs and loads the same rules from ``monitoring``)."""
    deltas: list[Delta] = field(default_factory=list)

    def secret(self, name: str) -> Secret | None:
        """The Secret called ``name``, if any."""
        return next((s for s in self.secrets if s.name == name), None)

    def configmap(self, name: str) -> ConfigMap | None:
        """The ConfigMap called ``name``, if any."""
        return next((c for c in self.configmaps if c.name == name), None)


# --- parsing helpers -------------------------------------------------------------------------


def _meta(obj: Json) -> tuple[str, str, dict[str, str]]:
    m = obj.get("metadata") or {}
    return str(m["name"]), str(m.get("namespace", "default")), dict(m.get("labels") or {})


def parse_selector(raw: Json | None) -> LabelSelector:
    """A LabelSelector from its YAML form."""
    raw = raw or {}
    exprs = tuple(
        Requirement(str(e["key"]), e["operator"], tuple(str(v) for v in e.get("values") or ()))
        for e in raw.get("matchExpressions") or ()
    )
    return LabelSelector(dict(raw.get("matchLabels") or {}), exprs)


_FIELD_PATH = re.compile(
    r"^(metadata\.name|metadata\.namespace|metadata\.uid|spec\.nodeName|spec\.serviceAccountName"
    r"|status\.podIP|status\.hostIP|status\.podIPs|status\.hostIPs"
    r"|metadata\.(labels|annotations)\['[^']+'\])$"
)


def _env(raw: Json, oid: str, path: str) -> EnvVar:
    name = str(raw["name"])
    vf = raw.get("valueFrom")
    if vf is None:
        return EnvVar(name, value=str(raw.get("value", "")))
    if "fieldRef" in vf:
        fp = str(vf["fieldRef"]["fieldPath"])
        if not _FIELD_PATH.match(fp):
            raise refuse(oid, path + ".valueFrom.fieldRef.fieldPath", fp)
        return EnvVar(name, field_ref=fp)
    for key in ("secretKeyRef", "configMapKeyRef"):
        if key in vf:
            r = vf[key]
            ref = KeyRef(str(r["name"]), str(r["key"]), bool(r.get("optional", False)))
            return EnvVar(name, secret_ref=ref) if key == "secretKeyRef" else EnvVar(name, config_map_ref=ref)
    raise refuse(oid, path + ".valueFrom", vf)


def _env_from(raw: Json) -> EnvFrom:
    cm, sec = raw.get("configMapRef"), raw.get("secretRef")
    ref = cm or sec or {}
    return EnvFrom(
        str(raw.get("prefix", "")),
        str(cm["name"]) if cm else None,
        str(sec["name"]) if sec else None,
        bool(ref.get("optional", False)),
    )


def _probe(raw: Json, ports: Sequence[ContainerPort], oid: str, path: str) -> Probe:
    handlers = [k for k in ("exec", "tcpSocket", "httpGet") if k in raw]
    if len(handlers) != 1:
        raise refuse(oid, path, raw)
    kind = handlers[0]
    timing: dict[str, Any] = {
        "initial_delay_seconds": int(raw.get("initialDelaySeconds", 0)),
        "period_seconds": int(raw.get("periodSeconds", 10)),
        "timeout_seconds": int(raw.get("timeoutSeconds", 1)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
    }
    if kind == "exec":
        return replace(Probe("exec", command=tuple(str(c) for c in raw["exec"]["command"])), **timing)
    h = raw[kind]
    port = resolve_port(h["port"], ports, oid, f"{path}.{kind}.port")
    if kind == "tcpSocket":
        return replace(Probe("tcpSocket", port=port), **timing)
    headers = tuple((str(x["name"]), str(x["value"])) for x in h.get("httpHeaders") or ())
    return replace(Probe("httpGet", port=port, path=str(h.get("path", "/")), headers=headers), **timing)


def resolve_port(port: int | str, ports: Sequence[ContainerPort], oid: str, path: str) -> int:
    """A numeric port, or the containerPort of the named port (an unknown name is refused)."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for p in ports:
        if p.name == port:
            return p.container_port
    raise refuse(oid, path, port)


def _security(raw: Json | None) -> SecurityContext:
    raw = raw or {}
    ape = raw.get("allowPrivilegeEscalation")
    return SecurityContext(
        run_as_user=raw.get("runAsUser"),
        run_as_group=raw.get("runAsGroup"),
        run_as_non_root=raw.get("runAsNonRoot"),
        fs_group=raw.get("fsGroup"),
        read_only_root_filesystem=bool(raw.get("readOnlyRootFilesystem", False)),
        allow_privilege_escalation=None if ape is None else bool(ape),
        drop_capabilities=tuple((raw.get("capabilities") or {}).get("drop") or ()),
        seccomp_profile=(raw.get("seccompProfile") or {}).get("type"),
    )


def _container(raw: Json, oid: str, path: str) -> Container:
    ports = tuple(
        ContainerPort(int(p["containerPort"]), str(p.get("name", "")), str(p.get("protocol", "TCP")))
        for p in raw.get("ports") or ()
    )
    probes = {
        k: _probe(raw[k], ports, oid, f"{path}.{k}")
        for k in ("startupProbe", "readinessProbe", "livenessProbe")
        if k in raw
    }
    hooks: dict[str, tuple[str, ...]] = {}
    for hook, handler in (raw.get("lifecycle") or {}).items():
        if set(handler) != {"exec"}:
            raise refuse(oid, f"{path}.lifecycle.{hook}", handler)
        hooks[hook] = tuple(str(c) for c in handler["exec"]["command"])
    res = raw.get("resources") or {}
    return Container(
        name=str(raw["name"]),
        image=str(raw.get("image", "")),
        command=tuple(str(c) for c in raw.get("command") or ()),
        args=tuple(str(a) for a in raw.get("args") or ()),
        working_dir=str(raw.get("workingDir", "")),
        env=tuple(_env(e, oid, f"{path}.env[{i}]") for i, e in enumerate(raw.get("env") or ())),
        env_from=tuple(_env_from(e) for e in raw.get("envFrom") or ()),
        ports=ports,
        volume_mounts=tuple(
            VolumeMount(str(m["name"]), str(m["mountPath"]), bool(m.get("readOnly", False)), str(m.get("subPath", "")))
            for m in raw.get("volumeMounts") or ()
        ),
        startup_probe=probes.get("startupProbe"),
        readiness_probe=probes.get("readinessProbe"),
        liveness_probe=probes.get("livenessProbe"),
        post_start=hooks.get("postStart"),
        pre_stop=hooks.get("preStop"),
        resources=Resources(dict(res.get("requests") or {}), dict(res.get("limits") or {})),
        security_context=_security(raw.get("securityContext")),
    )


def _projection(kind: Literal["configMap", "secret"], raw: Json, name_key: str) -> Projection:
    items = tuple(
        KeyToPath(str(i["key"]), str(i["path"]), int(i["mode"]) if "mode" in i else None)
        for i in raw.get("items") or ()
    )
    return Projection(kind, str(raw[name_key]), items, bool(raw.get("optional", False)))


def _volume(raw: Json, oid: str, path: str) -> Volume:
    name = str(raw["name"])
    if "emptyDir" in raw:
        ed = raw["emptyDir"] or {}
        size = ed.get("sizeLimit")
        return Volume(
            name, "emptyDir", medium=str(ed.get("medium", "")), size_limit=None if size is None else str(size)
        )
    if "configMap" in raw:
        cm = raw["configMap"]
        return Volume(name, "configMap", (_projection("configMap", cm, "name"),), int(cm.get("defaultMode", 0o644)))
    if "secret" in raw:
        s = raw["secret"]
        return Volume(name, "secret", (_projection("secret", s, "secretName"),), int(s.get("defaultMode", 0o644)))
    if "projected" in raw:
        pr = raw["projected"]
        sources = []
        for src in pr.get("sources") or ():
            if "configMap" in src:
                sources.append(_projection("configMap", src["configMap"], "name"))
            else:
                sources.append(_projection("secret", src["secret"], "name"))
        return Volume(name, "projected", tuple(sources), int(pr.get("defaultMode", 0o644)))
    raise refuse(oid, path, raw)


def _terms(raw: Sequence[Json], weighted: bool) -> tuple[AffinityTerm, ...]:
    out = []
    for t in raw:
        term = t["podAffinityTerm"] if weighted else t
        out.append(
            AffinityTerm(parse_selector(term.get("labelSelector")), str(term["topologyKey"]), int(t.get("weight", 0)))
        )
    return tuple(out)


def parse_pod_spec(raw: Json, oid: str, path: str) -> PodSpec:
    """A PodSpec from its YAML form; ``oid``/``path`` name the place in refusals."""
    anti = (raw.get("affinity") or {}).get("podAntiAffinity") or {}
    return PodSpec(
        containers=tuple(_container(c, oid, f"{path}.containers[{i}]") for i, c in enumerate(raw["containers"])),
        init_containers=tuple(
            _container(c, oid, f"{path}.initContainers[{i}]") for i, c in enumerate(raw.get("initContainers") or ())
        ),
        volumes=tuple(_volume(v, oid, f"{path}.volumes[{i}]") for i, v in enumerate(raw.get("volumes") or ())),
        security_context=_security(raw.get("securityContext")),
        termination_grace_period_seconds=int(raw.get("terminationGracePeriodSeconds", 30)),
        restart_policy=str(raw.get("restartPolicy", "Always")),
        anti_affinity_required=_terms(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or (), False),
        anti_affinity_preferred=_terms(anti.get("preferredDuringSchedulingIgnoredDuringExecution") or (), True),
        spread=tuple(
            SpreadConstraint(
                int(t["maxSkew"]),
                str(t["topologyKey"]),
                t["whenUnsatisfiable"] == "DoNotSchedule",
                parse_selector(t.get("labelSelector")),
            )
            for t in raw.get("topologySpreadConstraints") or ()
        ),
        node_selector=dict(raw.get("nodeSelector") or {}),
        enable_service_links=bool(raw.get("enableServiceLinks", True)),
        hostname=str(raw.get("hostname", "")),
        subdomain=str(raw.get("subdomain", "")),
        tolerations=tuple(_toleration(t) for t in raw.get("tolerations") or ()),
        priority_class=str(raw.get("priorityClassName", "")),
    )


def _toleration(raw: Json) -> Toleration:
    seconds = raw.get("tolerationSeconds")
    return Toleration(
        str(raw.get("key", "")),
        str(raw.get("operator", "Equal")),
        str(raw.get("value", "")),
        str(raw.get("effect", "")),
        None if seconds is None else int(seconds),
    )


def _template(raw: Json, oid: str) -> PodTemplate:
    meta = raw.get("metadata") or {}
    return PodTemplate(
        dict(meta.get("labels") or {}),
        dict(meta.get("annotations") or {}),
        parse_pod_spec(raw["spec"], oid, "spec.template.spec"),
    )


def _check_mounts(spec: PodSpec, claims: Sequence[str], oid: str) -> None:
    # The API server rejects a mount of an undeclared volume; so must the model.
    known = {v.name for v in spec.volumes} | set(claims)
    for ci, c in enumerate((*spec.init_containers, *spec.containers)):
        for mi, m in enumerate(c.volume_mounts):
            if m.name not in known:
                raise InvalidObjectError(
                    f"{oid}: container {c.name!r} mounts undeclared volume {m.name!r} (container #{ci}, mount #{mi})"
                )


class InvalidObjectError(ValueError):
    """The object would be rejected by the API server (not a question of local support)."""


def _check_selector(sel: LabelSelector, labels: Mapping[str, str], oid: str) -> None:
    if not sel.matches(labels):
        raise InvalidObjectError(f"{oid}: spec.selector does not match spec.template.metadata.labels")


def parse_statefulset(obj: Json) -> StatefulSet:
    """A StatefulSet from its YAML form (already audited)."""
    name, ns, labels = _meta(obj)
    oid = object_id(obj)
    spec = obj["spec"]
    tmpl = _template(spec["template"], oid)
    claims = tuple(
        ClaimTemplate(
            str(c["metadata"]["name"]),
            str(((c.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "")),
            str((c.get("spec") or {}).get("storageClassName", "")),
        )
        for c in spec.get("volumeClaimTemplates") or ()
    )
    sel = parse_selector(spec.get("selector"))
    _check_selector(sel, tmpl.labels, oid)
    _check_mounts(tmpl.spec, [c.name for c in claims], oid)
    upd = spec.get("updateStrategy") or {}
    retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    return StatefulSet(
        name=name,
        namespace=ns,
        labels=labels,
        replicas=int(spec.get("replicas", 1)),
        selector=sel,
        service_name=str(spec.get("serviceName", "")),
        pod_management_policy=str(spec.get("podManagementPolicy", "OrderedReady")),
        update_strategy=str(upd.get("type", "RollingUpdate")),
        partition=int((upd.get("rollingUpdate") or {}).get("partition", 0)),
        ordinal_start=int((spec.get("ordinals") or {}).get("start", 0)),
        min_ready_seconds=int(spec.get("minReadySeconds", 0)),
        template=tmpl,
        claims=claims,
        retain_when_deleted=retention.get("whenDeleted", "Retain") == "Retain",
        retain_when_scaled=retention.get("whenScaled", "Retain") == "Retain",
    )


def parse_deployment(obj: Json) -> Deployment:
    """A Deployment from its YAML form (already audited)."""
    name, ns, labels = _meta(obj)
    oid = object_id(obj)
    spec = obj["spec"]
    tmpl = _template(spec["template"], oid)
    sel = parse_selector(spec.get("selector"))
    _check_selector(sel, tmpl.labels, oid)
    _check_mounts(tmpl.spec, [], oid)
    strategy = spec.get("strategy") or {}
    ru = strategy.get("rollingUpdate") or {}
    return Deployment(
        name=name,
        namespace=ns,
        labels=labels,
        replicas=int(spec.get("replicas", 1)),
        selector=sel,
        strategy=str(strategy.get("type", "RollingUpdate")),
        max_surge=ru.get("maxSurge", "25%"),
        max_unavailable=ru.get("maxUnavailable", "25%"),
        min_ready_seconds=int(spec.get("minReadySeconds", 0)),
        template=tmpl,
        raw_template=spec["template"],
    )


def parse_job(obj: Json) -> Job:
    """A Job from its YAML form (already audited)."""
    name, ns, labels = _meta(obj)
    oid = object_id(obj)
    spec = obj["spec"]
    tmpl = _template(spec["template"], oid)
    if tmpl.spec.restart_policy not in ("Never", "OnFailure"):
        raise InvalidObjectError(f"{oid}: a Job's pods must use restartPolicy Never or OnFailure")
    _check_mounts(tmpl.spec, [], oid)
    deadline = spec.get("activeDeadlineSeconds")
    return Job(
        name=name,
        namespace=ns,
        labels=labels,
        backoff_limit=int(spec.get("backoffLimit", 6)),
        active_deadline_seconds=None if deadline is None else int(deadline),
        completions=int(spec.get("completions", 1)),
        parallelism=int(spec.get("parallelism", 1)),
        template=tmpl,
    )


def parse_service(obj: Json) -> Service:
    """A Service from its YAML form (already audited)."""
    name, ns, _ = _meta(obj)
    spec = obj.get("spec") or {}
    ports = tuple(
        ServicePort(
            int(p["port"]), p.get("targetPort", p["port"]), str(p.get("name", "")), str(p.get("protocol", "TCP"))
        )
        for p in spec.get("ports") or ()
    )
    return Service(
        name=name,
        namespace=ns,
        selector=dict(spec.get("selector") or {}),
        ports=ports,
        headless=spec.get("clusterIP") == "None",
        publish_not_ready_addresses=bool(spec.get("publishNotReadyAddresses", False)),
    )


def parse_secret(obj: Json) -> Secret:
    """A Secret: base64 ``data`` decoded, ``stringData`` merged over it as the API server does."""
    name, ns, _ = _meta(obj)
    data: dict[str, bytes] = {k: base64.b64decode(str(v)) for k, v in (obj.get("data") or {}).items()}
    masked = {k for k, v in data.items() if v == MASKED.encode()}
    for k, v in (obj.get("stringData") or {}).items():
        data[k] = str(v).encode()
        if v == MASKED:
            masked.add(k)
        else:
            masked.discard(k)
    return Secret(name, ns, data, frozenset(masked))


def parse_configmap(obj: Json) -> ConfigMap:
    """A ConfigMap from its YAML form."""
    name, ns, _ = _meta(obj)
    binary = {k: base64.b64decode(str(v)) for k, v in (obj.get("binaryData") or {}).items()}
    return ConfigMap(name, ns, {k: str(v) for k, v in (obj.get("data") or {}).items()}, binary)


def parse_pdb(obj: Json) -> PodDisruptionBudget:
    """A PodDisruptionBudget from its YAML form."""
    name, ns, _ = _meta(obj)
    spec = obj.get("spec") or {}
    if ("maxUnavailable" in spec) == ("minAvailable" in spec):
        raise InvalidObjectError(f"{object_id(obj)}: exactly one of minAvailable and maxUnavailable is needed")
    return PodDisruptionBudget(
        name,
        ns,
        parse_selector(spec.get("selector")),
        spec.get("maxUnavailable"),
        spec.get("minAvailable"),
        spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
    )


def add_object(plan: Plan, obj: Json) -> None:
    """Audit ``obj`` (raising on any refused field), record its deltas and add it to ``plan``."""
    plan.deltas.extend(check(obj))
    kind = obj["kind"]
    parsers: dict[str, tuple[Any, list[Any]]] = {
        "StatefulSet": (parse_statefulset, plan.statefulsets),
        "Deployment": (parse_deployment, plan.deployments),
        "Job": (parse_job, plan.jobs),
        "Service": (parse_service, plan.services),
        "Secret": (parse_secret, plan.secrets),
        "ConfigMap": (parse_configmap, plan.configmaps),
        "PodDisruptionBudget": (parse_pdb, plan.pdbs),
    }
    raw_lists = {
        "Namespace": plan.namespaces,
        "NetworkPolicy": plan.network_policies,
        "StorageClass": plan.storage_classes,
        "PriorityClass": plan.priority_classes,
        "HorizontalPodAutoscaler": plan.autoscalers,
        "ScaledObject": plan.autoscalers,
        "TriggerAuthentication": plan.autoscalers,
        "PodMonitoring": plan.monitoring,
        "Rules": plan.monitoring,
        "PodMonitor": plan.monitoring,
        "PrometheusRule": plan.monitoring,
    }
    if kind in parsers:
        parse, target = parsers[kind]
        target.append(parse(obj))
    else:
        raw_lists[kind].append(obj)


def load_objects(plan_dir: Path) -> list[Json]:
    """The raw objects of ``<plan_dir>/kubernetes/*.yaml`` in file-name order (one or more docs per file)."""
    files = sorted((plan_dir / "kubernetes").glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no Kubernetes objects under {plan_dir / 'kubernetes'}")
    out: list[Json] = []
    for f in files:
        out.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return out


def load_plan(plan_dir: Path) -> Plan:
    """Load and audit a plan directory; raises UnsupportedFieldError listing every refused field."""
    plan = Plan()
    refused = []
    # Audit everything first, so one run names every refused field of every object.
    for obj in load_objects(plan_dir):
        _, r = audit(obj)
        refused.extend(r)
    if refused:
        raise UnsupportedFieldError(refused)
    for obj in load_objects(plan_dir):
        add_object(plan, obj)
    return plan


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity(q: str | int | float) -> float:
    """A Kubernetes quantity as a number: ``"500m"`` -> 0.5, ``"1024Mi"`` -> 1073741824."""
    if isinstance(q, int | float):
        return float(q)
    m = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", q.strip())
    if m is None:
        raise ValueError(f"not a quantity: {q!r}")
    number, suffix = float(m.group(1)), m.group(2)
    if suffix == "m":
        return number / 1000
    return number * _SUFFIX[suffix] if suffix else number
