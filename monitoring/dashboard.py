"""The Grafana dashboard, built with the Grafana foundation SDK and shipped as JSON in a ConfigMap
that Grafana's dashboard sidecar loads (label ``grafana_dashboard: "1"``).

Its queries use the scrape jobs of ``contract.metrics`` and only metrics that a run exposes:
RabbitMQ 4.3.6's own (checked against a plan-booted broker in the integration tests) and the
worker's (``contract.metrics.WORKER_METRICS``). :func:`queries` lists every expression, so the
tests read exactly what ships.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from contract import metrics, wire

UID: Final = "ha-celery-overview"
TITLE: Final = "ha-celery: broker, queues and workers"
CONFIGMAP_LABEL: Final = ("grafana_dashboard", "1")
"""The label Grafana's sidecar (kube-prometheus-stack, the Grafana chart) watches by default."""
FILE_NAME: Final = "ha-celery.json"

_DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
_RATE = "$__rate_interval"
_BROKER = f'job="{metrics.BROKER_JOB}"'
_WORKER = f'job="{metrics.WORKER_JOB}"'
_TASKS = f'queue="{wire.QUEUE_NAME}"'
_DLQ = f'queue="{wire.DEAD_LETTER_QUEUE}"'


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(_DATASOURCE)


def _series(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], width: int = 12
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit).span(width).height(8)
    panel = panel.datasource(_DATASOURCE)
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, description: str, expr: str, unit: str = "none", width: int = 6) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(4)
        .datasource(_DATASOURCE)
        .with_target(_query(expr, title, "A"))
    )


def build() -> dict[str, Any]:
    """The dashboard model, as Grafana's JSON (a dict)."""
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .tags(["ha-celery", "rabbitmq", "celery"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_row(dash.Row("Broker nodes"))
        .with_panel(_stat("Broker nodes up", "Broker pods answering their scrape.", f"count(up{{{_BROKER}}} == 1)"))
        .with_panel(
            _stat(
                "Unreachable peers (worst node)",
                "Cluster members the worst-off node cannot reach: 0 when healthy.",
                f"max(rabbitmq_unreachable_cluster_peers_count{{{_BROKER}}})",
            )
        )
        .with_panel(
            _stat(
                "Resource alarms",
                "Memory and disk alarms raised (each blocks every publisher).",
                f"sum(rabbitmq_alarms_memory_used_watermark{{{_BROKER}}})"
                f" + sum(rabbitmq_alarms_free_disk_space_watermark{{{_BROKER}}})",
            )
        )
        .with_panel(
            _stat(
                "Quorum queue replicas online",
                "Replicas that live nodes report, over all quorum queues.",
                'count(rabbitmq_detailed_queue_info{queue_type="rabbit_quorum_queue"})',
            )
        )
        .with_panel(
            _series(
                "Memory used / limit",
                "Resident memory against the high watermark, per node.",
                "bytes",
                [
                    (f"rabbitmq_process_resident_memory_bytes{{{_BROKER}}}", "used {{instance}}"),
                    (f"rabbitmq_resident_memory_limit_bytes{{{_BROKER}}}", "limit {{instance}}"),
                ],
            )
        )
        .with_panel(
            _series(
                "Disk free / limit",
                "Free disk against disk_free_limit, per node.",
                "bytes",
                [
                    (f"rabbitmq_disk_space_available_bytes{{{_BROKER}}}", "free {{instance}}"),
                    (f"rabbitmq_disk_space_available_limit_bytes{{{_BROKER}}}", "limit {{instance}}"),
                ],
            )
        )
        .with_row(dash.Row("Queues"))
        .with_panel(
            _series(
                "Task queue depth",
                "Ready (waiting) and unacked (delivered, running or prefetched) tasks.",
                "short",
                [
                    (f"sum(rabbitmq_detailed_queue_messages_ready{{{_TASKS}}})", "ready"),
                    (f"sum(rabbitmq_detailed_queue_messages_unacked{{{_TASKS}}})", "unacked"),
                    (f"sum(rabbitmq_detailed_queue_consumers{{{_TASKS}}})", "consumers"),
                ],
            )
        )
        .with_panel(
            _series(
                "Message rates (all queues)",
                "Published, delivered, acknowledged and redelivered messages per second, whole cluster.",
                "ops",
                [
                    (f"sum(rate(rabbitmq_global_messages_received_total{{{_BROKER}}}[{_RATE}]))", "published"),
                    (f"sum(rate(rabbitmq_global_messages_delivered_total{{{_BROKER}}}[{_RATE}]))", "delivered"),
                    (f"sum(rate(rabbitmq_global_messages_acknowledged_total{{{_BROKER}}}[{_RATE}]))", "acked"),
                    (f"sum(rate(rabbitmq_global_messages_redelivered_total{{{_BROKER}}}[{_RATE}]))", "redelivered"),
                ],
            )
        )
        .with_panel(
            _series(
                "Dead-letter queue",
                f"Tasks kept in {wire.DEAD_LETTER_QUEUE}, and the rate at which the delivery limit sends them there.",
                "short",
                [
                    (f"sum(rabbitmq_detailed_queue_messages{{{_DLQ}}})", "in queue"),
                    (
                        f"sum(rate(rabbitmq_global_messages_dead_lettered_delivery_limit_total{{{_BROKER}}}[{_RATE}]))",
                        "dead-lettered/s",
                    ),
                ],
            )
        )
        .with_row(dash.Row("Workers"))
        .with_panel(
            _series(
                "Task throughput",
                "Tasks per second by outcome, all workers.",
                "ops",
                [
                    (f"sum(rate({metrics.TASKS_RECEIVED}{{{_WORKER}}}[{_RATE}]))", "received"),
                    (f"sum(rate({metrics.TASKS_SUCCEEDED}{{{_WORKER}}}[{_RATE}]))", "succeeded"),
                    (f"sum(rate({metrics.TASKS_FAILED}{{{_WORKER}}}[{_RATE}]))", "failed"),
                    (f"sum(rate({metrics.TASKS_RETRIED}{{{_WORKER}}}[{_RATE}]))", "retried"),
                    (f"sum(rate({metrics.TASKS_REJECTED}{{{_WORKER}}}[{_RATE}]))", "rejected"),
                ],
            )
        )
        .with_panel(
            _series(
                "Task run time",
                "Median and 95th percentile of task run time.",
                "s",
                [
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate({metrics.TASK_RUNTIME}_bucket{{{_WORKER}}}"
                        f"[{_RATE}])))",
                        "p50",
                    ),
                    (
                        f"histogram_quantile(0.95, sum by (le) (rate({metrics.TASK_RUNTIME}_bucket{{{_WORKER}}}"
                        f"[{_RATE}])))",
                        "p95",
                    ),
                ],
            )
        )
        .with_panel(
            _series(
                "Workers and their tasks",
                "Worker pods scraped, connected to a broker, and their running and prefetched tasks.",
                "short",
                [
                    (f"count(up{{{_WORKER}}} == 1)", "pods up"),
                    (f"sum({metrics.BROKER_CONNECTED}{{{_WORKER}}})", "connected"),
                    (f"sum({metrics.ACTIVE_TASKS}{{{_WORKER}}})", "active"),
                    (f"sum({metrics.RESERVED_TASKS}{{{_WORKER}}})", "reserved"),
                ],
            )
        )
        .with_panel(
            _series(
                "Heartbeat age and reconnects",
                "Seconds since each worker's last heartbeat; broker reconnects in the last 15 minutes.",
                "s",
                [
                    (f"time() - {metrics.LAST_HEARTBEAT}{{{_WORKER}}}", "heartbeat age {{instance}}"),
                    (f"increase({metrics.BROKER_RECONNECTS}{{{_WORKER}}}[15m])", "reconnects {{instance}}"),
                ],
            )
        )
    )
    model: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return model


def render() -> str:
    """The dashboard JSON for the ConfigMap (stable key order, so plans diff cleanly)."""
    return json.dumps(build(), indent=2, sort_keys=True)


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [t["expr"] for p in model.get("panels", []) for t in p.get("targets", []) if "expr" in t]


_METRIC = re.compile(r"\b(up|rabbitmq_[a-z0-9_]+|erlang_vm_[a-z0-9_]+|ha_celery_[a-z0-9_]+)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: the project's and RabbitMQ's prefixes, and ``up``.
    Label values in quotes are skipped."""
    return set(_METRIC.findall(re.sub(r'"[^"]*"', '""', expr)))
