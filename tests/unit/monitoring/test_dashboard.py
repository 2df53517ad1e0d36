"""The dashboard and the alert rules query only metrics that exist, offline: every expression names a
metric, and the worker's are the contract's (whose export helper the worker's integration test proves).
The broker's are scraped from a plan-booted RabbitMQ 4.3.6 in tests/drills/dev_plan/test_broker_metrics.py."""

from __future__ import annotations

from contract import metrics, wire
from monitoring import dashboard
from monitoring.rules import rule_groups

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def expressions() -> dict[str, str]:
    """Where each expression comes from -> the expression (dashboard panels and alert rules)."""
    found = {f"dashboard query {i}": q for i, q in enumerate(dashboard.queries(dashboard.build()))}
    found |= {f"rule {r['alert']}": r["expr"] for g in rule_groups() for r in g["rules"]}
    return found


def referenced() -> set[str]:
    return {name for expr in expressions().values() for name in dashboard.metric_names(expr)}


def _worker_base(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.startswith(metrics.TASK_RUNTIME) and name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_expression_names_a_metric_it_can_be_checked_on() -> None:
    for where, expr in expressions().items():
        assert dashboard.metric_names(expr), f"{where}: no known metric in {expr!r}"


def test_metric_names_skip_label_values_and_functions() -> None:
    assert dashboard.metric_names('sum(rate(rabbitmq_x_total{queue="rabbitmq_y"}[5m])) + up') == {
        "rabbitmq_x_total",
        "up",
    }


def test_worker_metrics_are_the_contracts() -> None:
    worker = {n for n in referenced() if n.startswith(metrics.PREFIX)}
    assert worker, "the dashboard shows no worker metric"
    exported = (*metrics.WORKER_METRICS, *metrics.WORKER_TLS_METRICS)
    unknown = {n for n in worker if _worker_base(n) not in exported}
    assert not unknown, f"not in contract.metrics.WORKER_METRICS or WORKER_TLS_METRICS: {sorted(unknown)}"


def test_dashboard_covers_what_the_issue_asks() -> None:
    names = {n for q in dashboard.queries(dashboard.build()) for n in dashboard.metric_names(q)}
    for needed in (
        "rabbitmq_unreachable_cluster_peers_count",  # broker nodes
        "rabbitmq_detailed_queue_messages_ready",  # queue depth
        "rabbitmq_global_messages_received_total",  # rates
        "rabbitmq_detailed_queue_messages",  # DLQ
        metrics.TASKS_SUCCEEDED,  # worker throughput
        metrics.TASKS_FAILED,  # failures
    ):
        assert needed in names, needed
    assert any(wire.DEAD_LETTER_QUEUE in q for q in dashboard.queries(dashboard.build()))
