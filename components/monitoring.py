"""Monitoring: what scrapes the brokers and workers, the alert rules, and the Grafana dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from monitoring import dashboard
from monitoring.rules import DEFAULT_BROKER_NODES, PRODUCTION, AlertTiming
from monitoring.scrape import MetricsCollection, scrape_objects

DASHBOARD_CONFIGMAP = "ha-celery-dashboard"


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: pulumi.Input[str]
    """Namespace of every object (the brokers' and workers'): GMP's PodMonitoring and Rules act
    within their own namespace only."""
    collection: MetricsCollection
    """managed (GMP PodMonitoring + Rules; the cluster must have managed collection on),
    prometheus-operator (PodMonitor + PrometheusRule) or none."""
    broker_selector: Mapping[str, str]
    """Labels of the broker pods (their container port ``contract.metrics.BROKER_METRICS_PORT_NAME``)."""
    worker_selector: Mapping[str, str]
    """Labels of the worker pods (their container port ``contract.metrics.WORKER_METRICS_PORT_NAME``)."""
    broker_nodes: int = DEFAULT_BROKER_NODES
    """Broker replicas: the rules judge a majority of this many nodes."""
    operator_labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels on the prometheus-operator objects, for the operator's selectors (e.g.
    ``release: kube-prometheus-stack``); prometheus-operator only."""
    dashboard: bool = True
    """Ship the Grafana dashboard as a ConfigMap labelled for Grafana's sidecar."""
    timing: AlertTiming = PRODUCTION
    """Scrape interval and every rule's durations."""

    def __post_init__(self) -> None:
        if self.operator_labels and self.collection is not MetricsCollection.PROMETHEUS_OPERATOR:
            raise ValueError(
                f"operator_labels: got {dict(self.operator_labels)}; allowed: only with collection"
                f" {MetricsCollection.PROMETHEUS_OPERATOR.value!r} (got {self.collection.value!r})"
            )
        if self.broker_nodes < 1:
            raise ValueError(f"broker_nodes: got {self.broker_nodes}; allowed: >= 1")


class Monitoring(pulumi.ComponentResource):
    """Scrape objects for the broker's and the workers' metrics, the alert rules as a cluster object
    (GMP ``Rules`` or a ``PrometheusRule``) and the dashboard ConfigMap."""

    object_names: pulumi.Output[list[str]]
    """``Kind/name`` of every scrape and rule object."""
    dashboard_configmap: pulumi.Output[str] | None

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The caller's depends_on repeated on the scrape and rule objects, so the engine records
        # the edge there (a component's own depends_on only delays its registration): their
        # admission webhooks (GMP's gmp-operator, failurePolicy Fail; prometheus-operator's) run as
        # pods on the cluster's one node pool, which is brand new on a first `up`, and the provider
        # does not retry a webhook error.
        validated = pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts else None)
        labels = {"app.kubernetes.io/part-of": "ha-celery", "app.kubernetes.io/component": "monitoring"}
        objects = scrape_objects(
            args.collection,
            args.broker_selector,
            args.worker_selector,
            broker_nodes=args.broker_nodes,
            timing=args.timing,
        )
        for obj in objects:
            k8s.apiextensions.CustomResource(
                f"{name}-{obj.kind.lower()}-{obj.name}",
                api_version=obj.api_version,
                kind=obj.kind,
                metadata={
                    "name": obj.name,
                    "namespace": args.namespace,
                    "labels": {**labels, **args.operator_labels},
                },
                spec=obj.spec,
                opts=validated,
            )
        self.object_names = pulumi.Output.from_input([f"{obj.kind}/{obj.name}" for obj in objects])
        self.dashboard_configmap = None
        if args.dashboard:
            key, value = dashboard.CONFIGMAP_LABEL
            config_map = k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata={"name": DASHBOARD_CONFIGMAP, "namespace": args.namespace, "labels": {**labels, key: value}},
                data={dashboard.FILE_NAME: dashboard.render()},
                opts=child,
            )
            self.dashboard_configmap = config_map.metadata["name"]
        self.register_outputs({"object_names": self.object_names, "dashboard_configmap": self.dashboard_configmap})
