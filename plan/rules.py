"""What makes the providers replace a resource, as data, with the source each table was read from.

Pure (no pulumi import): plan/diff.py applies these to two plans, and drill/ may read them.

Sources (read at these commits; the SDK versions pinned in pyproject.toml are in brackets):
- pulumi-kubernetes @ 94977969d641 (4.3x HEAD, 2026-07-01) [4.34.2]:
  provider/pkg/provider/diff.go (forceNew tables, forceNewProperties),
  provider/pkg/provider/provider.go (Diff: delete-before-replace for user-set names; DiffConfig:
  the provider is replaced only when clusterIdentifier changes or the kubeconfig is unknown).
- pulumi/pulumi @ 1b5949891b3c (2026-08-21) [3.272.0]: pkg/resource/deploy/step_generator.go
  (processIgnoreChanges, applyReplaceOnChanges, calculateDependentReplacements).
- hashicorp/terraform-provider-google @ e03b7622a26c (v7.45.0+, 2026-08-21), which pulumi-gcp
  bridges [10.2.0]: google/services/container/{resource_container_cluster.go,
  resource_container_node_pool.go, node_config.go}, google/services/artifactregistry/
  resource_artifact_registry_repository.go, resourcemanager/, kms/, tpgiamresource/: `ForceNew: true`.
- hashicorp/terraform-provider-tls @ d72d90e1b47b (v4.2.1) [pulumi-tls 5.6.2]:
  internal/provider/resource_*.go (RequiresReplace on every input but early_renewal_hours),
  common_cert.go modifyPlanIfCertificateReadyForRenewal (renewal only on an `up` in the window).
- hashicorp/terraform-provider-random @ ad788e233bb4 (v3.9.0) [pulumi-random 4.21.4]:
  internal/provider/resource_password.go (RequiresReplace on every input, keepers included).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]
"""A property path: keys and list indices, e.g. ("spec", "template", "spec", "containers", 0, "image")."""

Pattern = tuple[str, ...]
"""A path pattern: keys, with "*" for any list index (diff.go's `[*]`)."""

# --- property paths (Pulumi's syntax: a.b[0]["c.d"]) ----------------------------------------------

_TOKEN = re.compile(r'\.?([A-Za-z0-9_$/-]+)|\[(\d+|\*)\]|\["((?:[^"\\]|\\.)*)"\]')


def parse_path(text: str) -> Path:
    """Pulumi property path syntax (resource.ParsePropertyPath) into parts; `[*]` stays "*"."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a property path: {text!r} (at {pos})")
        key, index, quoted = m.groups()
        if key is not None:
            parts.append(key)
        elif index is not None:
            parts.append("*" if index == "*" else int(index))
        else:
            parts.append(quoted.replace('\\"', '"'))
        pos = m.end()
    return tuple(parts)


def format_path(path: Iterable[str | int]) -> str:
    """The inverse of parse_path: keys with dots or brackets are quoted (`metadata.annotations["a/b.c"]`)."""
    out = ""
    for part in path:
        if isinstance(part, int) or part == "*":
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_$-]+", part):
            out += f".{part}" if out else part
        else:
            out += '["' + part.replace('"', '\\"') + '"]'
    return out


def pattern(text: str) -> Pattern:
    """diff.go's `.spec.containers[*].image` into ("spec", "containers", "*", "image")."""
    return tuple(str(p) for p in parse_path(text.lstrip(".")))


def covers(prefix: Pattern | Path, path: Path) -> bool:
    """True when `prefix` is `path` or an ancestor of it ("*" matches any list index)."""
    if len(prefix) > len(path):
        return False
    return all(str(p) in ("*", str(q)) for p, q in zip(prefix, path, strict=False))


def lookup(value: Any, path: Pattern | Path) -> bool:
    """True when `path` exists in `value` ("*" matches any element of a list)."""
    if not path:
        return True
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping):
        return head in value and lookup(value[head], rest)
    if isinstance(value, list):
        if head == "*":
            return any(lookup(v, rest) for v in value)
        return isinstance(head, int) and head < len(value) and lookup(value[head], rest)
    return False


# --- pulumi-kubernetes: provider/pkg/provider/diff.go -------------------------------------------

_LABEL_SELECTOR = (
    "matchExpressions",
    "matchExpressions.key",
    "matchExpressions.operator",
    "matchExpressions.values",
    "matchLabels",
)


def _selector(prefix: str) -> tuple[str, ...]:
    """labelSelectorForceNewProperties."""
    return tuple(f"{prefix}.{p}" for p in _LABEL_SELECTOR)


_CONTAINER = (
    "args",
    "command",
    "env",
    "env.value",
    "image",
    "imagePullPolicy",
    "lifecycle",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "stdin",
    "stdinOnce",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
    "volumeDevices",
    "volumeMounts",
    "workingDir",
)

_STATEFULSET = (
    ".spec.podManagementPolicy",
    ".spec.revisionHistoryLimit",
    ".spec.selector",
    ".spec.serviceName",
    ".spec.volumeClaimTemplates",
    *_selector(".spec.selector"),
)
_SELECTOR_ONLY = (".spec.selector", *_selector(".spec.selector"))
_JOB = (".spec.completions", ".spec.parallelism", ".spec.selector", ".spec.template", *_selector(".spec.selector"))
_POD = (
    *(
        f".spec.{f}"
        for f in (
            "affinity",
            "automountServiceAccountToken",
            "dnsConfig",
            "dnsPolicy",
            "enableServiceLinks",
            "hostAliases",
            "hostIPC",
            "hostNetwork",
            "hostPID",
            "hostname",
            "imagePullSecrets",
            "nodeName",
            "nodeSelector",
            "overhead",
            "preemptionPolicy",
            "priority",
            "priorityClassName",
            "readinessGates",
            "restartPolicy",
            "runtimeClassName",
            "schedulerName",
            "securityContext",
            "serviceAccount",
            "serviceAccountName",
            "shareProcessNamespace",
            "subdomain",
            "terminationGracePeriodSeconds",
            "volumes",
        )
    ),
    *(f".spec.{c}[*].{f}" for c in ("containers", "initContainers") for f in _CONTAINER),
)

KUBERNETES_FORCE_NEW: Mapping[tuple[str, str], tuple[str, ...]] = {
    # (apiVersion, kind) -> diff.go's forceNew entry. Kinds absent here (ConfigMap aside) replace
    # only on .metadata.name/.namespace: policy/v1 PodDisruptionBudget, NetworkPolicy, Namespace, CRs.
    ("apps/v1", "StatefulSet"): _STATEFULSET,
    ("apps/v1", "Deployment"): _SELECTOR_ONLY,
    ("apps/v1", "DaemonSet"): _SELECTOR_ONLY,
    ("batch/v1", "Job"): _JOB,
    ("policy/v1beta1", "PodDisruptionBudget"): (".spec",),
    ("storage.k8s.io/v1", "StorageClass"): (".parameters", ".provisioner"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (".roleRef",),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (".roleRef",),
    ("v1", "Secret"): (".type",),
    ("v1", "Service"): (".spec.clusterIP",),
    ("v1", "ResourceQuota"): (".spec.scopes",),
    ("v1", "PersistentVolumeClaim"): (
        ".spec.accessModes",
        ".spec.selector",
        ".spec.storageClassName",
        ".spec.volumeName",
        *_selector(".spec.selector"),
    ),
    ("v1", "Pod"): _POD,
}

METADATA_FORCE_NEW = (".metadata.name", ".metadata.namespace")
"""metadataForceNewProperties: every kind."""


@dataclass(frozen=True)
class KubernetesProviderOptions:
    """The Provider inputs that change what is force-new (read from the plan's pulumi:providers:kubernetes)."""

    enable_config_map_mutable: bool = False
    enable_secret_mutable: bool = False

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> KubernetesProviderOptions:
        # Provider inputs reach the engine as strings ("true") or booleans, depending on the SDK path.
        def flag(key: str) -> bool:
            return str(inputs.get(key, "false")).lower() == "true"

        return cls(flag("enableConfigMapMutable"), flag("enableSecretMutable"))


def kubernetes_force_new(inputs: Mapping[str, Any], options: KubernetesProviderOptions) -> tuple[Pattern, ...]:
    """kubeProvider.forceNewProperties for an object's inputs.

    ConfigMap data and Secret data/type are force-new unless the provider enables mutability and the
    object is not `immutable: true` (clients.IsImmutable)."""
    api_version, kind = str(inputs.get("apiVersion", "")), str(inputs.get("kind", ""))
    props: list[str] = list(METADATA_FORCE_NEW)
    immutable = bool(inputs.get("immutable", False))
    if kind == "Secret" and api_version == "v1" and (not options.enable_secret_mutable or immutable):
        props += [".type", ".stringData", ".data"]
    elif (api_version, kind) in KUBERNETES_FORCE_NEW:
        props += KUBERNETES_FORCE_NEW[(api_version, kind)]
    elif kind == "ConfigMap" and api_version == "v1" and (not options.enable_config_map_mutable or immutable):
        props += [".binaryData", ".data"]
    return tuple(pattern(p) for p in props)


KUBERNETES_PROVIDER_REPLACE_KEYS = ("clusterIdentifier",)
"""DiffConfig: a changed clusterIdentifier replaces the provider (and so every object it manages);
with clusterIdentifier set and unchanged, no other change does. An unknown kubeconfig/context/cluster
replaces it too."""

# --- pulumi-gcp (terraform-provider-google `ForceNew: true`), for the fields this program sets ------

GCP_FORCE_NEW: Mapping[str, tuple[str, ...]] = {
    # resource_container_cluster.go; nodeConfig is schemaNodeConfig (node_config.go). Not force-new:
    # databaseEncryption, deletionProtection, enableShieldedNodes, maintenancePolicy, masterAuthorizedNetworksConfig,
    # minMasterVersion, monitoringConfig, nodeLocations, privateClusterConfig.enablePrivateNodes, releaseChannel,
    # removeDefaultNodePool, resourceLabels, workloadIdentityConfig.
    "gcp:container/cluster:Cluster": (
        "name",
        "location",
        "project",
        "datapathProvider",
        "initialNodeCount",
        "ipAllocationPolicy",
        "networkingMode",
        "privateClusterConfig.masterIpv4CidrBlock",
        "privateClusterConfig.privateEndpointSubnetwork",
        "nodeConfig.oauthScopes",
        "nodeConfig.serviceAccount",
        "nodeConfig.spot",
        "nodeConfig.shieldedInstanceConfig",
    ),
    # resource_container_node_pool.go + node_config.go. Not force-new: management, nodeCount, nodeLocations,
    # upgradeSettings, nodeConfig.{machineType, diskSizeGb, diskType, labels, resourceLabels,
    # workloadMetadataConfig} (updated in place by recreating the nodes, surge by surge).
    "gcp:container/nodePool:NodePool": (
        "name",
        "cluster",
        "location",
        "project",
        "initialNodeCount",
        "nodeConfig.oauthScopes",
        "nodeConfig.serviceAccount",
        "nodeConfig.spot",
        "nodeConfig.shieldedInstanceConfig",
    ),
    # resource_artifact_registry_repository.go. Not force-new: cleanupPolicies, cleanupPolicyDryRun,
    # description, dockerConfig, labels, vulnerabilityScanningConfig.
    "gcp:artifactregistry/repository:Repository": (
        "repositoryId",
        "location",
        "project",
        "format",
        "mode",
        "kmsKeyName",
    ),
    "gcp:projects/service:Service": ("service", "project"),
    "gcp:serviceaccount/account:Account": ("accountId", "project"),
    "gcp:projects/iAMMember:IAMMember": ("project", "role", "member", "condition"),
    "gcp:kms/keyRing:KeyRing": ("name", "location", "project"),
    "gcp:kms/cryptoKey:CryptoKey": ("name", "keyRing", "purpose", "importOnly", "destroyScheduledDuration"),
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember": ("cryptoKeyId", "role", "member", "condition"),
}

# --- pulumi-random / pulumi-tls: every input is RequiresReplace --------------------------------

UPDATABLE_INPUTS: Mapping[str, frozenset[str]] = {
    "tls:index/locallySignedCert:LocallySignedCert": frozenset({"earlyRenewalHours"}),
    "tls:index/selfSignedCert:SelfSignedCert": frozenset({"earlyRenewalHours"}),
}
"""The inputs of random/tls resources that update in place; any other input change replaces."""

GENERATING_PREFIXES = ("random:", "tls:")
"""Providers whose outputs are generated: plan.mocks gives a replaced one new values, so its dependents'
changes show in the plan itself."""


def all_inputs_force_new(token: str) -> bool:
    return token.startswith(GENERATING_PREFIXES)


def replaces_on(token: str, path: Path, value_old: Any = None, value_new: Any = None) -> tuple[str, ...]:
    """The force-new fields of a non-Kubernetes resource a change at `path` touches (bridged providers)."""
    if all_inputs_force_new(token):
        top = str(path[0]) if path else ""
        return () if top in UPDATABLE_INPUTS.get(token, frozenset()) else (top or "inputs",)
    hits: list[str] = []
    for field in GCP_FORCE_NEW.get(token, ()):
        pat = pattern(field)
        inside = covers(pat, path)
        # A whole block added, removed or unknown holds the field when the field is in it.
        holds = covers(path, tuple(pat)) and (
            lookup(value_old, pat[len(path) :]) or lookup(value_new, pat[len(path) :])
        )
        if inside or holds:
            hits.append(field)
    return tuple(hits)


# --- stateful objects -------------------------------------------------------------------------

STATEFUL_KINDS = frozenset({"StatefulSet", "StorageClass", "PersistentVolumeClaim", "PersistentVolume"})
STATEFUL_TYPES = frozenset(
    {
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
        "gcp:artifactregistry/repository:Repository",
    }
)
