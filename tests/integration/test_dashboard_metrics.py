"""The dashboard and the alert rules query only metrics that exist: the worker's are the contract's
(whose export helper 15b's worker test proves), the broker's are scraped here from a plan-booted
RabbitMQ 4.3.6 cluster through the very endpoints and families the scrape objects name."""

from __future__ import annotations

import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from contract import metrics, wire
from monitoring import dashboard
from monitoring.rules import rule_groups
from tests.conftest import Plan

SYNTHETIC = {"up"}
"""Written by Prometheus itself for every scrape target, not by an exporter."""
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _expressions() -> dict[str, str]:
    """Where each expression comes from -> the expression (dashboard panels and alert rules)."""
    found = {f"dashboard query {i}": q for i, q in enumerate(dashboard.queries(dashboard.build()))}
    found |= {f"rule {r['alert']}": r["expr"] for g in rule_groups() for r in g["rules"]}
    return found


def _referenced() -> set[str]:
    return {name for expr in _expressions().values() for name in dashboard.metric_names(expr)}


def _worker_base(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.startswith(metrics.TASK_RUNTIME) and name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_expression_names_a_metric_it_can_be_checked_on() -> None:
    for where, expr in _expressions().items():
        assert dashboard.metric_names(expr), f"{where}: no known metric in {expr!r}"


def test_metric_names_skip_label_values_and_functions() -> None:
    assert dashboard.metric_names('sum(rate(rabbitmq_x_total{queue="rabbitmq_y"}[5m])) + up') == {
        "rabbitmq_x_total",
        "up",
    }


def test_worker_metrics_are_the_contracts() -> None:
    worker = {n for n in _referenced() if n.startswith(metrics.PREFIX)}
    assert worker, "the dashboard shows no worker metric"
    unknown = {n for n in worker if _worker_base(n) not in metrics.WORKER_METRICS}
    assert not unknown, f"not in contract.metrics.WORKER_METRICS: {sorted(unknown)}"


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


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s")


def _scrape(url: str) -> dict[str, list[str]]:
    """Metric name -> the label sets of its samples, from one exposition-format response."""
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode()
    found: dict[str, list[str]] = {}
    for line in body.splitlines():
        m = _SAMPLE.match(line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2) or "")
    return found


@pytest.fixture(scope="module")
def broker_metrics(plans: dict[str, Plan]) -> Iterator[dict[str, list[str]]]:
    from drill.pod_scenarios import BROKERS
    from drill.runner import booted_plan

    with booted_plan(plans["dev"].directory) as (target, _results):
        pods = [p for p in target.cluster.pods_of(BROKERS) if p.ip is not None]
        assert len(pods) == 3
        query = urllib.parse.urlencode([("family", f) for f in metrics.BROKER_DETAILED_FAMILIES])

        def scrape_all() -> dict[str, list[str]]:
            exposed: dict[str, list[str]] = {}
            for pod in pods:
                base = f"http://{pod.ip}:{wire.PROMETHEUS_PORT}"
                for path in (metrics.BROKER_METRICS_PATH, f"{metrics.BROKER_DETAILED_METRICS_PATH}?{query}"):
                    for name, labels in _scrape(base + path).items():
                        exposed.setdefault(name, []).extend(labels)
            return exposed

        # Booted means Ready; the task queue's replicas start on each node a little later.
        deadline = time.monotonic() + 60
        exposed = scrape_all()
        while len(_replicas(exposed, wire.QUEUE_NAME)) < len(pods) and time.monotonic() < deadline:
            time.sleep(1)
            exposed = scrape_all()
        yield exposed


def _replicas(exposed: dict[str, list[str]], queue: str) -> list[str]:
    return [labels for labels in exposed.get("rabbitmq_detailed_queue_info", []) if f'queue="{queue}"' in labels]


@pytest.mark.integration
def test_broker_metrics_exist_on_a_real_4_3_broker(broker_metrics: dict[str, list[str]]) -> None:
    broker = {n for n in _referenced() if not n.startswith(metrics.PREFIX)} - SYNTHETIC
    assert broker
    missing = sorted(broker - set(broker_metrics))
    assert not missing, f"referenced but not exposed by RabbitMQ 4.3.6 (/metrics + the detailed families): {missing}"


@pytest.mark.integration
def test_the_labels_the_rules_select_on_exist(broker_metrics: dict[str, list[str]]) -> None:
    """The quorum-critical rule counts quorum queue replicas per node; the queue rules select by name."""
    task_queue = _replicas(broker_metrics, wire.QUEUE_NAME)
    assert len(task_queue) == 3, f"one replica of {wire.QUEUE_NAME} per node: {task_queue}"
    assert all('queue_type="rabbit_quorum_queue"' in labels for labels in task_queue)
    assert sorted(re.search(r'membership="(\w+)"', s).group(1) for s in task_queue) == [  # type: ignore[union-attr]
        "follower",
        "follower",
        "leader",
    ]
    for name in ("rabbitmq_detailed_queue_messages", "rabbitmq_detailed_queue_consumers"):
        queues: list[Any] = [s for s in broker_metrics[name] if "queue=" in s]
        assert any(f'queue="{wire.DEAD_LETTER_QUEUE}"' in s for s in queues), name
        assert any(f'queue="{wire.QUEUE_NAME}"' in s for s in queues), name
    assert broker_metrics["rabbitmq_unreachable_cluster_peers_count"] == ["", "", ""]
