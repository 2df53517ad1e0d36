"""The failure drills, for real: the plan's RabbitMQ 4.3 StatefulSet and worker Deployment booted
by the pod runner, a fault mid-load, nothing lost; and the seed's 2018 setup on 3.10 beside it.

Small task counts keep each drill short; `make demo` runs the same code with 10,000.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drill.__main__ import main
from drill.observe import ALERT_COMPRESSION
from drill.pod_scenarios import WORKERS
from drill.profiles import Profile
from drill.runner import DrillOptions, DrillResult, run_drill, run_plan_drills
from drill.scenarios import Scenario
from drill.workload import Workload, published_before_workers
from monitoring.rules import BROKER_NODE_DOWN
from tests.conftest import Plan

pytestmark = [pytest.mark.drill]
TASKS = 1000
TASK_MS = 40


def drill(scenario: Scenario, plan: Path, profile: Profile = Profile.HA) -> DrillResult:
    # workdir None: the runner's own directory under /tmp, traversable by the rabbitmq user
    # (pytest's tmp_path is not: pytest resets its base to 0700 whenever a session starts).
    return run_drill(DrillOptions(scenario=scenario, profile=profile, tasks=TASKS, task_ms=TASK_MS, plan=plan))


def assert_nothing_lost(result: DrillResult, scenario: Scenario) -> None:
    assert result.error is None, result.error
    assert result.events, f"{scenario}: no fault was injected"
    assert result.publish.ok, f"{scenario}: publisher failed: {result.publish.error}"
    assert (result.completed, result.lost) == (TASKS, 0), f"{scenario}: {result.to_json()}"
    assert result.failover_seconds is not None


# partition-broker is partition-node's older name on the pod runner: one run covers both; the
# baseline runs on the shared cluster of the multi-scenario test below; update: tests/drills/test_update.py.
PLAN_SCENARIOS = [s for s in Scenario if s not in (Scenario.PARTITION_BROKER, Scenario.BASELINE) and not s.needs_update]


@pytest.mark.parametrize("scenario", PLAN_SCENARIOS, ids=[s.value for s in PLAN_SCENARIOS])
def test_no_task_lost_on_the_dev_plan(scenario: Scenario, plans: dict[str, Plan]) -> None:
    result = drill(scenario, plans["dev"].directory)
    assert_nothing_lost(result, scenario)
    assert str(result.versions["rabbitmq"]).startswith("4.3."), result.versions
    assert any(d.obj == "image" for d in result.deltas), "the report must say which local image ran the plan's"


ETA_TASKS = 300


def test_eta_tasks_published_before_any_worker_run_on_time_through_a_broker_kill(plans: dict[str, Plan]) -> None:
    """``WORKLOAD=eta``: countdowns of 0.3-30 s through native delayed delivery on the dev plan, the
    first tenth published while the worker Deployment has never had a pod, the queue leader's broker
    killed mid-load; every task runs, none before its ETA."""
    options = DrillOptions(
        scenario=Scenario.KILL_BROKER,
        tasks=ETA_TASKS,
        task_ms=TASK_MS,
        plan=plans["dev"].directory,
        workload=Workload.ETA,
    )
    result = run_drill(options)
    report = result.to_json()
    assert result.error is None, result.error
    assert result.events, "no fault was injected"
    assert result.publish.ok, f"publisher failed: {result.publish.error}"
    assert (result.completed, result.lost, result.early) == (ETA_TASKS, 0, 0), report
    assert str(result.versions["rabbitmq"]).startswith("4.3."), result.versions
    # Measured, not assumed: no worker pod existed before or after the first part was confirmed,
    # and none had ever existed on this cluster.
    assert result.published_before_workers == published_before_workers(ETA_TASKS) > 0, report
    assert result.workers_before == 0, report
    scaled_up = next(t for t, label in result.workload_events if "starting the workers" in label)
    worker_pod = WORKERS.split("/", 1)[1] + "-"
    worker_events = [(t, pod, reason) for t, pod, reason, _ in result.pod_events if pod.startswith(worker_pod)]
    assert worker_events, "the workers' pods were never seen starting"
    assert min(t for t, _, _ in worker_events) >= scaled_up, worker_events[:3]
    assert result.late_seconds is not None, report
    assert result.late_seconds[1] >= 0, report
    assert (report["workload"], report["early"]) == ("eta", 0)


def test_drain_node_on_the_prod_plan_keeps_the_broker_pending_until_uncordon(plans: dict[str, Plan]) -> None:
    """Prod's objects: required one-broker-per-node anti-affinity, three zones, zonal disks."""
    result = drill(Scenario.DRAIN_NODE, plans["prod"].directory)
    assert_nothing_lost(result, Scenario.DRAIN_NODE)
    assert result.to_json()["stack"] == plans["prod"].directory.name
    labels = [label for _, label in result.events]
    assert any("Pending" in label for label in labels), f"the evicted broker had nowhere to go: {labels}"


def test_seed_config_loses_tasks_when_a_worker_dies() -> None:
    """The harness can see a loss: the seed's early acks drop the tasks a killed worker was running."""
    result = drill(Scenario.KILL_WORKER, Path("unused"), Profile.SEED)
    assert result.error is None, result.error
    assert result.lost > 0, f"the seed config lost nothing: {result.to_json()}"
    assert result.completed + result.lost == TASKS


def test_cli_writes_report_and_timeline(tmp_path: Path, plans: dict[str, Plan]) -> None:
    out = tmp_path / "demo"
    argv = [
        "run",
        "--scenario",
        "kill-broker",
        "--tasks",
        "200",
        "--out",
        str(out),
        "--plan",
        str(plans["dev"].directory),
    ]
    status = main(argv)
    report = json.loads((out / "report.json").read_text())
    assert status == 0, report
    for key in (
        "scenario",
        "scheduled",
        "completed",
        "lost",
        "duplicates",
        "failover_seconds",
        "throughput_per_s",
        "versions",
        "rabbitmq_version",
        "plan",
        "stack",
        "deltas",
        "alerts",
        "alert_timing",
    ):
        assert key in report
    assert (report["scheduled"], report["completed"], report["lost"]) == (200, 200, 0)
    assert report["rabbitmq_version"].startswith("4.3."), report["rabbitmq_version"]
    assert report["plan"] == str(plans["dev"].directory)
    assert report["deltas"], "a plan booted locally always differs somewhere; the report must say where"
    png = (out / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG"), "timeline is not a PNG"


def test_scenarios_in_turn_on_one_cluster_count_each_drill_on_its_own_and_see_their_alerts(
    plans: dict[str, Plan],
) -> None:
    """SCENARIO=all boots the plan once: between drills the results are emptied, not replaced (the
    worker pods bind-mount the directory), and nothing from one drill may count for the next.

    The cluster's Prometheus (the alert rules at the drills' compressed timing) stays quiet through
    a clean run, and sees the queue leader's broker killed: node-down fires, then resolves."""
    scenarios = [Scenario.BASELINE, Scenario.KILL_WORKER, Scenario.KILL_BROKER]
    options = [DrillOptions(scenario=s, tasks=300, task_ms=TASK_MS, plan=plans["dev"].directory) for s in scenarios]
    results = run_plan_drills(options)
    assert [r.options.scenario for r in results] == scenarios
    for result in results:
        assert result.error is None, result.error
        assert (result.completed, result.lost) == (300, 0), result.to_json()
        assert result.observed is not None, "the plan-booted cluster runs a Prometheus"
        assert result.observed.error is None, result.observed.error
        assert result.observed.brokers_up, "no broker series from Prometheus"
    baseline, _, kill_broker = (r.to_json() for r in results)
    assert baseline["alerts"] == [], baseline["alerts"]
    assert baseline["alert_timing"]["compressed"] == ALERT_COMPRESSION
    down = [a for a in kill_broker["alerts"] if a["name"] == BROKER_NODE_DOWN]
    assert down, f"{BROKER_NODE_DOWN} did not fire: {kill_broker['alerts']}"
    fault_at = kill_broker["events"][0]["t"]
    for span in down:
        assert span["resolved_at"] is not None, f"still firing after the drill: {span}"
        assert fault_at < span["fired_at"] < span["resolved_at"], (fault_at, span)
    # The Prometheus saw the killed node: fewer than three brokers answered at some point.
    observed = results[2].observed
    assert observed is not None
    assert min(v for _, v in observed.brokers_up) < 3, observed.brokers_up
