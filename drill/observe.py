"""What a real Prometheus saw during a drill: the alerts that fired, queue depth and broker nodes up.

The plan-booted cluster gets a Prometheus (``harness.prometheus``) that scrapes the brokers'
``/metrics`` and ``/metrics/detailed`` and the workers' ``/metrics`` under the scrape jobs of
``contract.metrics``, with the alert rules of ``monitoring.rules`` loaded. A drill's faults last
seconds, so the rules run on :data:`DRILL_TIMING`, the production timing compressed by
:data:`ALERT_COMPRESSION` (every ``for:``, window and interval divided by it, the same
expressions); each report says so.

Alert spans are read back from Prometheus' own ``ALERTS{alertstate="firing"}`` series at the
rule evaluation interval: fired at its first firing evaluation, resolved at the first evaluation
without it (None if it still fired when the drill ended).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from contract import metrics, wire
from drill.pod_scenarios import BROKERS, WORKERS
from harness.kube.cluster import KubeCluster
from harness.prometheus import LocalPrometheus, PrometheusError, ScrapeJob, pod_targets
from harness.runtime.poll import PollTimeout, poll
from monitoring.rules import PRODUCTION, AlertTiming, rule_groups
from monitoring.scrape import endpoints

ALERT_COMPRESSION: Final = 60
"""Production timing / drill timing: the 2-minute node-down ``for:`` becomes 2 s (a killed broker
container is gone for seconds); the heartbeat age keeps its floor (the worker beats every 5 s
whatever the drill)."""
DRILL_SCRAPE_INTERVAL_S: Final = 1.0
"""Not 30 s / 60: a scrape may take at most its interval, and at 0.5 s live brokers on a loaded
2-core machine missed scrapes (broker nodes up dipping with no fault; node-down and no-majority
fired for 0.5 s before a drill started). At 1 s a one-off slow scrape passes, and a rule whose
``for:`` is 2 s needs two missed scrapes in a row."""
DRILL_TIMING: Final = dataclasses.replace(
    PRODUCTION.compressed(ALERT_COMPRESSION, scrape_interval_s=DRILL_SCRAPE_INTERVAL_S),
    # A no-majority that one missed scrape of two nodes cannot fire.
    no_majority_for_s=2 * DRILL_SCRAPE_INTERVAL_S,
)
QUIET_TIMEOUT_S: Final = 120.0
"""For every target to answer and no alert to be pending or firing before a drill starts."""
SETTLE_TIMEOUT_S: Final = 60.0
"""After a drill, how long to wait for its alerts to resolve before reading them back."""

QUEUE_DEPTH: Final = f'sum(rabbitmq_detailed_queue_messages{{queue="{wire.QUEUE_NAME}"}})'
"""Messages in the task queue, ready and unacked (only the queue's leader reports it)."""
BROKERS_UP: Final = f'count(up{{job="{metrics.BROKER_JOB}"}} == 1)'
"""Broker nodes whose ``/metrics`` answered the last scrape."""
FIRING: Final = 'ALERTS{alertstate="firing"}'

Series = list[tuple[float, float]]


def scrape_jobs() -> tuple[ScrapeJob, ...]:
    """The cloud's scrape jobs (``monitoring.scrape.endpoints``), the pods picked by their workload."""
    return tuple(ScrapeJob(e.job, e.selector, e.port, e.path, e.params or {}) for e in endpoints(BROKERS, WORKERS))


@dataclass(frozen=True)
class AlertSpan:
    name: str
    fired_at: float
    resolved_at: float | None
    """Epoch seconds; None: still firing when the drill's observation ended."""
    labels: dict[str, str] = field(default_factory=dict)
    """The alert's own labels (severity, instance, queue ...), without ``alertname``/``alertstate``."""


@dataclass
class Observed:
    """One drill as its Prometheus saw it."""

    timing: AlertTiming
    compression: float
    alerts: list[AlertSpan]
    queue_depth: Series
    brokers_up: Series
    error: str | None = None
    """Why the observation is incomplete (Prometheus unreachable, alerts not settled)."""

    def to_json(self, started: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - started, 3)

        return {
            "alerts": [
                {"name": a.name, "fired_at": rel(a.fired_at), "resolved_at": rel(a.resolved_at), "labels": a.labels}
                for a in self.alerts
            ],
            "alert_timing": {
                "compressed": self.compression,
                "note": f"monitoring.rules.PRODUCTION.compressed({self.compression:g}) (every for/window/interval "
                "divided by it, same expressions) with 1 s scrapes and the floors they set: "
                "heartbeat_max_age_s, no_majority_for_s",
                **dataclasses.asdict(self.timing),
            },
            "observation_error": self.error,
        }


def alert_spans(result: list[dict[str, Any]], step: float) -> list[AlertSpan]:
    """Firing spans from a range query of ``ALERTS{alertstate="firing"}`` evaluated every ``step`` s."""
    spans: list[AlertSpan] = []
    for series in result:
        labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "alertname", "alertstate")}
        stamps = [float(t) for t, _ in series["values"]]
        start = prev = stamps[0]
        for t in stamps[1:]:
            if t - prev > 1.5 * step:
                spans.append(AlertSpan(series["metric"]["alertname"], start, prev + step, labels))
                start = t
            prev = t
        spans.append(AlertSpan(series["metric"]["alertname"], start, prev + step, labels))
    return sorted(spans, key=lambda s: (s.fired_at, s.name))


def _names(prometheus: LocalPrometheus) -> list[str]:
    with contextlib.suppress(OSError, PrometheusError):
        return sorted(f"{a['labels'].get('alertname')} ({a['state']})" for a in prometheus.alerts())
    return ["(prometheus did not answer)"]


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "alertstate"))


def _values(result: list[dict[str, Any]]) -> Series:
    if not result:
        return []
    return [(float(t), float(v)) for t, v in result[0]["values"]]


class Observer:
    """The drills' Prometheus on one booted cluster: quiet before a drill, read back after it."""

    def __init__(self, cluster: KubeCluster, prometheus: LocalPrometheus, timing: AlertTiming) -> None:
        self.cluster = cluster
        self.prometheus = prometheus
        self.timing = timing
        self.not_quiet: str | None = None
        """Why the last :meth:`quiet` gave up, reported by the next :meth:`observe`."""

    def quiet(self, timeout: float = QUIET_TIMEOUT_S) -> None:
        """Wait until every scrape target answers and no alert is pending or firing: a drill then
        reports only its own alerts. Not fatal: a cluster that stays loud is the next report's
        ``observation_error`` (the drill still counts its tasks)."""
        expected = {
            metrics.BROKER_JOB: len(self.cluster.pods_of(BROKERS)),
            metrics.BROKER_DETAILED_JOB: len(self.cluster.pods_of(BROKERS)),
            metrics.WORKER_JOB: len(self.cluster.pods_of(WORKERS)),
        }

        def settled() -> bool:
            up = self.prometheus.targets_up()
            every = all(up.get(job, (0, 0)) == (n, n) for job, n in expected.items())
            return every and not self.prometheus.alerts()

        try:
            poll(settled, timeout, f"every scrape target up ({expected}) and no alert", interval=0.5)
        except (PollTimeout, OSError, PrometheusError) as exc:
            self.not_quiet = f"before the drill: {exc}; alerts then: {_names(self.prometheus)}"

    def observe(self, since: float) -> Observed:
        """Wait (bounded) for the drill's alerts to resolve, then read its alerts and series back."""
        errors = [self.not_quiet] if self.not_quiet else []
        self.not_quiet = None
        try:
            poll(
                lambda: not any(a["state"] == "firing" for a in self.prometheus.alerts()),
                SETTLE_TIMEOUT_S,
                "the drill's alerts to resolve",
                interval=0.5,
            )
        except (PollTimeout, OSError, PrometheusError) as exc:
            errors.append(f"after the drill: {exc}")
        error = "; ".join(errors) or None
        # One more evaluation, so that a resolution just seen is in the ALERTS series too.
        time.sleep(2 * self.timing.evaluation_interval_s)
        until = time.time()
        step = self.timing.evaluation_interval_s
        start = since - 2 * step
        try:
            alerts = alert_spans(self.prometheus.query_range(FIRING, start, until, step), step)
            depth = _values(self.prometheus.query_range(QUEUE_DEPTH, start, until, step))
            brokers = _values(self.prometheus.query_range(BROKERS_UP, start, until, step))
        except (OSError, PrometheusError) as exc:
            return Observed(self.timing, ALERT_COMPRESSION, [], [], [], f"prometheus: {exc}")
        # Still firing at the end: no resolution to report for its last span.
        firing: set[tuple[tuple[str, str], ...]] = set()
        with contextlib.suppress(OSError, PrometheusError):
            firing = {_key(a["labels"]) for a in self.prometheus.alerts() if a["state"] == "firing"}
        last = {_key({"alertname": a.name, **a.labels}): a for a in alerts}
        alerts = [
            dataclasses.replace(a, resolved_at=None) if last.get(k) is a and k in firing else a
            for a in alerts
            for k in [_key({"alertname": a.name, **a.labels})]
        ]
        return Observed(self.timing, ALERT_COMPRESSION, alerts, depth, brokers, error)


@contextlib.contextmanager
def observing(cluster: KubeCluster, workdir: Path, timing: AlertTiming = DRILL_TIMING) -> Iterator[Observer]:
    """A Prometheus for ``cluster`` with the rules loaded, its targets following the pods; stopped on exit."""
    brokers = next(s.replicas for s in cluster.plan.statefulsets if f"StatefulSet/{s.name}" == BROKERS)
    with LocalPrometheus(
        workdir,
        scrape_jobs(),
        rule_groups(timing, broker_nodes=brokers),
        scrape_interval_s=timing.scrape_interval_s,
        evaluation_interval_s=timing.evaluation_interval_s,
    ) as prometheus:
        prometheus.follow(lambda job: pod_targets(cluster, job))
        observer = Observer(cluster, prometheus, timing)
        observer.quiet()
        yield observer
