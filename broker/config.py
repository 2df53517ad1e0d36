"""The typed broker configuration shared by the Kubernetes component and the local harness.

One :class:`BrokerConfig` describes a RabbitMQ cluster; :mod:`broker.render` turns it into
``rabbitmq.conf``, ``enabled_plugins`` and the definitions (policies, dead-letter topology).
Nothing here knows about Pulumi, Kubernetes objects or processes: the same value renders the
ConfigMap of the GKE StatefulSet (RabbitMQ 4.3) and the files of the local 3.10 nodes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from contract.timing import CONSUMER_TIMEOUT_MS
from contract.wire import (
    AMQP_PORT,
    AMQPS_PORT,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELIVERY_LIMIT,
    MANAGEMENT_PORT,
    PROMETHEUS_PORT,
    QUEUE_NAME,
    quorum_safe,
)

# Celery's own non-task queues, which must never get the task dead-letter policy:
# ``celeryev.<uuid>`` event queues and ``*.pidbox`` control/reply queues carry a message TTL,
# so with a DLX every expired event would pile up in the dead-letter queue;
# ``celery_delayed_<n>`` are kombu's native delayed-delivery levels, which dead-letter into each
# other by their own queue arguments. (The dead-letter queue itself is excluded by name too.)
CELERY_INTERNAL_QUEUE_PATTERNS: tuple[str, ...] = (r"celeryev\..*", r".*\.pidbox", r"celery_delayed_.*")

# The timing contract with the workers lives in contract.timing (pure constants, no Celery import):
# a Celery worker acks late, so every prefetched message stays unacked while the tasks before it
# run; contract.timing derives the smallest timeout the workers survive (MIN_CONSUMER_TIMEOUT_MS,
# 18 min) from the task time limit and the largest prefetch, and recommends 30 min.
DEFAULT_CONSUMER_TIMEOUT_MS = CONSUMER_TIMEOUT_MS

# RabbitMQ's default (50 MB) leaves no headroom: a quorum queue's WAL and segment files grow in
# bursts, and a node that hits a full disk mid-write crashes instead of blocking publishers.
# 1 GB blocks publishers early enough on a 10 GiB+ volume; the local harness has far more free.
DEFAULT_DISK_FREE_LIMIT_BYTES = 1_000_000_000

_GIB = 1024**3
MEMORY_HEADROOM_FRACTION = 0.2
"""Share of the container's memory limit kept out of RabbitMQ's sight, as the cluster operator does
(its removeHeadroom): the watermark does not count the runtime's own overhead, allocator
fragmentation or a burst of quorum-queue WAL entries, and past the limit the kernel OOM-kills."""
MAX_MEMORY_HEADROOM_BYTES = 2 * _GIB
"""Cap on that headroom, bytes (the operator's): a 20 GiB broker does not need 4 GiB of slack."""
SMALL_BROKER_MAX_BYTES = 2 * _GIB
"""Memory limit up to which a broker counts as small and gets SMALL_BROKER_WAL_MAX_BYTES."""
SMALL_BROKER_WAL_MAX_BYTES = 64 * 1024 * 1024
"""``raft.wal_max_size_bytes`` for small brokers. Quorum queues keep the current WAL's entries in
memory until it rolls over; the 512 MiB default is half of a 1 GiB broker. A smaller WAL rolls
over more often, which costs throughput a broker this size never reaches."""


class RabbitVersion(StrEnum):
    """The RabbitMQ series a config is rendered for (their config keys and semantics differ)."""

    V3_10 = "3.10"
    """Debian 12's ``rabbitmq-server``: the local harness. Mnesia, so partitions need a strategy."""
    V4_3 = "4.3"
    """The Kubernetes image (``rabbitmq:4.3.x``). Khepri (Raft) metadata store only."""


class PeerDiscovery(StrEnum):
    """How blank nodes find each other on first boot."""

    K8S = "k8s"
    """``rabbitmq_peer_discovery_k8s`` v2 (4.1+): no API calls, the pod with the lowest ordinal seeds."""
    CLASSIC = "classic_config"
    """A fixed node list in the config file: the local harness."""


@dataclass(frozen=True)
class BrokerTls:
    """Where a node reads its TLS files (PEM). Paths, not contents: the key never enters a rendered file."""

    cacertfile: str
    """The CA that signed every node's certificate (what clients verify against)."""
    certfile: str
    """This node's certificate: its pod DNS name and the client Service's names."""
    keyfile: str
    """This node's private key."""


@dataclass(frozen=True)
class TaskQueue:
    """A worker lane's quorum queue (contract.lanes) as the broker sees it: a name and the
    per-queue consumer timeout its lane's policy sets."""

    name: str
    consumer_timeout_ms: int
    delivery_limit: int = DELIVERY_LIMIT
    """Its lane's ``delivery-limit`` (the catch-all policy keeps ``BrokerConfig.delivery_limit``)."""


@dataclass(frozen=True)
class BrokerConfig:
    """Everything that decides how a RabbitMQ node behaves, minus secrets.

    Credentials are deliberately absent: the default user comes from a Secret-mounted conf.d
    file on Kubernetes (and from the harness' own 0600 file locally), so nothing rendered from
    this value may ever contain a password and the ConfigMap can be shown in plain text.
    """

    version: RabbitVersion
    """RabbitMQ series; selects the config keys that exist and matter for it."""
    peer_discovery: PeerDiscovery
    """Cluster formation mechanism; K8S requires 4.3 (the v2 plugin shipped in 4.1)."""
    classic_nodes: tuple[str, ...] = ()
    """Node names for classic_config discovery, e.g. ``("rabbit@n0", "rabbit@n1", "rabbit@n2")``."""
    cluster_size: int = 3
    """Intended number of nodes. Odd, so a quorum survives one loss; with classic_config it must
    equal ``len(classic_nodes)``. Used as the quorum queue replica target on 4.3."""
    memory_limit_bytes: int | None = None
    """Container memory limit, bytes. Rendered, less the headroom (:attr:`memory_available_bytes`),
    as total_memory_available_override_value: inside a container the node otherwise sees the
    host's RAM and its watermark lies above the limit, so the kernel OOM-kills it before flow
    control starts. Also picks the quorum WAL size (:attr:`wal_max_size_bytes`)."""
    memory_high_watermark: float = 0.6
    """Fraction of available memory at which publishers are blocked (4.x default 0.6)."""
    disk_free_limit_bytes: int = DEFAULT_DISK_FREE_LIMIT_BYTES
    """Free disk below which publishers are blocked, bytes (see DEFAULT_DISK_FREE_LIMIT_BYTES)."""
    consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS
    """Max time a delivery may stay unacked before the broker closes the channel, ms. Must be
    above Celery's task_time_limit x (prefetch + 1), or tasks are redelivered while still
    running; the default is contract.timing.CONSUMER_TIMEOUT_MS, >= contract.timing.MIN_CONSUMER_TIMEOUT_MS."""
    task_queues: tuple[TaskQueue, ...] = (TaskQueue(QUEUE_NAME, DEFAULT_CONSUMER_TIMEOUT_MS),)
    """The worker lanes' queues (4.3 only): each is declared with its topic exchange and delayed-delivery
    bindings, and gets a policy of its own with the dead-letter rules and its consumer timeout."""
    amqp_port: int = AMQP_PORT
    """The plain AMQP listener; not rendered with ``tls`` (no plain listener then)."""
    tls: BrokerTls | None = None
    """AMQP over TLS only, on ``amqps_port``; None: plain AMQP on ``amqp_port``."""
    amqps_port: int = AMQPS_PORT
    management_port: int = MANAGEMENT_PORT
    prometheus_port: int = PROMETHEUS_PORT
    bind_address: str | None = None
    """IPv4 address every listener (AMQP, management, Prometheus, Erlang distribution) binds to.
    None: all interfaces, as a pod needs. The local harness binds to 127.0.0.1 so nothing it
    starts is reachable from outside the machine."""
    default_vhost: str = "/"
    """The vhost Celery uses. "/" because it is what the default user is granted on first boot
    and what every Celery/kombu URL without a path means; one app per broker needs no other."""
    dead_letter_exchange: str = DEAD_LETTER_EXCHANGE
    """Fanout exchange that receives tasks rejected past the delivery limit."""
    dead_letter_queue: str = DEAD_LETTER_QUEUE
    """Quorum queue bound to the DLX: poison tasks are kept here for inspection, not dropped."""
    delivery_limit: int = DELIVERY_LIMIT
    """Failed deliveries before a quorum queue dead-letters a message (contract.wire.DELIVERY_LIMIT,
    the 4.x default, which the worker Deployment also tells the workers; 3.10 has no default)."""
    policy_name: str = "celery-quorum-dlx"
    excluded_queue_patterns: tuple[str, ...] = CELERY_INTERNAL_QUEUE_PATTERNS
    """Queue-name regexes that must not get the dead-letter policy (see policy_pattern)."""
    k8s_ordinal_start: int | None = None
    """StatefulSet ``spec.ordinals.start`` if not 0 (4.1+ k8s discovery: that pod seeds)."""
    k8s_seed_node: str | None = None
    """Explicit seed node name for 4.1+ k8s discovery, overriding the ordinal rule."""
    cluster_name: str | None = None
    """Human-readable cluster name shown in the management UI and metrics labels."""
    net_ticktime_s: int | None = None
    """Erlang distribution tick, seconds (default 60: a silent peer is declared down after
    45-75 s). The local drills lower it so a cut link is noticed within the test budget."""
    log_to_console: bool = True
    """Log to stdout only (containers: kubectl logs, no file filling the data volume). The local
    harness turns it off and gets one file per node under RABBITMQ_LOG_BASE to tail on failure."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.peer_discovery is PeerDiscovery.K8S and self.version is not RabbitVersion.V4_3:
            problems.append(
                f"peer_discovery=k8s needs version 4.3 (the API-free v2 plugin of 4.1+), got {self.version}"
            )
        if self.peer_discovery is PeerDiscovery.CLASSIC:
            if not self.classic_nodes:
                problems.append("peer_discovery=classic_config needs classic_nodes")
            elif len(self.classic_nodes) != self.cluster_size:
                problems.append(
                    f"cluster_size={self.cluster_size} but {len(self.classic_nodes)} classic_nodes were given"
                )
            for node in self.classic_nodes:
                if not re.fullmatch(r"[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+", node):
                    problems.append(f"classic_nodes: {node!r} is not a node name like rabbit@host")
            if len(set(self.classic_nodes)) != len(self.classic_nodes):
                problems.append(f"classic_nodes has duplicates: {self.classic_nodes}")
        elif self.classic_nodes:
            problems.append("classic_nodes is only used with peer_discovery=classic_config")
        if (self.k8s_ordinal_start is not None or self.k8s_seed_node is not None) and (
            self.peer_discovery is not PeerDiscovery.K8S
        ):
            problems.append("k8s_ordinal_start/k8s_seed_node need peer_discovery=k8s")
        if self.k8s_ordinal_start is not None and self.k8s_ordinal_start < 0:
            problems.append(f"k8s_ordinal_start must be >= 0, got {self.k8s_ordinal_start}")
        if self.cluster_size < 1:
            problems.append(f"cluster_size must be >= 1, got {self.cluster_size}")
        elif not quorum_safe(self.cluster_size):
            problems.append(
                f"cluster_size must be odd (a quorum of an even cluster is no safer), got {self.cluster_size}"
            )
        if self.memory_limit_bytes is not None and self.memory_limit_bytes < 256 * 1024 * 1024:
            problems.append(f"memory_limit_bytes must be >= 256 MiB, got {self.memory_limit_bytes}")
        if not 0.1 <= self.memory_high_watermark <= 0.9:
            problems.append(f"memory_high_watermark must be within [0.1, 0.9], got {self.memory_high_watermark}")
        if self.disk_free_limit_bytes < 50_000_000:
            problems.append(f"disk_free_limit_bytes must be >= 50 MB, got {self.disk_free_limit_bytes}")
        if self.consumer_timeout_ms < 60_000:
            problems.append(f"consumer_timeout_ms must be >= 60000, got {self.consumer_timeout_ms}")
        names = [queue.name for queue in self.task_queues]
        if QUEUE_NAME not in names or len(set(names)) != len(names):
            problems.append(f"task_queues must name {QUEUE_NAME!r} once and each queue once, got {names}")
        for queue in self.task_queues:
            if queue.consumer_timeout_ms < 60_000:
                problems.append(f"task_queues: {queue.name} consumer_timeout_ms must be >= 60000, got {queue}")
            if queue.delivery_limit < 1:
                problems.append(f"task_queues: {queue.name} delivery_limit must be >= 1, got {queue}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", queue.name) or queue.name == self.dead_letter_queue:
                problems.append(f"task_queues: {queue.name!r} is not a task queue name")
        ports = {"amqps_port" if self.tls else "amqp_port": self.amqps_port if self.tls else self.amqp_port}
        ports["management_port"] = self.management_port
        ports["prometheus_port"] = self.prometheus_port
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                problems.append(f"{name} must be a TCP port (1-65535), got {port}")
        if len(set(ports.values())) != len(ports):
            problems.append(f"amqp, management and prometheus ports must differ, got {ports}")
        if self.tls is not None:
            for name in ("cacertfile", "certfile", "keyfile"):
                path = getattr(self.tls, name)
                if not path.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", path):
                    problems.append(f"tls.{name} must be an absolute path of [A-Za-z0-9_./-], got {path!r}")
        if self.bind_address is not None:
            try:
                ipaddress.IPv4Address(self.bind_address)
            except ValueError:
                problems.append(f"bind_address must be an IPv4 address, got {self.bind_address!r}")
        if self.cluster_name is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]+", self.cluster_name):
            problems.append(f"cluster_name may only hold letters, digits and _.@-, got {self.cluster_name!r}")
        if not self.default_vhost:
            problems.append("default_vhost must not be empty")
        if self.delivery_limit < 1:
            problems.append(f"delivery_limit must be >= 1, got {self.delivery_limit}")
        if not self.dead_letter_exchange or not self.dead_letter_queue:
            problems.append("dead_letter_exchange and dead_letter_queue must be named")
        for pattern in self.excluded_queue_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"excluded_queue_patterns: {pattern!r} is not a regex: {exc}")
        if self.net_ticktime_s is not None and not 1 <= self.net_ticktime_s <= 600:
            problems.append(f"net_ticktime_s must be within [1, 600], got {self.net_ticktime_s}")
        if problems:
            raise ValueError("invalid BrokerConfig:\n" + "\n".join(f"  - {p}" for p in problems))

    @property
    def policy_pattern(self) -> str:
        """The regex of queues the dead-letter policy applies to: every queue but the excluded.

        An anchored negative lookahead, because a policy takes one pattern and RabbitMQ has no
        "except" field. Erlang's ``re`` is PCRE, so it means the same there as in Python.
        """
        excluded = [*self.excluded_queue_patterns, re.escape(self.dead_letter_queue)]
        return "^(?!(?:" + "|".join(excluded) + ")$).+"

    @property
    def memory_available_bytes(self) -> int | None:
        """What RabbitMQ is told it has: the container limit minus the headroom, bytes.

        20% of the limit, at most 2 GiB (MEMORY_HEADROOM_FRACTION, MAX_MEMORY_HEADROOM_BYTES).
        None without a memory limit (the local harness: the node sees the host's RAM).
        """
        if self.memory_limit_bytes is None:
            return None
        headroom = min(int(self.memory_limit_bytes * MEMORY_HEADROOM_FRACTION), MAX_MEMORY_HEADROOM_BYTES)
        return self.memory_limit_bytes - headroom

    @property
    def wal_max_size_bytes(self) -> int | None:
        """``raft.wal_max_size_bytes`` to render: SMALL_BROKER_WAL_MAX_BYTES for a limit of at most
        SMALL_BROKER_MAX_BYTES, else None (RabbitMQ's default, and nothing rendered)."""
        if self.memory_limit_bytes is None or self.memory_limit_bytes > SMALL_BROKER_MAX_BYTES:
            return None
        return SMALL_BROKER_WAL_MAX_BYTES

    @property
    def has_partition_handling(self) -> bool:
        """Whether ``cluster_partition_handling`` means anything for this version.

        Up to 4.2 the metadata store is Mnesia, which keeps running on both sides of a
        partition unless told to pause the minority. 4.3 keeps metadata in Khepri (Raft),
        where only the majority can commit, so the key is gone from the decision.
        """
        return self.version is RabbitVersion.V3_10
