"""The worker's own /metrics, scraped from a real prefork worker on a real RabbitMQ node.

Tasks that succeed, fail, retry and are rejected (an unknown task name) run in the pool's child
processes; the main process serves the sum of every process's samples (``app.metrics``).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.scheduler import publish_confirmed
from contract import metrics
from drill import failing
from drill.tasks import record_plan
from harness.runtime.ports import find_free_base
from tests.integration.test_worker import DRAIN_TIMEOUT_S, Worker, running_worker, wait_for

if TYPE_CHECKING:
    from harness.seed.cluster import LocalCluster

pytestmark = pytest.mark.integration

Samples = dict[str, float]


def scrape(port: int) -> Samples:
    """Every unlabelled sample of the worker's /metrics, by name (histogram buckets keyed by ``le``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"{{le={v}}}" for k, v in sample.labels.items() if k == "le")
            samples[key] = sample.value
    return samples


@pytest.fixture
def metered(rabbit_node: LocalCluster, tmp_path: Path) -> Iterator[tuple[Worker, int]]:
    port = find_free_base(1)
    with running_worker(rabbit_node, tmp_path, metrics_port=port) as worker:
        yield worker, port


def test_worker_exports_every_contract_metric_and_counts_each_outcome(
    metered: tuple[Worker, int], rabbit_node: LocalCluster
) -> None:
    worker, port = metered
    before = scrape(port)
    for name in metrics.WORKER_METRICS:
        exposed = name in before or f"{name}_count" in before
        assert exposed, f"{name} is not exported; got {sorted(before)}"
    assert before[metrics.BROKER_CONNECTED] == 1
    assert abs(before[metrics.LAST_HEARTBEAT] - time.time()) < 30, before[metrics.LAST_HEARTBEAT]

    ok = publish_confirmed(worker.app, record_plan(3, sleep_ms=300), lambda _: None)
    assert ok.ok, ok.error
    for n in range(2):
        worker.app.send_task(failing.FAIL, args=(n,))
    worker.app.send_task(failing.RETRY_ONCE, args=(0,))
    worker.app.send_task("drill.failing.no_such_task", args=(0,))

    def moved(now: Samples, name: str) -> float:
        return now.get(name, 0.0) - before.get(name, 0.0)

    # 3 records + 2 failures + the retried task's 2 runs; the unknown task is refused, not run.
    wait_for(
        lambda: moved(scrape(port), f"{metrics.TASK_RUNTIME}_count") >= 7,
        DRAIN_TIMEOUT_S,
        "7 task runs in the runtime histogram",
        worker,
    )
    after = scrape(port)
    report = {name: moved(after, name) for name in after if moved(after, name)}
    assert moved(after, metrics.TASKS_RECEIVED) >= 7, report
    assert moved(after, metrics.TASKS_SUCCEEDED) >= 4, report  # 3 records + the retried task's second run
    assert moved(after, metrics.TASKS_FAILED) == 2, report
    assert moved(after, metrics.TASKS_RETRIED) == 1, report
    assert moved(after, metrics.TASKS_REJECTED) == 1, report
    # The three records slept 0.3 s each, in the pool processes.
    runtime = metrics.TASK_RUNTIME
    assert moved(after, f"{runtime}_sum") >= 0.9, report
    assert moved(after, f"{runtime}_bucket{{le=0.25}}") <= moved(after, f"{runtime}_count") - 3, report

    # Two long tasks, one per pool process: both active at once.
    long = publish_confirmed(worker.app, record_plan(2, sleep_ms=4000), lambda _: None)
    assert long.ok, long.error
    wait_for(lambda: scrape(port)[metrics.ACTIVE_TASKS] == 2, DRAIN_TIMEOUT_S, "2 active tasks", worker)
    assert scrape(port)[metrics.RESERVED_TASKS] >= 0

    # A lost connection: the gauge drops while the consumer restarts, the reconnect is counted.
    rabbit_node.rabbitmqctl(0, "close_all_connections", "test_worker_metrics: simulated connection loss")
    wait_for(
        lambda: (
            (s := scrape(port))[metrics.BROKER_RECONNECTS] >= before[metrics.BROKER_RECONNECTS] + 1
            and s[metrics.BROKER_CONNECTED] == 1
        ),
        DRAIN_TIMEOUT_S,
        "a counted reconnect and the broker connected again",
        worker,
    )
