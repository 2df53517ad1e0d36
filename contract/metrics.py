"""Metric names and ports read on both sides of the scrape: the worker that exports them, the
alert rules and dashboard that query them, the scrape objects the cloud program writes and the
Prometheus the local drills run.

The worker exports from inside its own process (``prometheus-client``, no task events) with no
per-task and no per-pod labels of its own: Prometheus adds ``pod``/``instance`` at scrape time, so
an autoscaled Deployment does not multiply series beyond one set per live pod.
Broker metrics are RabbitMQ's own (``rabbitmq_prometheus``), named there, not here.
"""

from __future__ import annotations

from typing import Final

WORKER_METRICS_PORT: Final = 9808
"""The worker pod's ``/metrics`` port (the port celery-exporter made familiar)."""
ENV_METRICS_PORT: Final = "WORKER_METRICS_PORT"
"""The worker's ``/metrics`` port (default :data:`WORKER_METRICS_PORT`; 0 turns the exporter off, as the
local harness does for workers that share the host's network)."""
ENV_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: the directory where every process of the worker (the main one and its
prefork children, where task outcomes happen) writes its samples; the main process serves their sum."""
DEFAULT_MULTIPROC_DIR: Final = "/tmp/prometheus"
"""On the pod's writable /tmp emptyDir; emptied by the worker at start (files of a previous container)."""
WORKER_METRICS_PORT_NAME: Final = "metrics"
WORKER_METRICS_PATH: Final = "/metrics"
BROKER_METRICS_PORT_NAME: Final = "prometheus"
"""Container port names: the scrape objects select ports by name, not number."""
BROKER_METRICS_PATH: Final = "/metrics"
BROKER_DETAILED_METRICS_PATH: Final = "/metrics/detailed"
"""Per-object endpoint: queue depth and consumers per queue without the cost of per-object mode
on the aggregated endpoint."""
BROKER_DETAILED_FAMILIES: Final[tuple[str, ...]] = ("queue_coarse_metrics", "queue_consumer_count")

BROKER_JOB: Final = "rabbitmq"
BROKER_DETAILED_JOB: Final = "rabbitmq-detailed"
WORKER_JOB: Final = "celery-worker"
"""The ``job`` label of each scrape, which the alert rules and the dashboard select on: the GMP
PodMonitoring's name (GMP sets ``job`` to it and refuses to relabel it), the prometheus-operator
objects' relabelled ``job`` and the drills' Prometheus ``job_name``. The broker's two endpoints
are two jobs: on one job both would produce an ``up`` series with the same labels per pod."""

PREFIX: Final = "ha_celery_worker_"

TASKS_RECEIVED: Final = f"{PREFIX}tasks_received_total"
TASKS_SUCCEEDED: Final = f"{PREFIX}tasks_succeeded_total"
TASKS_FAILED: Final = f"{PREFIX}tasks_failed_total"
TASKS_RETRIED: Final = f"{PREFIX}tasks_retried_total"
TASKS_REJECTED: Final = f"{PREFIX}tasks_rejected_total"
"""Counters, as exposed (prometheus-client appends ``_total`` to a Counter's base name). Received: task
messages taken from the broker. Succeeded, failed, retried: outcomes of runs (failed includes a hard time
limit; retried is ``Task.retry``). Rejected: messages refused without a run (an unknown task name, an
undecodable message); with the broker's policy they are dead-lettered to ``celery.dlq``."""
TASK_RUNTIME: Final = f"{PREFIX}task_runtime_seconds"
"""Histogram of task run time (``_bucket``, ``_sum``, ``_count``)."""
BROKER_CONNECTED: Final = f"{PREFIX}broker_connected"
"""Gauge: 1 while the worker's consumer holds a broker connection, 0 while it reconnects."""
BROKER_INFO: Final = f"{PREFIX}broker_info"
"""Gauge, 1 with a ``broker`` label (``host:port``) while the consumer consumes from that broker; absent
otherwise. Which node each worker is on: after a failover, whether they left a node (the freeze drill
reads it, ``drill.held``)."""
BROKER_RECONNECTS: Final = f"{PREFIX}broker_reconnects_total"
"""Counter: consumer restarts after a lost connection (a storm means flapping brokers or network)."""
RESERVED_TASKS: Final = f"{PREFIX}reserved_tasks"
ACTIVE_TASKS: Final = f"{PREFIX}active_tasks"
"""Gauges: prefetched but not started; running now."""
LAST_HEARTBEAT: Final = f"{PREFIX}last_heartbeat_timestamp_seconds"
"""Gauge: Unix time of the health step's last heartbeat (the liveness file's mtime; before the first
beat, the worker's start)."""

BROKER_CERTIFICATE_EXPIRY: Final = f"{PREFIX}broker_certificate_expiry_timestamp_seconds"
"""Gauge, with TLS only: Unix time at which the earliest of the broker nodes' certificates expires, as
the worker last saw them (a TLS handshake with every broker host, ``CERTIFICATE_PROBE_INTERVAL_S``
apart). A certificate already expired reads as expiring at the probe's time. Absent without TLS, and
until a probe has reached a node."""

WORKER_METRICS: Final[tuple[str, ...]] = (
    TASKS_RECEIVED,
    TASKS_SUCCEEDED,
    TASKS_FAILED,
    TASKS_RETRIED,
    TASKS_REJECTED,
    TASK_RUNTIME,
    BROKER_CONNECTED,
    BROKER_INFO,
    BROKER_RECONNECTS,
    RESERVED_TASKS,
    ACTIVE_TASKS,
    LAST_HEARTBEAT,
)
WORKER_TLS_METRICS: Final[tuple[str, ...]] = (BROKER_CERTIFICATE_EXPIRY,)
"""Exported in addition to :data:`WORKER_METRICS` when the broker connection is TLS."""
CERTIFICATE_PROBE_INTERVAL_S: Final = 3600
"""How often a TLS worker reads the broker nodes' certificates: expiry is a matter of days, and one
handshake per node per hour per worker costs nothing."""
CERTIFICATE_PROBE_RETRY_S: Final = 30
"""When no node answered (a worker starting before its brokers listen), the next try comes this soon."""
