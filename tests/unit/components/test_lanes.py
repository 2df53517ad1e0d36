"""Each worker lane in the plan: its own Deployment, PDB, queue, timing and consumer timeout."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract import lanes, timing, wire
from tests.conftest import Plan
from tests.unit.components.test_cloud import registered
from tests.unit.components.test_workers import deployment, worker


def env(plan: Plan, lane: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in worker(plan, lane)["env"]}


@pytest.mark.parametrize(
    ("lane", "queue", "soft", "hard"),
    [("default", "celery", 50, 60), ("long", "celery.long", 3540, 3600)],
)
def test_each_lane_consumes_its_own_queue_with_its_own_limits(
    plan: Plan, lane: str, queue: str, soft: int, hard: int
) -> None:
    command = worker(plan, lane)["command"]
    assert command == [*wire.WORKER_COMMAND, f"--queues={queue}"], "a lane's worker consumes its queue only"
    values = env(plan, lane)
    assert values["TASK_QUEUES"] == "celery,celery.long", "every client declares every lane's queue"
    assert (values["TASK_SOFT_TIME_LIMIT_S"], values["TASK_TIME_LIMIT_S"]) == (str(soft), str(hard))
    assert values["WORKER_PREFETCH_MULTIPLIER"] == "1"
    grace = deployment(plan, lane)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == hard + timing.SHUTDOWN_MARGIN_S, "a warm shutdown waits for the lane's longest task"


def test_the_scheduler_routes_like_the_workers(plans: dict[str, Plan]) -> None:
    [job] = plans["dev"].objects("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values["TASK_QUEUES"] == env(plans["dev"], "default")["TASK_QUEUES"]


def test_each_lane_has_its_own_disruption_budget(plan: Plan) -> None:
    budgets = {p["metadata"]["name"]: p["spec"] for p in plan.objects("PodDisruptionBudget")}
    for lane in ("default", "long"):
        selector = deployment(plan, lane)["spec"]["selector"]
        assert budgets[lanes.deployment_name(lane)] == {"maxUnavailable": 1, "selector": selector}


def test_each_lane_has_one_delivery_limit_in_its_policy_and_its_workers(plan: Plan) -> None:
    """The broker dead-letters past the lane's limit; its workers know the same number (app.failures)."""
    config_map = next(c for c in plan.objects("ConfigMap") if "definitions.json" in c["data"])
    policies = {p["name"]: p for p in json.loads(config_map["data"]["definitions.json"])["policies"]}
    want = {"dev": 5, "prod": wire.DELIVERY_LIMIT}[plan.stack]  # Pulumi.dev.yaml: deliveryLimit 5
    for lane, queue in (("default", "celery"), ("long", "celery.long")):
        assert policies[f"lane-{queue}"]["definition"]["delivery-limit"] == want
        assert env(plan, lane)["WORKER_DELIVERY_LIMIT"] == str(want)


def test_each_lanes_queue_has_its_consumer_timeout_policy(plan: Plan) -> None:
    config_map = next(c for c in plan.objects("ConfigMap") if "definitions.json" in c["data"])
    definitions: dict[str, Any] = json.loads(config_map["data"]["definitions.json"])
    policies = {p["name"]: p for p in definitions["policies"]}
    assert policies["lane-celery"]["definition"]["consumer-timeout"] == 1_800_000
    assert policies["lane-celery.long"]["definition"]["consumer-timeout"] == (2 * 3600 + 60) * 1000
    for queue in ("celery", "celery.long"):
        assert policies[f"lane-{queue}"]["definition"]["delayed-retry-type"] == "failed"
        assert any(q["name"] == queue for q in definitions["queues"]), f"{queue} is declared with the brokers"


def test_the_default_lane_keeps_the_names_it_had_before_lanes() -> None:
    """Day 2: an existing stack's `pulumi up` must update its Deployment, PDB and selector in place.
    A new logical name would delete and create them (every worker at once), a new selector would
    replace the Deployment (a selector is immutable)."""
    graph = registered()
    by_name = {name: resource for (_, name), resource in graph.items()}
    default = by_name["celery-deployment"]
    assert default.inputs["metadata"]["name"] == "celery-worker"
    assert default.inputs["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "celery-worker"}}
    assert by_name["celery-pdb"].inputs["metadata"]["name"] == "celery-worker"
    assert by_name["celery-long-deployment"].inputs["metadata"]["name"] == "celery-worker-long"


def test_metrics_are_scraped_from_every_lane(plan: Plan) -> None:
    pod_labels = [deployment(plan, lane)["spec"]["template"]["metadata"]["labels"] for lane in ("default", "long")]
    monitors = plan.objects("PodMonitoring") or plan.objects("PodMonitor")
    [selector] = [m["spec"]["selector"]["matchLabels"] for m in monitors if "worker" in m["metadata"]["name"]]
    for labels in pod_labels:
        assert selector.items() <= labels.items()
