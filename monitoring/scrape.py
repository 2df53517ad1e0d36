"""The scrape and rule objects, as plain Kubernetes custom objects (``apiVersion``, ``kind``, name
and ``spec``; the component adds the namespace and labels).

Two conventions, one per :class:`MetricsCollection`:

- ``managed``: Google Cloud Managed Service for Prometheus (GMP), GKE's own. One ``PodMonitoring``
  per scrape job (GMP names the ``job`` label after it and its ``instance`` is ``pod:port-name``,
  so the broker's two endpoints on one port must be two objects), and a ``Rules`` object.
- ``prometheus-operator``: ``PodMonitor`` objects whose ``job`` is relabelled to the same names,
  and a ``PrometheusRule``. Pods rather than a Service: a broker that is not ready drops out of
  a Service's endpoints, and then its scrape would vanish instead of reading ``up == 0``.

Either way the jobs are ``contract.metrics``' and the rules select on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from contract import metrics
from monitoring.rules import PRODUCTION, AlertTiming, duration, rule_groups

GMP_API: Final = "monitoring.googleapis.com/v1"
OPERATOR_API: Final = "monitoring.coreos.com/v1"
RULES_NAME: Final = "ha-celery-alerts"


class MetricsCollection(StrEnum):
    """Who scrapes the cluster and evaluates the rules (stack setting ``metricsCollection``)."""

    MANAGED = "managed"
    """GMP managed collection, turned on in the GKE cluster: PodMonitoring + Rules."""
    PROMETHEUS_OPERATOR = "prometheus-operator"
    """A prometheus-operator the cluster already runs: PodMonitor + PrometheusRule."""
    NONE = "none"
    """No scrape or rule objects (the brokers and workers still expose their metrics)."""


@dataclass(frozen=True)
class CustomObject:
    """A custom resource without its namespace: what the component creates."""

    api_version: str
    kind: str
    name: str
    spec: dict[str, Any]


Pods = TypeVar("Pods")
"""What picks a job's pods: a label selector in the cloud, a workload in the local harness."""


@dataclass(frozen=True)
class Endpoint(Generic[Pods]):
    """One scrape job: the pods, their port (by name) and the path."""

    job: str
    selector: Pods
    port: str
    path: str
    params: Mapping[str, tuple[str, ...]] | None = None


def endpoints(broker_selector: Pods, worker_selector: Pods) -> tuple[Endpoint[Pods], ...]:
    """The three scrape jobs: broker node metrics, broker per-queue metrics, worker metrics; the
    cloud's scrape objects and the drills' Prometheus both read them."""
    return (
        Endpoint(metrics.BROKER_JOB, broker_selector, metrics.BROKER_METRICS_PORT_NAME, metrics.BROKER_METRICS_PATH),
        Endpoint(
            metrics.BROKER_DETAILED_JOB,
            broker_selector,
            metrics.BROKER_METRICS_PORT_NAME,
            metrics.BROKER_DETAILED_METRICS_PATH,
            {"family": metrics.BROKER_DETAILED_FAMILIES},
        ),
        Endpoint(metrics.WORKER_JOB, worker_selector, metrics.WORKER_METRICS_PORT_NAME, metrics.WORKER_METRICS_PATH),
    )


def _endpoint_spec(e: Endpoint[Mapping[str, str]], timing: AlertTiming) -> dict[str, Any]:
    spec: dict[str, Any] = {"port": e.port, "path": e.path, "interval": duration(timing.scrape_interval_s)}
    if e.params:
        spec["params"] = {k: list(v) for k, v in e.params.items()}
    return spec


def gmp_objects(
    broker_selector: Mapping[str, str],
    worker_selector: Mapping[str, str],
    *,
    broker_nodes: int,
    timing: AlertTiming = PRODUCTION,
) -> list[CustomObject]:
    """PodMonitoring per job and the Rules object (GMP's rule evaluator scopes every query to the
    object's own namespace and cluster)."""
    monitors = [
        CustomObject(
            GMP_API,
            "PodMonitoring",
            e.job,
            {"selector": {"matchLabels": dict(e.selector)}, "endpoints": [_endpoint_spec(e, timing)]},
        )
        for e in endpoints(broker_selector, worker_selector)
    ]
    rules = CustomObject(GMP_API, "Rules", RULES_NAME, {"groups": rule_groups(timing, broker_nodes=broker_nodes)})
    return [*monitors, rules]


def operator_objects(
    broker_selector: Mapping[str, str],
    worker_selector: Mapping[str, str],
    *,
    broker_nodes: int,
    timing: AlertTiming = PRODUCTION,
) -> list[CustomObject]:
    """PodMonitor per job (``job`` relabelled to the contract's name) and the PrometheusRule."""
    monitors = [
        CustomObject(
            OPERATOR_API,
            "PodMonitor",
            e.job,
            {
                "selector": {"matchLabels": dict(e.selector)},
                "podMetricsEndpoints": [
                    {
                        **_endpoint_spec(e, timing),
                        # The operator's default job is "<namespace>/<PodMonitor name>".
                        "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": e.job}],
                    }
                ],
            },
        )
        for e in endpoints(broker_selector, worker_selector)
    ]
    rules = CustomObject(
        OPERATOR_API, "PrometheusRule", RULES_NAME, {"groups": rule_groups(timing, broker_nodes=broker_nodes)}
    )
    return [*monitors, rules]


def scrape_objects(
    collection: MetricsCollection,
    broker_selector: Mapping[str, str],
    worker_selector: Mapping[str, str],
    *,
    broker_nodes: int,
    timing: AlertTiming = PRODUCTION,
) -> list[CustomObject]:
    """The objects of ``collection`` (none for ``MetricsCollection.NONE``)."""
    if collection is MetricsCollection.MANAGED:
        return gmp_objects(broker_selector, worker_selector, broker_nodes=broker_nodes, timing=timing)
    if collection is MetricsCollection.PROMETHEUS_OPERATOR:
        return operator_objects(broker_selector, worker_selector, broker_nodes=broker_nodes, timing=timing)
    return []
