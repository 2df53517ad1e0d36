"""Reading a drill's alerts back from Prometheus' ALERTS series (pure; the real Prometheus runs in the drills)."""

from __future__ import annotations

from typing import Any

from contract import metrics
from drill.observe import ALERT_COMPRESSION, DRILL_TIMING, alert_spans, scrape_jobs
from drill.pod_scenarios import BROKERS, WORKERS
from monitoring.rules import PRODUCTION


def series(name: str, stamps: list[float], **labels: str) -> dict[str, Any]:
    metric = {"__name__": "ALERTS", "alertname": name, "alertstate": "firing", **labels}
    return {"metric": metric, "values": [[t, "1"] for t in stamps]}


def test_a_gap_in_the_firing_series_is_two_spans_each_resolved_one_evaluation_after_its_last() -> None:
    step = 0.5
    result = [
        series("HaCeleryBrokerNodeDown", [10.0, 10.5, 11.0, 20.0, 20.5], severity="warning"),
        series("HaCeleryWorkerHeartbeatMissing", [12.0], instance="w:metrics"),
    ]
    spans = alert_spans(result, step)
    assert [(s.name, s.fired_at, s.resolved_at) for s in spans] == [
        ("HaCeleryBrokerNodeDown", 10.0, 11.5),
        ("HaCeleryWorkerHeartbeatMissing", 12.0, 12.5),
        ("HaCeleryBrokerNodeDown", 20.0, 21.0),
    ]
    assert spans[0].labels == {"severity": "warning"}, "alertname and alertstate are the span's, not labels"


def test_the_drills_scrape_the_clouds_jobs_at_the_compressed_timing() -> None:
    jobs = {job.name: job for job in scrape_jobs()}
    assert set(jobs) == {metrics.BROKER_JOB, metrics.BROKER_DETAILED_JOB, metrics.WORKER_JOB}
    assert jobs[metrics.BROKER_DETAILED_JOB].owner == jobs[metrics.BROKER_JOB].owner == BROKERS
    assert jobs[metrics.WORKER_JOB].owner == WORKERS
    assert jobs[metrics.BROKER_DETAILED_JOB].params == {"family": metrics.BROKER_DETAILED_FAMILIES}
    assert not jobs[metrics.BROKER_JOB].params
    compressed = PRODUCTION.compressed(ALERT_COMPRESSION)
    assert DRILL_TIMING.node_down_for_s == compressed.node_down_for_s
    assert DRILL_TIMING.backlog_for_s == compressed.backlog_for_s
    assert DRILL_TIMING.scrape_interval_s == 1.0, "a scrape may take its whole interval: 0.5 s missed live brokers"
    assert DRILL_TIMING.heartbeat_max_age_s == DRILL_TIMING.min_heartbeat_age_s
    assert DRILL_TIMING.node_down_for_s < 4, "a killed broker container is gone for seconds: node-down must see it"
