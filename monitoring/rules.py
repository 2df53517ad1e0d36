"""The alert rules, rendered once for every consumer: the GMP ``Rules`` object, the
prometheus-operator ``PrometheusRule``, the drills' Prometheus and ``promtool test rules``.

Every duration the rules use is a field of :class:`AlertTiming`. :data:`PRODUCTION` is what a
cluster gets; :meth:`AlertTiming.compressed` divides all of it by one factor for the local drills,
whose faults last seconds, so the drills load these very expressions, not a copy.

Broker metrics are the ones RabbitMQ 4.3.6's ``rabbitmq_prometheus`` exposes (checked against a
plan-booted 4.3.6 cluster): ``/metrics`` for node state and alarms, ``/metrics/detailed`` with the
``queue_coarse_metrics`` and ``queue_consumer_count`` families for per-queue depth, consumers and
replica placement (``rabbitmq_detailed_queue_info`` has one series per node holding a replica,
``membership`` leader or follower). Only the queue's leader reports its depth and consumers, so
per-queue sums count each message once.

RabbitMQ exports no quorum-critical gauge (that is a health check,
``rabbitmq-diagnostics check_if_node_is_quorum_critical``); the rule derives it from the replicas
that nodes still report, against the most the queue had over ``membership_lookback``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from contract import metrics, timing, wire

BROKER_NO_MAJORITY: Final = "HaCeleryBrokerNoMajority"
BROKER_NODE_DOWN: Final = "HaCeleryBrokerNodeDown"
BROKER_QUORUM_CRITICAL: Final = "HaCeleryBrokerQuorumCritical"
BROKER_MEMORY_ALARM: Final = "HaCeleryBrokerMemoryAlarm"
BROKER_DISK_ALARM: Final = "HaCeleryBrokerDiskAlarm"
DEAD_LETTERED_TASKS: Final = "HaCeleryDeadLetteredTasks"
BACKLOG_WITHOUT_CONSUMER: Final = "HaCeleryBacklogWithoutConsumer"
WORKER_HEARTBEAT_MISSING: Final = "HaCeleryWorkerHeartbeatMissing"
WORKER_RECONNECT_STORM: Final = "HaCeleryWorkerReconnectStorm"
UNACKED_STUCK: Final = "HaCeleryUnackedStuck"
BROKER_CERTIFICATE_EXPIRING: Final = "HaCeleryBrokerCertificateExpiring"

ALERTS: Final[tuple[str, ...]] = (
    BROKER_NO_MAJORITY,
    BROKER_NODE_DOWN,
    BROKER_QUORUM_CRITICAL,
    BROKER_MEMORY_ALARM,
    BROKER_DISK_ALARM,
    DEAD_LETTERED_TASKS,
    BACKLOG_WITHOUT_CONSUMER,
    WORKER_HEARTBEAT_MISSING,
    WORKER_RECONNECT_STORM,
    UNACKED_STUCK,
    BROKER_CERTIFICATE_EXPIRING,
)

RECONNECT_STORM_COUNT: Final = 3
"""Reconnects of one worker within ``reconnect_window`` that make a storm. One broker failover
costs each worker one reconnect (a rolling restart of three nodes at most three, spread over
minutes); more than three in the window is a flapping broker or network."""

DEFAULT_BROKER_NODES: Final = 3
"""The broker StatefulSet's replicas the rules judge a majority of (the project's default)."""

GROUP_BROKER: Final = "ha-celery-broker"
GROUP_QUEUES: Final = "ha-celery-queues"
GROUP_WORKERS: Final = "ha-celery-workers"


@dataclass(frozen=True)
class AlertTiming:
    """Every duration the rules and their scrapes use, in seconds."""

    scrape_interval_s: float = 30
    """How often each target is scraped (the scrape objects' interval): GMP's managed collection
    bills per sample, and 30 s resolves a node restart (tens of seconds) in two or more scrapes."""
    evaluation_interval_s: float = 30
    """How often the rule groups are evaluated; no faster than the scrapes feeding them."""
    no_majority_for_s: float = 60
    """A majority lost is an outage (no quorum queue accepts or delivers); two scrapes confirm it."""
    node_down_for_s: float = 120
    """A restarted broker pod boots in seconds and a drained one in under a minute, so a node still
    missing after two minutes is not a routine restart."""
    quorum_critical_for_s: float = 300
    """Bare-majority queues are normal for the length of a rolling restart; five minutes is longer."""
    membership_lookback_s: float = 3600
    """How far back the rule looks for a queue's full replica count. A node gone longer than this
    stops counting as a missing replica (``HaCeleryBrokerNodeDown`` still fires)."""
    alarm_for_s: float = 60
    """A memory or disk alarm blocks every publisher; one minute rules out a single spike."""
    dlq_for_s: float = 60
    """Dead-lettered tasks never leave by themselves; the delay only absorbs a scrape gap."""
    backlog_for_s: float = 300
    """Ready tasks with no consumer on the task queue: a worker Deployment rolls out, or reconnects
    after a failover (``FAILOVER_WINDOW_S``, 60 s), well within five minutes. With no consumer
    the backlog can only grow, so the rule needs no growth test; one would resolve the alert as
    soon as publishing stopped, with every task still waiting."""
    heartbeat_max_age_s: float = 120
    """A worker's last heartbeat older than this is missing: it beats every 5 s while connected,
    and a failover (60 s) pauses it; the liveness probe restarts at 90 s. The worker's beat is not
    compressed with the rest, so neither is this below ``min_heartbeat_age_s``."""
    heartbeat_for_s: float = 60
    """How long a heartbeat must stay missing before the alert fires."""
    reconnect_window_s: float = 900
    """Window in which more than ``RECONNECT_STORM_COUNT`` reconnects of one worker are a storm."""
    reconnect_for_s: float = 0
    """The window already spans the storm; fire as soon as it is seen."""
    unacked_window_s: float = 900
    """Unacked task messages with no task finished anywhere for this long are stuck: a task may run
    ``TASK_TIME_LIMIT_S`` (60 s) and wait prefetched for as long again; the broker's own backstop,
    ``consumer_timeout`` (30 min), comes much later."""
    unacked_for_s: float = 300
    """How long the stuck state must hold before the alert fires."""
    certificate_warning_s: float = 21 * 24 * 3600
    """A broker node certificate this close to its end warns: any ``pulumi up`` in its last 30 days
    (``NODE_CERT_EARLY_RENEWAL_S``) renews it, so three weeks left means nine days of that window
    went by without an update, and leaves three weeks to run one before clients are refused."""
    certificate_for_s: float = 600
    """The workers read the certificates hourly; ten minutes only absorbs a scrape gap."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AlertTiming.{f.name}: got {value!r}; allowed: a finite number of seconds >= 0")
        if self.scrape_interval_s <= 0 or self.evaluation_interval_s <= 0:
            raise ValueError(
                f"AlertTiming: scrape_interval_s and evaluation_interval_s must be > 0, got "
                f"{self.scrape_interval_s} and {self.evaluation_interval_s}"
            )
        if self.heartbeat_max_age_s < self.min_heartbeat_age_s:
            raise ValueError(
                f"AlertTiming.heartbeat_max_age_s: got {self.heartbeat_max_age_s} s; allowed: at least"
                f" {self.min_heartbeat_age_s} s (two of the worker's beat intervals plus two scrapes), or a healthy"
                " worker looks silent"
            )
        if self.certificate_warning_s > timing.NODE_CERT_EARLY_RENEWAL_S:
            raise ValueError(
                f"AlertTiming.certificate_warning_s: got {self.certificate_warning_s} s; allowed: at most the"
                f" renewal window ({timing.NODE_CERT_EARLY_RENEWAL_S} s), or it warns of what the next up renews"
            )
        for window in ("reconnect_window_s", "unacked_window_s", "membership_lookback_s"):
            if getattr(self, window) < 2 * self.scrape_interval_s:
                raise ValueError(
                    f"AlertTiming.{window}: got {getattr(self, window)} s; allowed: at least two scrape intervals"
                    f" ({2 * self.scrape_interval_s} s), or a rate over it has fewer than two samples"
                )

    @property
    def min_heartbeat_age_s(self) -> float:
        """The youngest heartbeat age that may count as missing: two of the worker's own beat
        intervals (``HEALTH_HEARTBEAT_INTERVAL_S``, not ours to compress; one beat late on a busy
        machine is not a silent worker) plus two scrapes."""
        return _min_heartbeat_age_s(self.scrape_interval_s)

    def compressed(self, factor: float, *, scrape_interval_s: float | None = None) -> AlertTiming:
        """The same timing ``factor`` times faster (every field divided by it), e.g. for drills whose
        faults last seconds; rounded to whole milliseconds, the finest unit Prometheus takes. The
        heartbeat age stays at least ``min_heartbeat_age_s``: the worker beats at its own pace.
        ``scrape_interval_s`` replaces the compressed scrape interval (a loaded machine cannot
        scrape as fast as the factor asks); the floors follow it."""
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(f"compressed(factor): got {factor!r}; allowed: a finite number >= 1")
        scaled = {f.name: round(getattr(self, f.name) / factor, 3) for f in fields(self)}
        if scrape_interval_s is not None:
            scaled["scrape_interval_s"] = scrape_interval_s
        floor = _min_heartbeat_age_s(scaled["scrape_interval_s"])
        scaled["heartbeat_max_age_s"] = max(scaled["heartbeat_max_age_s"], floor)
        return replace(self, **scaled)


def _min_heartbeat_age_s(scrape_interval_s: float) -> float:
    # One formula for the check and for compressed(): computed before a timing exists, whose
    # __post_init__ would refuse the unfloored value.
    return 2 * timing.HEALTH_HEARTBEAT_INTERVAL_S + 2 * scrape_interval_s


PRODUCTION: Final[AlertTiming] = AlertTiming()
"""The timing users get (see each field for why)."""


def duration(seconds: float) -> str:
    """A Prometheus duration string: the largest unit that states ``seconds`` exactly (``2m``,
    ``90s``, ``1500ms``)."""
    ms = round(seconds * 1000)
    if ms < 0:
        raise ValueError(f"duration: got {seconds!r}; allowed: >= 0")
    if ms == 0:
        return "0s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0 and ms:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _rule(
    alert: str, expr: str, *, for_s: float, severity: str, summary: str, description: str, runbook: str
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": duration(for_s),
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description, "runbook": runbook},
    }


def rule_groups(timing: AlertTiming = PRODUCTION, *, broker_nodes: int = DEFAULT_BROKER_NODES) -> list[dict[str, Any]]:
    """The Prometheus rule file's ``groups`` for a broker cluster of ``broker_nodes`` nodes."""
    if broker_nodes < 1:
        raise ValueError(f"rule_groups(broker_nodes): got {broker_nodes}; allowed: >= 1")
    t = timing
    majority = broker_nodes // 2 + 1
    tolerated = broker_nodes - majority
    broker = f'job="{metrics.BROKER_JOB}"'
    worker = f'job="{metrics.WORKER_JOB}"'
    task_queue = f'queue="{wire.QUEUE_NAME}"'
    dlq = f'queue="{wire.DEAD_LETTER_QUEUE}"'
    replicas = 'count by (vhost, queue) (rabbitmq_detailed_queue_info{queue_type="rabbit_quorum_queue"})'
    step = duration(t.evaluation_interval_s)
    most_replicas = f"max_over_time(({replicas})[{duration(t.membership_lookback_s)}:{step}])"
    finished = " + ".join(
        f"(sum(increase({name}{{{worker}}}[{duration(t.unacked_window_s)}])) or vector(0))"
        for name in (metrics.TASKS_SUCCEEDED, metrics.TASKS_FAILED, metrics.TASKS_RETRIED, metrics.TASKS_REJECTED)
    )

    broker_rules = [
        _rule(
            BROKER_NO_MAJORITY,
            # A node counts if it answers its scrape and reaches at least a majority of the cluster
            # (itself included): a node cut off by a partition answers but holds no quorum.
            f"(count(rabbitmq_unreachable_cluster_peers_count{{{broker}}} <= {tolerated}) or vector(0)) < {majority}",
            for_s=t.no_majority_for_s,
            severity="critical",
            summary=f"Fewer than {majority} of {broker_nodes} RabbitMQ nodes are up and connected",
            description="Quorum queues need a majority of their replicas: no task is accepted or delivered until a"
            " majority is back. {{ $value }} node(s) up with a majority in reach.",
            runbook="kubectl -n ha-celery get pods -l app.kubernetes.io/name=rabbitmq; bring nodes back (pod events,"
            " PVCs, node pool); never delete a broker PVC to make a pod start.",
        ),
        _rule(
            BROKER_NODE_DOWN,
            # Pods deleted or rescheduled have no scrape target at all, so count the live ones; a
            # node that answers but cannot reach a peer is a partition or a peer that is down.
            f"((count(up{{{broker}}} == 1) or vector(0)) < {broker_nodes})"
            f" or (max(rabbitmq_unreachable_cluster_peers_count{{{broker}}}) > 0)",
            for_s=t.node_down_for_s,
            severity="warning",
            summary="A RabbitMQ node is down or unreachable from its peers",
            description=f"Fewer than {broker_nodes} broker nodes answer their scrape, or a node cannot reach a cluster"
            " peer. Queues keep working on a majority; one more loss stops them.",
            runbook="kubectl -n ha-celery describe pod rabbitmq-N and its logs; do not restart or drain another"
            " broker until this clears.",
        ),
        _rule(
            BROKER_QUORUM_CRITICAL,
            # Replicas a queue still has on live nodes, against the most it had recently: at a bare
            # majority, losing one more node stops the queue. A queue that never had 3 replicas
            # (a 1-node dev cluster) is always at a bare majority: no alert can change that.
            f"count((({replicas}) <= floor({most_replicas} / 2) + 1) and ({most_replicas} >= 3)) > 0",
            for_s=t.quorum_critical_for_s,
            severity="warning",
            summary="Quorum queues have only a bare majority of replicas online",
            description="{{ $value }} quorum queue(s) would lose availability if one more broker node went down"
            " (what rabbitmq-diagnostics check_if_node_is_quorum_critical refuses a shutdown for).",
            runbook="Find the missing node (HaCeleryBrokerNodeDown) and bring it back; hold upgrades and drains;"
            " if a node is gone for good, rabbitmq-queues grow <new-node> all.",
        ),
        _rule(
            BROKER_MEMORY_ALARM,
            f"max by (instance) (rabbitmq_alarms_memory_used_watermark{{{broker}}}) > 0",
            for_s=t.alarm_for_s,
            severity="critical",
            summary="RabbitMQ memory alarm on {{ $labels.instance }}: publishers are blocked",
            description="The node is above its memory high watermark and blocks every publishing connection.",
            runbook="Check queue depth and consumers (a backlog held in memory); scale the workers or raise the"
            " broker's memory (brokerMemoryMiB).",
        ),
        _rule(
            BROKER_DISK_ALARM,
            f"max by (instance) (rabbitmq_alarms_free_disk_space_watermark{{{broker}}}) > 0",
            for_s=t.alarm_for_s,
            severity="critical",
            summary="RabbitMQ disk alarm on {{ $labels.instance }}: publishers are blocked",
            description="Free disk is below the node's disk_free_limit; every publishing connection is blocked.",
            runbook="Drain the backlog (scale workers) or grow the broker disks in place"
            " (docs/operate-broker.md: Growing the disks).",
        ),
    ]
    queue_rules = [
        _rule(
            DEAD_LETTERED_TASKS,
            f"sum by (vhost, queue) (rabbitmq_detailed_queue_messages{{{dlq}}}) > 0",
            for_s=t.dlq_for_s,
            severity="warning",
            summary=f"{{{{ $value }}}} task(s) in {wire.DEAD_LETTER_QUEUE}",
            description="Tasks were rejected past the delivery limit (poison tasks or workers crashing on them);"
            " they are kept, not run.",
            runbook=f"Inspect them in the management UI (queue {wire.DEAD_LETTER_QUEUE}, Get messages), fix the"
            " task, then shovel them back to the task queue or purge.",
        ),
        _rule(
            BACKLOG_WITHOUT_CONSUMER,
            f"(sum by (vhost, queue) (rabbitmq_detailed_queue_messages_ready{{{task_queue}}}) > 0)"
            f" and (sum by (vhost, queue) (rabbitmq_detailed_queue_consumers{{{task_queue}}}) == 0)",
            for_s=t.backlog_for_s,
            severity="critical",
            summary="Tasks are waiting and no worker consumes the task queue",
            description="{{ $value }} ready tasks and no consumer on the queue: tasks are accepted but"
            " nothing runs them.",
            runbook="kubectl -n ha-celery get deploy celery-worker and the worker logs (broker connection,"
            " crash loop, scaled to 0?).",
        ),
        _rule(
            UNACKED_STUCK,
            f"(min_over_time((sum by (vhost, queue) (rabbitmq_detailed_queue_messages_unacked{{{task_queue}}}))"
            f"[{duration(t.unacked_window_s)}:{step}]) > 0)"
            # ... over a whole window: a young series (a Prometheus just started) proves nothing yet.
            f" and (sum by (vhost, queue) (rabbitmq_detailed_queue_messages_unacked{{{task_queue}}}"
            f" offset {duration(t.unacked_window_s)}) > 0)"
            # One sum per counter: increase() drops the name, so their series would collide in one.
            f" unless on () (({finished}) > 0)",
            for_s=t.unacked_for_s,
            severity="warning",
            summary="Delivered tasks stay unacked and no task finishes",
            description="{{ $value }} or more tasks were unacked for the whole window while no worker finished"
            " a task: workers are stuck holding them.",
            runbook="Find the stuck workers (active tasks, heartbeat) and restart them: their tasks are redelivered"
            " (acks late).",
        ),
    ]
    worker_rules = [
        _rule(
            WORKER_HEARTBEAT_MISSING,
            f"time() - {metrics.LAST_HEARTBEAT}{{{worker}}} > {t.heartbeat_max_age_s:g}",
            for_s=t.heartbeat_for_s,
            severity="warning",
            summary="Worker {{ $labels.instance }} has not beaten for {{ $value | humanizeDuration }}",
            description="The worker's heartbeat step stopped: its event loop is stuck or it lost the broker.",
            runbook="kubectl -n ha-celery logs the pod; the liveness probe restarts a stuck worker, a worker"
            " without a broker waits for it: check HaCeleryBrokerNodeDown.",
        ),
        _rule(
            WORKER_RECONNECT_STORM,
            f"increase({metrics.BROKER_RECONNECTS}{{{worker}}}[{duration(t.reconnect_window_s)}])"
            f" > {RECONNECT_STORM_COUNT}",
            for_s=t.reconnect_for_s,
            severity="warning",
            summary="Worker {{ $labels.instance }} keeps reconnecting to the broker",
            description=f"More than {RECONNECT_STORM_COUNT} broker reconnects of one worker in"
            f" {duration(t.reconnect_window_s)}: a flapping broker node or network.",
            runbook="Check the broker nodes' restarts and the network (kubectl get events); worker logs show"
            " which broker URL drops.",
        ),
        _rule(
            BROKER_CERTIFICATE_EXPIRING,
            # The workers' reading (app.certs): the earliest node certificate any worker saw.
            f"min({metrics.BROKER_CERTIFICATE_EXPIRY}{{{worker}}}) - time() < {t.certificate_warning_s:.0f}",
            for_s=t.certificate_for_s,
            severity="warning",
            summary="A broker node certificate expires in {{ $value | humanizeDuration }}",
            description="When it expires every new AMQP connection to that node is refused (worker failovers,"
            " publishers). The last pulumi up did not renew it.",
            runbook="Run pulumi up on the stack: it renews node certificates in their last 30 days (make plan-diff"
            " shows the certificates replaced, the TLS Secret updated in place and the brokers rolling one at a"
            " time). If it renews nothing: pulumi up --replace each rabbitmq-N-cert (docs/operate-broker.md).",
        ),
    ]
    interval = duration(t.evaluation_interval_s)
    return [
        {"name": GROUP_BROKER, "interval": interval, "rules": broker_rules},
        {"name": GROUP_QUEUES, "interval": interval, "rules": queue_rules},
        {"name": GROUP_WORKERS, "interval": interval, "rules": worker_rules},
    ]
