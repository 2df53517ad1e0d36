"""The dashboard and the alert rules query only broker metrics that exist: scraped here from a
plan-booted RabbitMQ 4.3.6 cluster through the very endpoints and families the scrape objects name
(the offline half, worker metrics included, is tests/unit/monitoring/test_dashboard.py).

On the package's dev cluster (it booted one of its own before: ~60 s of every ``make test``), first
of the package by name, so no fault of the other modules has touched it yet."""

from __future__ import annotations

import re
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from contract import metrics, wire
from drill.pod_scenarios import BROKERS
from tests.drills.conftest import Booted
from tests.unit.monitoring.test_dashboard import referenced

pytestmark = pytest.mark.drill

SYNTHETIC = {"up"}
"""Written by Prometheus itself for every scrape target, not by an exporter."""

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
def broker_metrics(booted: Booted) -> dict[str, list[str]]:
    booted.clean()
    pods = [p for p in booted.target.cluster.pods_of(BROKERS) if p.ip is not None]
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
    return exposed


def _replicas(exposed: dict[str, list[str]], queue: str) -> list[str]:
    return [labels for labels in exposed.get("rabbitmq_detailed_queue_info", []) if f'queue="{queue}"' in labels]


def test_broker_metrics_exist_on_a_real_4_3_broker(broker_metrics: dict[str, list[str]]) -> None:
    broker = {n for n in referenced() if not n.startswith(metrics.PREFIX)} - SYNTHETIC
    assert broker
    missing = sorted(broker - set(broker_metrics))
    assert not missing, f"referenced but not exposed by RabbitMQ 4.3.6 (/metrics + the detailed families): {missing}"


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
