"""Typed, validated stack settings: the only module that reads Pulumi config.

The defaults, types and descriptions live in Pulumi.yaml's ``config:`` block; this module
reads that block too, because Pulumi does not apply project defaults under mocks (the
unit tests and ``make plan``). Every invalid value is reported before any resource is
registered, all problems at once, each naming the key, the value given and what is
allowed.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import itertools
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from contract import lanes as lane_contract
from contract import machines, timing
from contract.image import ImagePlatforms
from contract.wire import (
    DELIVERY_LIMIT,
    GMP_NAMESPACE,
    MAX_CONCURRENCY,
    SCHEDULER_RUN_PATTERN,
    Autoscaling,
    max_memory_per_child_kib,
    quorum_safe,
)
from monitoring.scrape import MetricsCollection

PROJECT = "ha-celery"
PROJECT_FILE = Path(__file__).with_name("Pulumi.yaml")

REGION_RE = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")
ZONE_RE = re.compile(r"^(?P<region>[a-z]+(?:-[a-z]+)+[0-9]+)-[a-z]$")
MACHINE_TYPE_RE = re.compile(r"^(?P<family>[a-z][a-z0-9]*)-[a-z0-9-]+$")
K8S_MINOR_RE = re.compile(r"^1\.(?P<minor>[0-9]{2})$")
# A full version tag: floating tags (4.3, latest) would change the broker on a reschedule.
RABBITMQ_IMAGE_RE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?(?:[a-z0-9._-]+/)*rabbitmq:4\.3\.[0-9]+(?:-management)?(?:-alpine)?$"
)
GCP_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
MAINTENANCE_WINDOW_RE = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$")
MAINTENANCE_EXCLUSION_RE = re.compile(r"^(?P<start>[0-9]{4}-[0-9]{2}-[0-9]{2})/(?P<end>[0-9]{4}-[0-9]{2}-[0-9]{2})$")
MAX_EXCLUSION_DAYS = 30
"""GKE's limit on one "no upgrades" maintenance exclusion."""
MAX_AUTHORIZED_NETWORKS = 50
"""GKE's limit on authorized networks of a cluster with a public endpoint."""
# Registries the nodes reach without internet egress (Private Google Access): Artifact Registry
# (<region>-docker.pkg.dev and its gcr.io domains).
GOOGLE_REGISTRY_RE = re.compile(r"^(?:[a-z0-9-]+-docker\.pkg\.dev|(?:[a-z]+\.)?gcr\.io)/")

SERVICE_ACCOUNT_ID_MAX = 30
"""GCP's limit on a service account id (6-30 of [a-z0-9-], a letter first, no hyphen last)."""
STACK_MAX = SERVICE_ACCOUNT_ID_MAX - len(f"{PROJECT}--nodes")
"""Longest stack name: components.gke names the node service account ``ha-celery-<stack>-nodes``,
and a name that needs cutting to 30 could end in a hyphen or collide with another stack's. The
other names built from the stack are looser: the repository id ``ha-celery-<stack>`` (63), the
cluster and node pool (40, with Pulumi's 8-character suffix) and the label value (63)."""
# The common subset of GCP's rules for SA ids, Artifact Registry repository ids and label values.
STACK_RE = re.compile(rf"^[a-z](?:[a-z0-9-]{{0,{STACK_MAX - 2}}}[a-z0-9])?$")
NAMESPACE_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes namespace name (an RFC 1123 DNS label)."""

# Machine families that attach Hyperdisk only (Compute Engine "disk types" per family).
HYPERDISK_ONLY_FAMILIES = frozenset({"n4", "c4", "c4a", "c4d", "x4", "a4", "a4x", "m4", "h4d"})
# Families that cannot attach Hyperdisk Balanced at all.
PD_ONLY_FAMILIES = frozenset({"e2", "n1", "f1", "g1", "t2a"})
# Arm (arm64) families: Tau T2A (Ampere Altra), C4A and N4A (Axion), A4X (NVIDIA Grace). Every
# other family is x86-64. Machines of these run only images built for linux/arm64.
ARM_FAMILIES = frozenset({"t2a", "c4a", "n4a", "a4x"})


# Kubernetes label keys (optional DNS-subdomain prefix, a name of at most 63) and values.
LABEL_KEY_RE = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


MAX_VALUE_CHARS = 4096
"""Longest raw value of any key: 50 authorized CIDRs as a JSON list are ~1,000 characters."""
MAX_IMAGE_CHARS = 255
"""Longest image reference name (the distribution spec's reference.NameTotalLengthMax)."""
MAX_SHOWN_CHARS = 80
"""Longest value an error echoes: the rest is counted, never printed."""
MAX_PROBLEMS_SHOWN = 40
INTEGER_TEXT_RE = re.compile(r"-?[0-9]{1,18}")
"""An integer as `pulumi config set` stores one: ASCII digits (not "1e3", "٣", " 3" or "0x10")."""
MAX_NODES_PER_ZONE = 1000
"""GKE's limit on the nodes of one node pool in one zone (Quotas and limits: "Nodes per node pool zone")."""
MAX_DISK_GB = 65536
"""Compute Engine's largest persistent disk and Hyperdisk Balanced volume: 64 TiB."""
MAX_SCHEDULER_TASKS = 1_000_000
"""The scheduler Job's activeDeadlineSeconds (3600 s) at the pipelined publisher's measured ~470
tasks/s (BENCHMARKS.md) publishes ~1.7 M: a larger batch would be killed half published."""
SCHEDULER_POD = (100, 128)
"""CPU millis and memory MiB the scheduler Job's pod requests (components.workers)."""
KNOWN_NAMESPACES = ("gcp", "kubernetes", "random", "tls", "docker-build", "pulumi")
"""Config namespaces besides ours: the providers the program uses, and Pulumi's own."""

E = TypeVar("E", bound=StrEnum)


def shown(value: object) -> str:
    """``repr(value)``, cut to MAX_SHOWN_CHARS with a count of the rest: errors never echo a megabyte."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text) - MAX_SHOWN_CHARS} more characters)"


class SettingsError(ValueError):
    """One or more stack settings are invalid; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = [f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            listed.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
        super().__init__("invalid stack settings:\n" + "\n".join(listed))


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class ReleaseChannel(StrEnum):
    RAPID = "RAPID"
    REGULAR = "REGULAR"
    STABLE = "STABLE"


class DiskType(StrEnum):
    """Compute Engine disk types, as GKE and the PD CSI driver name them."""

    PD_STANDARD = "pd-standard"
    PD_BALANCED = "pd-balanced"
    PD_SSD = "pd-ssd"
    HYPERDISK_BALANCED = "hyperdisk-balanced"

    @property
    def is_hyperdisk(self) -> bool:
        return self.value.startswith("hyperdisk")


class BrokerStorage(StrEnum):
    """The RabbitMQ disk kinds users choose from, each one Compute Engine disk type."""

    SSD = "ssd"
    BALANCED = "balanced"
    STANDARD = "standard"
    HYPERDISK = "hyperdisk"

    @property
    def disk_type(self) -> DiskType:
        return {
            BrokerStorage.SSD: DiskType.PD_SSD,
            BrokerStorage.BALANCED: DiskType.PD_BALANCED,
            BrokerStorage.STANDARD: DiskType.PD_STANDARD,
            BrokerStorage.HYPERDISK: DiskType.HYPERDISK_BALANCED,
        }[self]


@dataclass(frozen=True)
class ClusterSettings:
    project: str
    """GCP project id (``gcp:project``)."""
    region: str
    """Region of the cluster and the registry, derived from ``location``."""
    location: str
    """A zone (zonal cluster) or a region (regional cluster)."""
    node_zones: tuple[str, ...]
    """Zones that carry nodes: the zone itself for a zonal cluster."""
    node_count: int
    """Nodes in the whole cluster; GKE's node_count is per zone, see ``nodes_per_zone``."""
    machine_type: str
    spot_nodes: bool
    node_disk_type: DiskType
    node_disk_size_gb: int
    release_channel: ReleaseChannel
    kubernetes_version: str
    """major.minor: the control-plane floor and the schema version of the offline plan."""
    deletion_protection: bool
    private_nodes: bool
    """Nodes get internal IP addresses only (the control plane keeps its public endpoint). Images come
    from Artifact Registry over Private Google Access; there is no Cloud NAT, so nothing else is
    pullable (hence privateNodes needs mirrorRabbitmqImage or a brokerImage in Artifact Registry)."""
    master_authorized_networks: tuple[str, ...]
    """IPv4 CIDRs allowed to reach the control plane; empty: any address (GKE's default). The machine
    running `pulumi up` must be in one, or the Kubernetes provider cannot reach the cluster."""
    secrets_encryption: bool
    """Kubernetes Secrets encrypted at the application layer with a Cloud KMS key of this stack
    (a few cents a month per key version; the key rotates every 90 days)."""
    maintenance_window: str
    """Daily start of GKE's 4-hour maintenance window, HH:MM UTC; empty: GKE picks any time."""
    maintenance_exclusions: tuple[tuple[str, str], ...]
    """(first, last) ISO days, UTC, without any upgrade (at most 30 days each; needs a window). Strings:
    the plan writes the settings as JSON."""

    @property
    def regional(self) -> bool:
        return self.location == self.region

    @property
    def nodes_per_zone(self) -> int:
        return self.node_count // len(self.node_zones)


class RegistryDomain(StrEnum):
    """Where the images live: a regional Artifact Registry repository, or a gcr.io-domain one.

    Artifact Registry hosts the gcr.io domains (Container Registry itself takes no pushes since
    March 2025): such a repository's id is the domain and its location the domain's multi-region.
    """

    PKG_DEV = "pkg.dev"
    GCR_IO = "gcr.io"
    US_GCR_IO = "us.gcr.io"
    EU_GCR_IO = "eu.gcr.io"
    ASIA_GCR_IO = "asia.gcr.io"

    @property
    def gcr(self) -> bool:
        return self is not RegistryDomain.PKG_DEV

    @property
    def multi_region(self) -> str:
        """The Artifact Registry multi-region that serves a gcr.io domain (gcr.io itself is served from us)."""
        return {"gcr.io": "us", "us.gcr.io": "us", "eu.gcr.io": "europe", "asia.gcr.io": "asia"}[self.value]


@dataclass(frozen=True)
class RegistrySettings:
    domain: RegistryDomain
    """pkg.dev (default): a repository of this stack in the cluster's region, pulls stay in-region and
    free. A gcr.io domain: the project's repository of that name, so images keep Container Registry's
    ``gcr.io/<project>/<image>`` names (pulls from a multi-region may cross regions)."""
    location: str
    """Artifact Registry location: the cluster's region (pkg.dev) or the gcr.io domain's multi-region."""
    mirror_rabbitmq_image: bool
    image_platforms: ImagePlatforms
    """What the worker and mirror images are built for: amd64 (default, one native build) or
    amd64,arm64 (a multi-arch index, for Arm node pools; the arm64 half is emulated or needs an
    arm64 builder, so builds take longer)."""

    @property
    def repository_id(self) -> str | None:
        """The fixed repository id of a gcr.io domain; None: the program names its own."""
        return self.domain.value if self.domain.gcr else None


@dataclass(frozen=True)
class BrokerSettings:
    replicas: int
    storage: BrokerStorage
    storage_gi: int
    image: str
    cpu_millis: int
    memory_mib: int
    tls: bool = False
    """AMQP over TLS only (port 5671, no plain listener), with a CA and per-node certificates the
    program generates; clients verify the CA and each node's name. On in prod: credentials and task
    payloads cross node boundaries (GKE's pod network is not encrypted by default). Off in dev: a
    throwaway cluster without production data, where plain AMQP keeps debugging (tcpdump, any
    client without the CA) simple and the drills as fast as they were; turn it on to test TLS."""


@dataclass(frozen=True)
class WorkerSettings:
    replicas: int
    concurrency: int
    cpu_millis: int
    memory_mib: int
    scheduler_enabled: bool
    scheduler_tasks: int
    scheduler_run: str
    autoscaling: Autoscaling
    autoscaling_max_replicas: int
    lanes: tuple[lane_contract.Lane, ...] = ()
    """Every lane, the default one first (its pods, concurrency and size are the four keys above)."""


@dataclass(frozen=True)
class MonitoringSettings:
    collection: MetricsCollection
    """managed (default: GKE's own Managed Service for Prometheus, no Prometheus to run),
    prometheus-operator, or none."""
    operator_labels: tuple[tuple[str, str], ...]
    """(key, value) labels on the prometheus-operator objects, for its selectors."""
    dashboard: bool
    """Ship the Grafana dashboard ConfigMap."""


@dataclass(frozen=True)
class NetworkSettings:
    ops_namespace: str
    """Where an ops-labelled pod reaches the broker's AMQP and management ports."""
    metrics_namespaces: tuple[str, ...]
    """Whose pods may scrape the broker's and the workers' metrics ports: gmp-system, plus
    prometheusNamespace if set."""


@dataclass(frozen=True)
class Settings:
    stack: str
    environment: Environment
    cluster: ClusterSettings
    registry: RegistrySettings
    broker: BrokerSettings
    workers: WorkerSettings
    monitoring: MonitoringSettings
    network: NetworkSettings

    @property
    def production(self) -> bool:
        return self.environment is Environment.PROD


@cache
def schema() -> Mapping[str, Mapping[str, Any]]:
    """The ``config:`` block of Pulumi.yaml: key -> {type, default?, description}."""
    data = yaml.safe_load(PROJECT_FILE.read_text())
    config: dict[str, dict[str, Any]] = data["config"]
    return config


class _Reader:
    """Reads raw config values, applying Pulumi.yaml defaults and collecting problems."""

    def __init__(self, raw: Mapping[str, str], secret_keys: Collection[str] = ()) -> None:
        self.raw = raw
        self.secret_keys = frozenset(secret_keys)
        self.problems: list[str] = []

    def fail(self, key: str, value: object, allowed: str) -> None:
        # One problem per key: a follow-on check on a value already rejected only adds noise.
        if self.failed(key):
            return
        secret = key in self.secret_keys or key.removeprefix(f"{PROJECT}:") in self.secret_keys
        self.problems.append(f"{key}: got {shown('[secret]') if secret else shown(value)}; allowed: {allowed}")

    def failed(self, key: str) -> bool:
        """Whether a problem was already reported for ``key`` (a cross-field rule then skips it)."""
        return any(p.startswith(f"{key}: ") for p in self.problems)

    def _value(self, key: str) -> Any:
        """The value of ``key`` with the schema's type applied as Pulumi applies it to a stored
        string; a string that is not of the type stays a string, for the reader to refuse."""
        spec = schema()[key]
        if f"{PROJECT}:{key}" not in self.raw and key not in self.raw:
            return spec.get("default")
        text = self.raw.get(f"{PROJECT}:{key}", self.raw.get(key))
        if not isinstance(text, str):
            return text
        if len(text) > MAX_VALUE_CHARS:
            self.fail(f"{PROJECT}:{key}", text, f"at most {MAX_VALUE_CHARS} characters")
            return None
        return typed(spec["type"], text)

    def string(self, key: str, allowed: str = "a non-empty string") -> str:
        value = self._value(key)
        if not isinstance(value, str) or not value:
            self.fail(f"{PROJECT}:{key}", value, f"{allowed} (it is required)")
            return ""
        return value

    def choice(self, key: str, enum: type[E]) -> E | None:
        value = self._value(key)
        try:
            return enum(value)
        except ValueError:
            self.fail(f"{PROJECT}:{key}", value, " | ".join(e.value for e in enum))
            return None

    def integer(self, key: str, minimum: int = 1, maximum: int | None = None, why: str = "") -> int:
        value = self._value(key)
        in_range = isinstance(value, int) and value >= minimum and (maximum is None or value <= maximum)
        if isinstance(value, bool) or not isinstance(value, int) or not in_range:
            bounds = f">= {minimum}" if maximum is None else f">= {minimum} and <= {maximum}"
            self.fail(f"{PROJECT}:{key}", value, f"a whole number {bounds}{f' ({why})' if why else ''}")
            return minimum
        return value

    def boolean(self, key: str) -> bool:
        value = self._value(key)
        if not isinstance(value, bool):
            self.fail(f"{PROJECT}:{key}", value, "true | false")
            return False
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._value(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{PROJECT}:{key}", value, "a list of strings")
            return ()
        return tuple(value)


def typed(kind: str, text: str) -> Any:
    """A stored config string read as the schema's ``kind``: integers in ASCII digits, booleans
    true or false only, arrays as the JSON Pulumi hands the program. Never YAML: 1.30 stays "1.30",
    13:00 stays "13:00" and yes stays "yes"."""
    if kind == "integer":
        return int(text) if INTEGER_TEXT_RE.fullmatch(text) else text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if kind == "array":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; "[[[[..." recurses
            return text
    return text


def parse(stack: str, raw: Mapping[str, str], gcp_project: str | None, secret_keys: Collection[str] = ()) -> Settings:
    """Validates the stack name and raw stack config (keys with or without the ``ha-celery:`` prefix).

    Every key of the project's namespace belongs in ``raw``: one missing from Pulumi.yaml is
    reported (a misspelt key would otherwise leave its default in place). Values of
    ``secret_keys`` are never shown. Raises SettingsError listing every invalid value, so users
    fix them in one go.
    """
    r = _Reader(raw, secret_keys)
    _stack(r, stack)
    environment = r.choice("environment", Environment) or Environment.DEV
    cluster = _cluster(r, gcp_project)
    registry = _registry(r, cluster)
    _arm_machines(r, cluster.machine_type, registry.image_platforms)
    broker = _broker(r)
    workers = _workers(r)
    monitoring = _monitoring(r)
    network = _network(r)
    _scraper_admitted(r, monitoring, network)
    _cross_field_rules(r, environment is Environment.PROD, cluster, broker, workers)
    _hardening_rules(r, cluster, registry, broker)
    _capacity_rules(r, cluster, broker, workers)
    _unknown_keys(r, raw)
    if r.problems:
        raise SettingsError(r.problems)
    return Settings(
        stack=stack,
        environment=environment,
        cluster=cluster,
        registry=registry,
        broker=broker,
        workers=workers,
        monitoring=monitoring,
        network=network,
    )


def _stack(r: _Reader, stack: str) -> None:
    if not STACK_RE.fullmatch(stack):
        r.fail(
            "stack",
            stack,
            f"1-{STACK_MAX} lowercase letters, digits and hyphens, starting with a letter and not ending with a"
            f" hyphen: the stack name becomes the GCP service account id {PROJECT}-<stack>-nodes (at most"
            f" {SERVICE_ACCOUNT_ID_MAX} characters), the Artifact Registry repository id {PROJECT}-<stack> and a GCP"
            " label value; `pulumi stack rename <name>` fixes it",
        )


def _cluster(r: _Reader, gcp_project: str | None) -> ClusterSettings:
    if not gcp_project or not GCP_PROJECT_RE.fullmatch(gcp_project):
        r.fail(
            "gcp:project",
            gcp_project,
            "a GCP project id (6-30 lowercase letters, digits, hyphens); "
            "set it with `pulumi config set gcp:project <id>`",
        )
    location, region, zones = _placement(r)
    node_count = r.integer(
        "nodeCount",
        maximum=MAX_NODES_PER_ZONE * max(len(zones), 1),
        why=f"GKE's limit of {MAX_NODES_PER_ZONE} nodes per node pool and zone",
    )
    if zones and node_count % len(zones):
        r.fail(
            f"{PROJECT}:nodeCount",
            node_count,
            f"a multiple of the {len(zones)} zones in {list(zones)} (GKE puts the same number of nodes in each zone)",
        )
    machine_type = r.string("machineType", "a machine type like e2-standard-2")
    if machine_type and machines.machine_type(machine_type) is None:
        r.fail(f"{PROJECT}:machineType", machine_type, f"a predefined machine type: {machines.example_names()}")
    node_disk = r.choice("nodeDiskType", DiskType)
    spot = r.boolean("spotNodes")
    version = r.string("kubernetesVersion", "major.minor, e.g. 1.35")
    if version and not K8S_MINOR_RE.fullmatch(version):
        r.fail(f"{PROJECT}:kubernetesVersion", version, "major.minor, e.g. 1.35")
    return ClusterSettings(
        project=gcp_project or "",
        region=region,
        location=location,
        node_zones=zones,
        node_count=node_count,
        machine_type=machine_type,
        spot_nodes=spot,
        node_disk_type=node_disk or DiskType.PD_BALANCED,
        node_disk_size_gb=r.integer("nodeDiskSizeGb", minimum=10, maximum=MAX_DISK_GB, why="64 TiB, the largest disk"),
        release_channel=r.choice("releaseChannel", ReleaseChannel) or ReleaseChannel.REGULAR,
        kubernetes_version=version,
        deletion_protection=r.boolean("deletionProtection"),
        private_nodes=r.boolean("privateNodes"),
        master_authorized_networks=_authorized_networks(r),
        secrets_encryption=r.boolean("secretsEncryption"),
        maintenance_window=_maintenance_window(r),
        maintenance_exclusions=_maintenance_exclusions(r),
    )


def _authorized_networks(r: _Reader) -> tuple[str, ...]:
    key = f"{PROJECT}:masterAuthorizedNetworks"
    allowed = (
        f"a list of at most {MAX_AUTHORIZED_NETWORKS} distinct IPv4 CIDRs such as 203.0.113.0/24 (no host bits set,"
        " not 0.0.0.0/0: an empty list already allows any address)"
    )
    cidrs = r.strings("masterAuthorizedNetworks")
    if len(cidrs) > MAX_AUTHORIZED_NETWORKS or len(set(cidrs)) != len(cidrs):
        r.fail(key, list(cidrs), allowed)
        return ()
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError:
            r.fail(key, cidr, allowed)
            return ()
        if network.prefixlen == 0 or str(network) != cidr:
            r.fail(key, cidr, allowed)
            return ()
    return cidrs


def _maintenance_window(r: _Reader) -> str:
    window = r._value("maintenanceWindow")
    if not isinstance(window, str) or (window and not MAINTENANCE_WINDOW_RE.fullmatch(window)):
        r.fail(
            f"{PROJECT}:maintenanceWindow",
            window,
            "HH:MM in UTC (00:00-23:59), the daily start of GKE's 4-hour window, or empty for any time",
        )
        return ""
    return window


def _maintenance_exclusions(r: _Reader) -> tuple[tuple[str, str], ...]:
    key = f"{PROJECT}:maintenanceExclusions"
    allowed = (
        f"a list of FIRST/LAST day ranges in UTC such as 2026-12-20/2027-01-03, the last day not before the first,"
        f" at most {MAX_EXCLUSION_DAYS} days each, not overlapping (GKE's limits for a no-upgrades exclusion)"
    )
    exclusions: list[tuple[dt.date, dt.date]] = []
    for entry in r.strings("maintenanceExclusions"):
        m = MAINTENANCE_EXCLUSION_RE.fullmatch(entry)
        try:
            first, last = (dt.date.fromisoformat(m["start"]), dt.date.fromisoformat(m["end"])) if m else (None, None)
        except ValueError:
            first = last = None
        if first is None or last is None or not 0 <= (last - first).days < MAX_EXCLUSION_DAYS:
            r.fail(key, entry, allowed)
            return ()
        exclusions.append((first, last))
    ordered = sorted(exclusions)
    if any(later[0] <= earlier[1] for earlier, later in itertools.pairwise(ordered)):
        r.fail(key, [f"{a}/{b}" for a, b in exclusions], allowed)
        return ()
    return tuple((first.isoformat(), last.isoformat()) for first, last in exclusions)


def _registry(r: _Reader, cluster: ClusterSettings) -> RegistrySettings:
    domain = r.choice("registryDomain", RegistryDomain) or RegistryDomain.PKG_DEV
    return RegistrySettings(
        domain=domain,
        location=domain.multi_region if domain.gcr else cluster.region,
        mirror_rabbitmq_image=r.boolean("mirrorRabbitmqImage"),
        image_platforms=r.choice("imagePlatforms", ImagePlatforms) or ImagePlatforms.AMD64,
    )


def _arm_machines(r: _Reader, machine_type: str, platforms: ImagePlatforms) -> None:
    """Arm machines run only arm64 images: refuse them unless imagePlatforms builds arm64."""
    m = MACHINE_TYPE_RE.fullmatch(machine_type)
    if m and m["family"] in ARM_FAMILIES and "linux/arm64" not in platforms.platforms:
        r.fail(
            f"{PROJECT}:machineType",
            machine_type,
            f"an x86-64 machine type (not the Arm families {', '.join(sorted(ARM_FAMILIES))}): the images are built"
            f" for {', '.join(platforms.platforms)} only ({PROJECT}:imagePlatforms is {platforms.value!r}), so on"
            f" {m['family'].upper()} machines every container would fail with 'exec format error'; set"
            f" {PROJECT}:imagePlatforms to {ImagePlatforms.AMD64_ARM64.value!r} to build arm64 images too",
        )


def _placement(r: _Reader) -> tuple[str, str, tuple[str, ...]]:
    """location and nodeZones -> (location, region, the zones that carry nodes)."""
    location = r.string("location", "a region (us-east1) or a zone (us-east1-c)")
    zones = r.strings("nodeZones")
    if zone_match := ZONE_RE.fullmatch(location):
        if zones and zones != (location,):
            r.fail(f"{PROJECT}:nodeZones", list(zones), f"empty (or [{location}]) for the zonal location {location}")
        return location, zone_match["region"], (location,)
    if REGION_RE.fullmatch(location):
        if not zones:
            r.fail(
                f"{PROJECT}:nodeZones",
                [],
                f"one or more zones of region {location}, e.g. [{location}-b, {location}-c, {location}-d]",
            )
        for zone in zones:
            m = ZONE_RE.fullmatch(zone)
            if not m or m["region"] != location:
                r.fail(f"{PROJECT}:nodeZones", zone, f"a zone of region {location} ({location}-<letter>)")
        if len(set(zones)) != len(zones):
            r.fail(f"{PROJECT}:nodeZones", list(zones), "distinct zones")
    elif location:
        r.fail(f"{PROJECT}:location", location, "a region like us-east1 or a zone like us-east1-c")
    return location, location, zones


def _broker(r: _Reader) -> BrokerSettings:
    replicas = r.integer("brokerReplicas")
    storage = r.choice("brokerStorage", BrokerStorage)
    image = r.string("brokerImage", "rabbitmq:4.3.<patch>[-management]")
    if image and (len(image) > MAX_IMAGE_CHARS or not RABBITMQ_IMAGE_RE.fullmatch(image)):
        r.fail(
            f"{PROJECT}:brokerImage",
            image,
            f"a RabbitMQ 4.3 image pinned to a full version, e.g. rabbitmq:4.3.6-management, at most"
            f" {MAX_IMAGE_CHARS} characters",
        )
    return BrokerSettings(
        replicas=replicas,
        storage=storage or BrokerStorage.STANDARD,
        storage_gi=r.integer("brokerStorageGi", maximum=MAX_DISK_GB, why="64 TiB, the largest persistent disk"),
        image=image,
        cpu_millis=r.integer("brokerCpuMillis", minimum=100),
        memory_mib=r.integer("brokerMemoryMiB", minimum=512),
        tls=r.boolean("brokerTls"),
    )


def _scheduler_run(r: _Reader) -> str:
    allowed = "lower-case letters, digits and '-', 1-32 characters, alphanumeric at both ends (part of the Job's name)"
    run = r.string("schedulerRun", allowed)
    if run and not re.fullmatch(SCHEDULER_RUN_PATTERN, run):
        r.fail(f"{PROJECT}:schedulerRun", run, allowed)
    return run


def _workers(r: _Reader) -> WorkerSettings:
    autoscaling = r.choice("autoscaling", Autoscaling) or Autoscaling.NONE
    replicas = r.integer("workerReplicas")
    max_replicas = r.integer("autoscalingMaxReplicas")
    if autoscaling is not Autoscaling.NONE and max_replicas < replicas:
        r.fail(f"{PROJECT}:autoscalingMaxReplicas", max_replicas, f">= workerReplicas ({replicas})")
    concurrency = r.integer(
        "workerConcurrency", maximum=MAX_CONCURRENCY, why="the worker refuses more: contract.wire.MAX_CONCURRENCY"
    )
    memory_mib = r.integer("workerMemoryMiB", minimum=128)
    try:
        # The pool's recycling threshold comes from the limit: it must leave each pool process room.
        max_memory_per_child_kib(memory_mib, concurrency)
    except ValueError as exc:
        r.fail(f"{PROJECT}:workerMemoryMiB", memory_mib, f"with workerConcurrency {concurrency}: {exc}")
    cpu_millis = r.integer("workerCpuMillis", minimum=50)
    default = lane_contract.Lane(
        lane_contract.DEFAULT_LANE,
        replicas,
        concurrency,
        cpu_millis,
        memory_mib,
        max_replicas,
        lane_contract.default_timing(lane_contract.DEFAULT_LANE),
        (),
    )
    return WorkerSettings(
        replicas=replicas,
        concurrency=concurrency,
        cpu_millis=cpu_millis,
        memory_mib=memory_mib,
        scheduler_enabled=r.boolean("schedulerEnabled"),
        scheduler_tasks=r.integer(
            "schedulerTasks",
            maximum=MAX_SCHEDULER_TASKS,
            why="the scheduler Job's 3600 s deadline at the measured ~470 tasks/s publishes ~1.7 M",
        ),
        scheduler_run=_scheduler_run(r),
        autoscaling=autoscaling,
        autoscaling_max_replicas=max_replicas,
        lanes=_lanes(r, default, autoscaling),
    )


LANE_FIELDS: dict[str, str] = {
    "name": "the lane's name",
    "replicas": "worker pods",
    "concurrency": "pool processes per pod",
    "cpuMillis": "CPU request per pod",
    "memoryMiB": "memory request and limit per pod",
    "maxReplicas": "pods at most, when autoscaling",
    "prefetch": "messages reserved per pool process",
    "softTimeLimitS": "seconds before SoftTimeLimitExceeded is raised in a task",
    "timeLimitS": "seconds before a task's process is killed",
    "consumerTimeoutS": "the queue's consumer timeout",
    "tasks": "task names or *-globs routed to the lane",
    "deliveryLimit": "failed deliveries of a task before the dead-letter queue",
}
"""A ``workerLanes`` entry's fields (the README's lane table says more)."""
MAX_LANE_DELIVERY_LIMIT = 100
"""Most failed deliveries a lane may allow: with the retry backoff's 60 s cap, 100 is ~1.5 hours of a
poison task coming back; more only hides it from the dead-letter queue."""
DEFAULT_LANE_KEYS: dict[str, str] = {
    "replicas": "workerReplicas",
    "concurrency": "workerConcurrency",
    "cpuMillis": "workerCpuMillis",
    "memoryMiB": "workerMemoryMiB",
    "maxReplicas": "autoscalingMaxReplicas",
}
"""The default lane's size comes from the keys a stack had before lanes: one place per value."""


def _lanes(r: _Reader, default: lane_contract.Lane, autoscaling: Autoscaling) -> tuple[lane_contract.Lane, ...]:
    """``workerLanes``: a list of ``{name, ...}`` objects, one named ``default``."""
    key = f"{PROJECT}:workerLanes"
    entries = r._value("workerLanes")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        r.fail(key, entries, 'a list of lane objects such as [{"name": "default"}, {"name": "long"}]')
        return (default,)
    names = [e.get("name") for e in entries]
    if len(entries) > lane_contract.MAX_LANES or names.count(lane_contract.DEFAULT_LANE) != 1:
        r.fail(
            key,
            names,
            f"1-{lane_contract.MAX_LANES} lanes, exactly one named {lane_contract.DEFAULT_LANE!r} (its queue is"
            f" {lane_contract.queue_name(lane_contract.DEFAULT_LANE)!r}: every task no lane names goes there)",
        )
        return (default,)
    parsed = [(index, _lane(r, f"{key}[{index}]", entry, default, autoscaling)) for index, entry in enumerate(entries)]
    numbered = [(index, lane) for index, lane in parsed if lane is not None]
    lanes = [lane for _, lane in numbered]
    lane_names = [lane.name for lane in lanes]
    if len(set(lane_names)) != len(lane_names):
        r.fail(key, lane_names, "lanes with distinct names")
    indexed = [(index, pattern, lane.name) for index, lane in numbered for pattern in lane.tasks]
    for at, allowed in lane_contract.route_problems([(p, lane) for _, p, lane in indexed], lane_names):
        index, pattern, _ = indexed[at]
        r.fail(f"{key}[{index}].tasks", pattern, allowed)
    if r.failed(key) or any(p.startswith(f"{key}[") for p in r.problems):
        return (default,)
    return tuple(sorted(lanes, key=lambda lane: lane.name != lane_contract.DEFAULT_LANE))


def _lane(
    r: _Reader, key: str, entry: dict[str, Any], default: lane_contract.Lane, autoscaling: Autoscaling
) -> lane_contract.Lane | None:
    unknown = sorted(set(entry) - set(LANE_FIELDS))
    if unknown:
        r.fail(f"{key}.{unknown[0]}", entry[unknown[0]], f"a lane field: {', '.join(LANE_FIELDS)}")
        return None
    name = entry.get("name")
    problem = lane_contract.lane_name_problem(name) if isinstance(name, str) else "a lane name (a string)"
    if problem is not None or not isinstance(name, str):
        r.fail(f"{key}.name", name, problem or "a string")
        return None
    is_default = name == lane_contract.DEFAULT_LANE
    if is_default:
        for field_name, legacy in DEFAULT_LANE_KEYS.items():
            if field_name in entry:
                r.fail(f"{key}.{field_name}", entry[field_name], f"unset: the default lane's is {PROJECT}:{legacy}")
                return None

    def number(field_name: str, fallback: int, minimum: int = 1, maximum: int | None = None) -> int:
        value = entry.get(field_name, fallback)
        if isinstance(value, str) and INTEGER_TEXT_RE.fullmatch(value):
            value = int(value)  # a number as `pulumi config set --path` may store it
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
            r.fail(f"{key}.{field_name}", value, f"a whole number {bounds} ({LANE_FIELDS[field_name]})")
            return fallback
        return value

    prefetch = number("prefetch", default.timing.prefetch_multiplier, maximum=timing.MAX_PREFETCH_MULTIPLIER)
    base = lane_contract.default_timing(name, prefetch)
    time_limit = number("timeLimitS", base.time_limit_s, maximum=lane_contract.MAX_TIME_LIMIT_S)
    soft = number("softTimeLimitS", lane_contract.soft_limit_for(time_limit))
    # Unset: what the lane's own prefetch and hard limit need; never below RabbitMQ's 30 minutes on
    # the default lane, which had it before lanes.
    needed = lane_contract.min_consumer_timeout_s(prefetch, time_limit)
    consumer_timeout = number("consumerTimeoutS", max(base.consumer_timeout_s, needed) if is_default else needed)
    lane_timing = lane_contract.LaneTiming(prefetch, soft, time_limit, consumer_timeout)
    for field_name, allowed in lane_timing.problems():
        r.fail(f"{key}.{field_name}", entry.get(field_name, getattr(lane_timing, _TIMING_ATTR[field_name])), allowed)
    replicas = number("replicas", default.replicas if is_default else lane_contract.LANE_REPLICAS)
    concurrency = number("concurrency", default.concurrency, maximum=MAX_CONCURRENCY)
    memory = number("memoryMiB", default.memory_mib, minimum=128)
    try:
        max_memory_per_child_kib(memory, concurrency)
    except ValueError as exc:
        if not is_default:  # the default lane's size is workerMemoryMiB's, checked there
            r.fail(f"{key}.memoryMiB", memory, f"with concurrency {concurrency}: {exc}")
    # Another lane grows only when told how far: the workers' autoscalingMaxReplicas is sized for the default lane.
    max_replicas = number("maxReplicas", default.max_replicas if is_default else replicas)
    if autoscaling is not Autoscaling.NONE and max_replicas < replicas:
        r.fail(f"{key}.maxReplicas", max_replicas, f">= the lane's replicas ({replicas})")
    tasks = entry.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        r.fail(f"{key}.tasks", tasks, "a list of task names or *-globs such as [reports.*]")
        tasks = []
    delivery_limit = number("deliveryLimit", DELIVERY_LIMIT, maximum=MAX_LANE_DELIVERY_LIMIT)
    return lane_contract.Lane(
        delivery_limit=delivery_limit,
        name=name,
        replicas=replicas,
        concurrency=concurrency,
        cpu_millis=number("cpuMillis", default.cpu_millis, minimum=50),
        memory_mib=memory,
        max_replicas=max_replicas,
        timing=lane_timing,
        tasks=tuple(tasks),
    )


_TIMING_ATTR = {
    "prefetch": "prefetch_multiplier",
    "softTimeLimitS": "soft_time_limit_s",
    "timeLimitS": "time_limit_s",
    "consumerTimeoutS": "consumer_timeout_s",
}


def _monitoring(r: _Reader) -> MonitoringSettings:
    collection = r.choice("metricsCollection", MetricsCollection) or MetricsCollection.MANAGED
    key = f"{PROJECT}:prometheusOperatorLabels"
    labels: list[tuple[str, str]] = []
    for entry in r.strings("prometheusOperatorLabels"):
        name, sep, value = entry.partition("=")
        if not sep or not LABEL_KEY_RE.fullmatch(name) or not LABEL_VALUE_RE.fullmatch(value):
            r.fail(key, entry, "a list of key=value Kubernetes labels, e.g. [release=kube-prometheus-stack]")
            return MonitoringSettings(collection, (), r.boolean("grafanaDashboard"))
        labels.append((name, value))
    if labels and collection is not MetricsCollection.PROMETHEUS_OPERATOR:
        r.fail(
            key,
            [f"{k}={v}" for k, v in labels],
            f"empty unless {PROJECT}:metricsCollection is {MetricsCollection.PROMETHEUS_OPERATOR.value}"
            f" (it is {collection.value}: nothing would carry the labels)",
        )
    return MonitoringSettings(collection, tuple(labels), r.boolean("grafanaDashboard"))


def _network(r: _Reader) -> NetworkSettings:
    allowed = "a Kubernetes namespace name: 1-63 lower-case letters, digits and '-', alphanumeric at both ends"
    ops = r.string("opsNamespace", allowed)
    if ops and not NAMESPACE_RE.fullmatch(ops):
        r.fail(f"{PROJECT}:opsNamespace", ops, allowed)
    prometheus = r._value("prometheusNamespace")
    if not isinstance(prometheus, str) or (prometheus and not NAMESPACE_RE.fullmatch(prometheus)):
        r.fail(f"{PROJECT}:prometheusNamespace", prometheus, f'"" (none) or {allowed}')
        prometheus = ""
    return NetworkSettings(
        ops_namespace=ops,
        metrics_namespaces=(GMP_NAMESPACE, *([prometheus] if prometheus and prometheus != GMP_NAMESPACE else [])),
    )


def _scraper_admitted(r: _Reader, monitoring: MonitoringSettings, network: NetworkSettings) -> None:
    """The NetworkPolicies admit metrics scrapes from gmp-system and prometheusNamespace only, so an
    operator's Prometheus with no namespace named would be refused on every scrape, silently."""
    if monitoring.collection is MetricsCollection.PROMETHEUS_OPERATOR and len(network.metrics_namespaces) < 2:
        r.fail(
            f"{PROJECT}:prometheusNamespace",
            "",
            f"the namespace the operator's Prometheus runs in, when {PROJECT}:metricsCollection is"
            f" {MetricsCollection.PROMETHEUS_OPERATOR.value} (the NetworkPolicies admit scrapes from it only)",
        )


def _cross_field_rules(
    r: _Reader, prod: bool, cluster: ClusterSettings, broker: BrokerSettings, workers: WorkerSettings
) -> None:
    """Rules between groups (disks that fit the machines) and the HA invariants prod enforces.

    A value already rejected was replaced by its default; Reader.fail keeps only the first
    problem of a key, so the checks below never report on such a value.
    """
    _check_disk(r, "nodeDiskType", cluster.node_disk_type.value, cluster.node_disk_type, cluster.machine_type)
    if prod and cluster.spot_nodes:
        r.fail(
            f"{PROJECT}:spotNodes",
            True,
            "false in prod (spot VMs can all be reclaimed at once, taking the broker quorum with them)",
        )
    if not quorum_safe(broker.replicas) or broker.replicas < 3:
        r.fail(
            f"{PROJECT}:brokerReplicas",
            broker.replicas,
            "an odd number >= 3 (3, 5, 7, ...): quorum queues need a majority, so an even cluster survives no more"
            " node losses than the odd one below it, and the policy pack's broker-replicas-odd refuses fewer than"
            " 3 on every stack",
        )
    if prod and broker.replicas > cluster.node_count and not r.failed(f"{PROJECT}:nodeCount"):
        r.fail(
            f"{PROJECT}:brokerReplicas",
            broker.replicas,
            f"<= nodeCount ({cluster.node_count}) in prod: the required one-broker-per-node anti-affinity leaves every"
            f" broker beyond the {cluster.node_count} nodes unschedulable (raise nodeCount or lower brokerReplicas)",
        )
    _check_disk(r, "brokerStorage", broker.storage.value, broker.storage.disk_type, cluster.machine_type)
    if prod and workers.replicas < 2:
        r.fail(
            f"{PROJECT}:workerReplicas", workers.replicas, ">= 2 in prod (one worker is one machine away from a stop)"
        )
    for index, lane in enumerate(workers.lanes):
        if prod and not lane.default and lane.replicas < 2:
            r.fail(
                f"{PROJECT}:workerLanes[{index}].replicas",
                lane.replicas,
                f">= 2 in prod (lane {lane.name!r}: one worker is one machine away from a stop)",
            )


def _hardening_rules(r: _Reader, cluster: ClusterSettings, registry: RegistrySettings, broker: BrokerSettings) -> None:
    """What the cluster's hardening settings need from the others."""
    if cluster.private_nodes and not registry.mirror_rabbitmq_image and not GOOGLE_REGISTRY_RE.match(broker.image):
        r.fail(
            f"{PROJECT}:privateNodes",
            True,
            f"false, or true with {PROJECT}:mirrorRabbitmqImage true (or a {PROJECT}:brokerImage in Artifact"
            f" Registry): private nodes reach Google's registries only (Private Google Access, no Cloud NAT),"
            f" so {broker.image} could not be pulled",
        )
    if cluster.maintenance_exclusions and not cluster.maintenance_window:
        r.fail(
            f"{PROJECT}:maintenanceExclusions",
            ["/".join(pair) for pair in cluster.maintenance_exclusions],
            f"[] unless {PROJECT}:maintenanceWindow is set (GKE takes exclusions only with a window)",
        )


def _capacity_rules(r: _Reader, cluster: ClusterSettings, broker: BrokerSettings, workers: WorkerSettings) -> None:
    """Every pod fits one node's allocatable CPU and memory, and all of them fit the cluster's.

    The sums are a floor: GKE's own DaemonSets and system pods take requests too, and one pod
    cannot span nodes, so a plan that passes may still leave a pod Pending; one that fails
    here certainly does.
    """
    machine = machines.machine_type(cluster.machine_type)
    if machine is None or r.failed(f"{PROJECT}:nodeCount"):
        return
    cpu, memory = machine.allocatable_cpu_millis, machine.allocatable_memory_mib
    node = (
        f"one {machine.name} node leaves {cpu}m CPU and {memory} MiB for pods (GKE reserves the rest:"
        " cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes)"
    )
    extra = [(index, lane) for index, lane in enumerate(workers.lanes) if not lane.default]
    # A lane field nobody set is blamed on the list itself (its default is in Pulumi.yaml).
    given = f"{PROJECT}:workerLanes" in r.raw or "workerLanes" in r.raw

    def lane_key(index: int, field_name: str) -> str:
        return f"workerLanes[{index}].{field_name}" if given else "workerLanes"

    for key, value, room in (
        ("brokerCpuMillis", broker.cpu_millis, cpu),
        ("brokerMemoryMiB", broker.memory_mib, memory),
        ("workerCpuMillis", workers.cpu_millis, cpu),
        ("workerMemoryMiB", workers.memory_mib, memory),
        *((lane_key(i, "cpuMillis"), lane.cpu_millis, cpu) for i, lane in extra),
        *((lane_key(i, "memoryMiB"), lane.memory_mib, memory) for i, lane in extra),
    ):
        if value > room:
            r.fail(f"{PROJECT}:{key}", value, f"<= {room}: {node}; a bigger pod is never scheduled")
    scaling = workers.autoscaling is not Autoscaling.NONE
    worker_key, worker_count = (
        ("autoscalingMaxReplicas", workers.autoscaling_max_replicas)
        if scaling
        else ("workerReplicas", workers.replicas)
    )
    pods = {
        "brokerReplicas": (broker.replicas, broker.cpu_millis, broker.memory_mib),
        worker_key: (worker_count, workers.cpu_millis, workers.memory_mib),
        **{
            lane_key(i, "maxReplicas" if scaling else "replicas"): (
                lane.max_replicas if scaling else lane.replicas,
                lane.cpu_millis,
                lane.memory_mib,
            )
            for i, lane in extra
        },
        "schedulerEnabled": (1 if workers.scheduler_enabled else 0, *SCHEDULER_POD),
    }
    nodes = cluster.node_count
    used_cpu = used_memory = used_pods = 0
    for key, (count, pod_cpu, pod_memory) in pods.items():
        used_cpu, used_memory, used_pods = (
            used_cpu + count * pod_cpu,
            used_memory + count * pod_memory,
            used_pods + count,
        )
        if used_cpu > cpu * nodes or used_memory > memory * nodes or used_pods > machines.MAX_PODS_PER_NODE * nodes:
            r.fail(
                f"{PROJECT}:{key}",
                count,
                f"fewer pods, or more or bigger nodes: with the pods before it, {used_pods} pods request"
                f" {used_cpu}m CPU and {used_memory} MiB, and {nodes} x {machine.name} leave {cpu * nodes}m,"
                f" {memory * nodes} MiB and {machines.MAX_PODS_PER_NODE * nodes} pods ({node})",
            )
            return


def _check_disk(r: _Reader, key: str, shown: str, disk: DiskType, machine_type: str) -> None:
    m = MACHINE_TYPE_RE.fullmatch(machine_type)
    family = m["family"] if m else ""
    if family in HYPERDISK_ONLY_FAMILIES and not disk.is_hyperdisk:
        r.fail(
            f"{PROJECT}:{key}",
            shown,
            f"hyperdisk kinds only: {family.upper()} machines ({machine_type}) attach Hyperdisk, not {disk}",
        )
    if family in PD_ONLY_FAMILIES and disk.is_hyperdisk:
        r.fail(
            f"{PROJECT}:{key}",
            shown,
            f"persistent-disk kinds only: {family.upper()} machines ({machine_type}) cannot attach {disk}",
        )


def _unknown_keys(r: _Reader, raw: Mapping[str, str]) -> None:
    """Keys of our namespace that Pulumi.yaml does not declare, and namespaces that look like ours
    or a provider's but are not (hacelery:, ha_celery:, gpc:): Pulumi would keep them silently."""
    for key in sorted(raw):
        namespace, _, name = key.rpartition(":")
        if namespace in KNOWN_NAMESPACES or (namespace in ("", PROJECT) and name in schema()):
            continue
        if namespace not in ("", PROJECT):
            close_ns = difflib.get_close_matches(namespace.lower(), [PROJECT, *KNOWN_NAMESPACES], n=1, cutoff=0.5)
            suggestion = f"{close_ns[0]}:{name}" if close_ns else ""
            if close_ns and close_ns[0] == PROJECT:
                names = difflib.get_close_matches(name, schema(), n=1)
                suggestion = f"{PROJECT}:{names[0] if names else name}"
            hint = f" (did you mean {shown(suggestion)[1:-1]}?)" if suggestion else ""
            r.fail(
                shown(key)[1:-1],
                raw[key],
                f"a key of the namespaces the program reads{hint}: {PROJECT}, " + ", ".join(KNOWN_NAMESPACES),
            )
            continue
        close = difflib.get_close_matches(name, schema(), n=1)
        hint = f" (did you mean {PROJECT}:{close[0]}?)" if close else ""
        r.fail(
            f"{PROJECT}:{shown(name)[1:-1]}",
            raw[key],
            f"one of the keys in Pulumi.yaml{hint}: " + ", ".join(schema()),
        )


def load() -> Settings:
    """Reads the current stack's config through Pulumi (the only place that reads Pulumi config).

    Every key of the project's namespace is passed to ``parse``, not only the known ones, so a
    misspelt key fails ``pulumi up`` as it fails ``make plan``. The Python SDK has no call that
    lists config keys: it keeps the config the program was given (set_all_config: mocks, the
    Automation API) in ``pulumi.runtime.config.CONFIG`` and reads the language host's
    ``PULUMI_CONFIG`` environment variable (a JSON object of "project:key" -> string) after it.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    # Every namespace, not only ours: a misspelt one (hacelery:, ha_celery:) is refused, not ignored.
    ours = sorted({*runtime_config.get_config_env(), *runtime_config.CONFIG.get()})
    # get_config applies the SDK's precedence (explicit config, PULUMI_CONFIG_<KEY>, PULUMI_CONFIG).
    raw = {key: str(value) for key in ours if (value := runtime_config.get_config(key)) is not None}
    # Secret keys: set_all_config's list, or the language host's PULUMI_CONFIG_SECRET_KEYS.
    secret = {k for k in ours if runtime_config.is_config_secret(k)} | {*runtime_config.get_config_secret_keys_env()}
    return parse(pulumi.get_stack(), raw, pulumi.Config("gcp").get("project"), secret)
