"""Monitoring in each stack's plan: GMP scrape objects and rules (default), the prometheus-operator
variant, managed collection on the cluster, the dashboard ConfigMap, and the settings' errors.

Custom resources have no offline schema in kubernetes-validate: the fields set here are asserted,
and their shape was checked once against GMP's CRDs (see the report of issue 15)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, Final

import pytest
import yaml

import settings
from contract import metrics
from monitoring import dashboard
from monitoring.rules import PRODUCTION, duration, rule_groups
from monitoring.scrape import GMP_API, OPERATOR_API, RULES_NAME, MetricsCollection
from tests.conftest import Plan
from tests.unit.components.test_cloud import one, registered
from tests.unit.settings.test_settings import DEV

JOBS = (metrics.BROKER_JOB, metrics.BROKER_DETAILED_JOB, metrics.WORKER_JOB)
CLUSTER = "gcp:container/cluster:Cluster"


def _pod_template_labels(plan: Plan, kind: str) -> dict[str, str]:
    labels: dict[str, str] = plan.object(kind)["spec"]["template"]["metadata"]["labels"]
    return labels


def _by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects}


def _broker_nodes(plan: Plan) -> int:
    replicas: int = plan.object("StatefulSet")["spec"]["replicas"]
    return replicas


def test_pod_monitorings_select_the_pods_by_port_name(plan: Plan) -> None:
    monitors = _by_name(plan.objects("PodMonitoring"))
    assert sorted(monitors) == sorted(JOBS), f"{plan.stack}: one PodMonitoring per scrape job"
    brokers = _pod_template_labels(plan, "StatefulSet")
    # Every lane's pods: the worker job selects labels they all carry.
    lanes = [d["spec"]["template"]["metadata"]["labels"] for d in plan.objects("Deployment")]
    assert len(lanes) == 2, "dev and prod: the default and the long lane"
    workers = {k: v for k, v in lanes[0].items() if all(labels.get(k) == v for labels in lanes)}
    broker_ports = {
        p["name"]
        for c in plan.object("StatefulSet")["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    for job, monitor in monitors.items():
        assert monitor["apiVersion"] == GMP_API
        assert monitor["metadata"]["namespace"] == "ha-celery"
        selected = brokers if job != metrics.WORKER_JOB else workers
        match = monitor["spec"]["selector"]["matchLabels"]
        assert match.items() <= selected.items(), f"{plan.stack}: {job} selects {match}, pods have {selected}"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["interval"] == duration(PRODUCTION.scrape_interval_s)
        if job == metrics.WORKER_JOB:
            assert endpoint["port"] == metrics.WORKER_METRICS_PORT_NAME
            assert endpoint["path"] == metrics.WORKER_METRICS_PATH
        else:
            assert endpoint["port"] == metrics.BROKER_METRICS_PORT_NAME
            assert endpoint["port"] in broker_ports, f"{plan.stack}: the broker container has no port {endpoint}"
    detailed = monitors[metrics.BROKER_DETAILED_JOB]["spec"]["endpoints"][0]
    assert detailed["path"] == metrics.BROKER_DETAILED_METRICS_PATH
    assert detailed["params"] == {"family": list(metrics.BROKER_DETAILED_FAMILIES)}
    assert "params" not in monitors[metrics.BROKER_JOB]["spec"]["endpoints"][0]


def test_rules_object_is_the_tested_rule_file(plan: Plan) -> None:
    """The plan ships exactly what tests/integration/test_alert_rules.py runs through promtool."""
    rules = plan.object("Rules")
    assert rules["apiVersion"] == GMP_API
    assert rules["metadata"]["name"] == RULES_NAME
    assert rules["metadata"]["namespace"] == "ha-celery"
    assert rules["spec"]["groups"] == rule_groups(PRODUCTION, broker_nodes=_broker_nodes(plan))


def test_managed_collection_is_on_in_the_cluster(plan: Plan) -> None:
    cluster = plan.one(CLUSTER)["inputs"]
    assert cluster["monitoringConfig"]["managedPrometheus"]["enabled"] is True
    graph = registered(plan.stack)
    roles = {r.inputs["role"] for r in graph.values() if r.type == "gcp:projects/iAMMember:IAMMember"}
    assert "roles/monitoring.viewer" in roles, "the managed rule evaluator reads as the node service account"
    services = {r.inputs["service"] for r in graph.values() if r.type == "gcp:projects/service:Service"}
    assert "monitoring.googleapis.com" in services


def test_monitoring_is_one_component(plan: Plan) -> None:
    graph = registered(plan.stack)
    component = one(graph, "ha-celery:index:Monitoring")
    children = [r for r in graph.values() if r.parent == (component.type, component.name)]
    kinds = sorted(r.inputs.get("kind", r.type) for r in children)
    assert kinds == sorted(["PodMonitoring"] * 3 + ["Rules", "ConfigMap"])


def test_dashboard_configmap_is_labelled_for_the_sidecar(plan: Plan) -> None:
    maps = _by_name(plan.objects("ConfigMap"))
    config_map = maps["ha-celery-dashboard"]
    key, value = dashboard.CONFIGMAP_LABEL
    assert config_map["metadata"]["labels"][key] == value
    model = json.loads(config_map["data"][dashboard.FILE_NAME])
    assert model["uid"] == dashboard.UID
    assert model == dashboard.build()
    assert len(dashboard.queries(model)) >= 20


@pytest.fixture(scope="module")
def operator_plan(plan_runner: Callable[..., CompletedProcess[str]]) -> Plan:
    done = plan_runner(
        "dev",
        "metricsCollection=prometheus-operator",
        'prometheusOperatorLabels=["release=kube-prometheus-stack"]',
        "prometheusNamespace=monitoring",
    )
    assert done.returncode == 0, done.stderr
    directory = Path(done.stdout.split("-> ")[-1].strip())
    return Plan("dev", directory, json.loads((directory / "resources.json").read_text()))


def test_operator_variant_has_pod_monitors_with_the_same_jobs(operator_plan: Plan) -> None:
    assert not operator_plan.objects("PodMonitoring")
    assert not operator_plan.objects("Rules")
    monitors = _by_name(operator_plan.objects("PodMonitor"))
    assert sorted(monitors) == sorted(JOBS)
    for job, monitor in monitors.items():
        assert monitor["apiVersion"] == OPERATOR_API
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        # The operator would name the job "ha-celery/<name>"; the rules select on the contract's.
        assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": job}]
    rule = operator_plan.object("PrometheusRule")
    assert rule["apiVersion"] == OPERATOR_API
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == rule_groups(PRODUCTION, broker_nodes=_broker_nodes(operator_plan))
    cluster = operator_plan.one(CLUSTER)["inputs"]
    assert cluster["monitoringConfig"]["managedPrometheus"]["enabled"] is False


def test_none_variant_has_no_scrape_objects(plan_runner: Callable[..., CompletedProcess[str]]) -> None:
    done = plan_runner("dev", "metricsCollection=none", "grafanaDashboard=false")
    assert done.returncode == 0, done.stderr
    directory = Path(done.stdout.split("-> ")[-1].strip())
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (directory / "kubernetes").glob("*.yaml")}
    assert not kinds & {"PodMonitoring", "Rules", "PodMonitor", "PrometheusRule"}
    assert not any("dashboard" in p.name for p in (directory / "kubernetes").glob("*.yaml"))


def test_settings_default_to_managed_collection() -> None:
    s = settings.parse("test", DEV, "my-project-1")
    assert s.monitoring == settings.MonitoringSettings(MetricsCollection.MANAGED, (), True)


OPERATOR_NS: Final = {"prometheusNamespace": "monitoring"}
"""The operator's Prometheus must be named: the NetworkPolicies admit scrapes from that namespace only."""


@pytest.mark.parametrize(
    ("raw", "named", "allowed"),
    [
        ({"metricsCollection": "gmp"}, "ha-celery:metricsCollection", "managed | prometheus-operator | none"),
        (
            {"prometheusOperatorLabels": '["release=kps"]'},
            "ha-celery:prometheusOperatorLabels",
            "empty unless ha-celery:metricsCollection is prometheus-operator",
        ),
        (
            {"metricsCollection": "prometheus-operator", "prometheusOperatorLabels": '["release"]', **OPERATOR_NS},
            "ha-celery:prometheusOperatorLabels",
            "key=value",
        ),
        (
            {"metricsCollection": "prometheus-operator", "prometheusOperatorLabels": '["release=a b"]', **OPERATOR_NS},
            "ha-celery:prometheusOperatorLabels",
            "key=value",
        ),
        (
            {"metricsCollection": "prometheus-operator"},
            "ha-celery:prometheusNamespace",
            "the namespace the operator's Prometheus runs in",
        ),
    ],
)
def test_bad_monitoring_settings_are_named(raw: dict[str, str], named: str, allowed: str) -> None:
    with pytest.raises(settings.SettingsError) as error:
        settings.parse("test", {**DEV, **raw}, "my-project-1")
    (problem,) = error.value.problems
    assert problem.startswith(f"{named}: got ")
    assert allowed in problem


def test_operator_labels_parse() -> None:
    s = settings.parse(
        "test",
        {
            **DEV,
            "metricsCollection": "prometheus-operator",
            "prometheusOperatorLabels": '["release=kps", "team=ops"]',
            **OPERATOR_NS,
        },
        "my-project-1",
    )
    assert s.monitoring.operator_labels == (("release", "kps"), ("team", "ops"))


def test_component_args_refuse_labels_nothing_carries() -> None:
    from components.monitoring import MonitoringArgs

    with pytest.raises(ValueError, match="operator_labels"):
        MonitoringArgs(
            namespace="ha-celery",
            collection=MetricsCollection.MANAGED,
            broker_selector={"a": "b"},
            worker_selector={"c": "d"},
            operator_labels={"release": "kps"},
        )
    with pytest.raises(ValueError, match="broker_nodes"):
        MonitoringArgs(
            namespace="ha-celery",
            collection=MetricsCollection.NONE,
            broker_selector={"a": "b"},
            worker_selector={"c": "d"},
            broker_nodes=0,
        )
