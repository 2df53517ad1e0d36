"""The failure drills, for real: the plan's RabbitMQ 4.3 StatefulSet and worker Deployment booted
by the pod runner, a fault mid-load, nothing lost; and the seed's 2018 setup on 3.10 beside it.

One dev-plan cluster runs every scenario it recovers from, in turn (``run_plan_drills``, as
``SCENARIO=all``: between two drills every pod Ready, the task queue empty, the Prometheus quiet),
booted and settled once; each test below asserts one drill's result, so a failure names its
scenario. The order matters:

* the ``eta`` drill opens it: it needs a cluster on which no worker pod has ever run, so the
  cluster boots with the worker Deployment at 0 and the other drills find the pods it started;
* baseline, kill-worker and kill-broker next: their alerts are asserted, before any longer fault;
* partition-node before kill-node: dev's one-broker-per-node anti-affinity is only preferred, and
  kill-node (like drain-node) leaves two brokers on one node (seen in a ``SCENARIO=all`` run):
  cutting that node's link would take the majority with it.

Elsewhere: drain-node on the prod plan shares prod's cluster with the TLS tests
(``test_prod_plan.py``); the app's own paths on the dev plan (``dev_plan/``) share a dev cluster
of their own (their dead-lettered tasks would set off alerts these drills assert, and the eta
drill needs a cluster no worker pod has run on); the seed's 3.10 nodes boot on their own (no plan; its target cannot be
reset between drills), run through the CLI as ``make demo CONFIG=seed`` runs them. Sizes: see
``tests/drills/conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drill.__main__ import main
from drill.observe import ALERT_COMPRESSION
from drill.pod_scenarios import WORKERS
from drill.runner import DrillOptions, DrillResult, run_plan_drills
from drill.scenario import Scenario
from drill.workload import Workload, published_before_workers
from monitoring.rules import BROKER_NODE_DOWN
from tests.conftest import Plan
from tests.drills.conftest import REPORT_KEYS, TASK_MS, TASKS, assert_nothing_lost

pytestmark = [pytest.mark.drill]
ETA_TASKS = 300
"""Countdowns of 1-30 s: the eta drill lasts as long as its longest countdown whatever its size."""
ETA = "eta"
"""The eta drill's key among the shared cluster's results (its fault is kill-broker)."""

SHARED = (
    Scenario.BASELINE,
    Scenario.KILL_WORKER,
    Scenario.KILL_BROKER,
    Scenario.FREEZE_BROKER,
    Scenario.RESTART_CLUSTER,
    Scenario.ROLLING_RESTART,
    Scenario.LOSE_DISK,
    Scenario.PARTITION_NODE,
    Scenario.KILL_NODE,
)
"""After the eta drill, in this order on the shared cluster (see the module docstring)."""
ON_PROD = (Scenario.DRAIN_NODE,)
"""Run on prod's cluster instead (test_prod_plan.py): prod's required one-broker-per-node
anti-affinity makes drain-node the stricter case (the evicted broker stays Pending until uncordon),
and one drain per ``make test`` is enough to prove the PDBs and the drain path."""
ALERTS_ASSERTED = (Scenario.BASELINE, Scenario.KILL_WORKER, Scenario.KILL_BROKER)
SHARED_TIMEOUT_S = 1800
"""The first test to ask for the shared cluster's results waits for all ten drills (~11 min)."""


@pytest.fixture(scope="module")
def shared(plans: dict[str, Plan]) -> dict[str, DrillResult]:
    """The eta drill and every drill of ``SHARED``, in turn on one dev-plan cluster, by scenario."""
    dev = plans["dev"].directory
    eta = DrillOptions(Scenario.KILL_BROKER, tasks=ETA_TASKS, task_ms=TASK_MS, plan=dev, workload=Workload.ETA)
    # workdir None: the runner's own directory under /tmp, traversable by the rabbitmq user
    # (pytest's tmp_path is not: pytest resets its base to 0700 whenever a session starts).
    options = [eta, *(DrillOptions(s, tasks=TASKS, task_ms=TASK_MS, plan=dev) for s in SHARED)]
    results = run_plan_drills(options)
    assert [r.options for r in results] == options
    return {ETA: results[0], **{r.options.scenario.value: r for r in results[1:]}}


def test_the_shared_cluster_runs_every_scenario_of_the_pod_runner() -> None:
    # partition-broker is partition-node's older name on the pod runner: one run covers both;
    # update needs a second plan: tests/drills/test_update.py; oom runs on the dev_plan package's
    # cluster (tests/drills/dev_plan/test_oom.py), where its dead-lettered task is purged after it.
    covered_elsewhere = {Scenario.PARTITION_BROKER, Scenario.OOM}
    others = (s for s in Scenario if s not in covered_elsewhere and not s.needs_update)
    assert sorted(SHARED + ON_PROD) == sorted(others)


@pytest.mark.timeout(SHARED_TIMEOUT_S)
@pytest.mark.parametrize("scenario", SHARED, ids=[s.value for s in SHARED])
def test_no_task_lost_on_the_dev_plan(scenario: Scenario, shared: dict[str, DrillResult]) -> None:
    result = shared[scenario.value]
    # Emptied between drills, not carried over: each counts exactly its own tasks.
    assert_nothing_lost(result, scenario)
    assert result.observed is not None, "the plan-booted cluster runs a Prometheus"


@pytest.mark.timeout(SHARED_TIMEOUT_S)
def test_eta_tasks_published_before_any_worker_run_on_time_through_a_broker_kill(
    shared: dict[str, DrillResult],
) -> None:
    """``WORKLOAD=eta``: countdowns of 0.3-30 s through native delayed delivery on the dev plan, the
    first tenth published while the worker Deployment has never had a pod, the queue leader's broker
    killed mid-load; every task runs, none before its ETA."""
    result = shared[ETA]
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


@pytest.mark.timeout(SHARED_TIMEOUT_S)
def test_the_prometheus_stays_quiet_through_a_clean_run_and_sees_the_broker_kill(
    shared: dict[str, DrillResult],
) -> None:
    """The cluster's Prometheus (the alert rules at the drills' compressed timing) stays quiet through
    the baseline, and sees the queue leader's broker killed: node-down fires, then resolves."""
    for scenario in ALERTS_ASSERTED:
        observed = shared[scenario.value].observed
        assert observed is not None, "the plan-booted cluster runs a Prometheus"
        assert observed.error is None, f"{scenario}: {observed.error}"
        assert observed.brokers_up, f"{scenario}: no broker series from Prometheus"
    baseline, kill_broker = (shared[s.value].to_json() for s in (Scenario.BASELINE, Scenario.KILL_BROKER))
    assert baseline["alerts"] == [], baseline["alerts"]
    assert baseline["alert_timing"]["compressed"] == ALERT_COMPRESSION
    down = [a for a in kill_broker["alerts"] if a["name"] == BROKER_NODE_DOWN]
    assert down, f"{BROKER_NODE_DOWN} did not fire: {kill_broker['alerts']}"
    fault_at = kill_broker["events"][0]["t"]
    for span in down:
        assert span["resolved_at"] is not None, f"still firing after the drill: {span}"
        assert fault_at < span["fired_at"] < span["resolved_at"], (fault_at, span)
    # The Prometheus saw the killed node: fewer than three brokers answered at some point.
    observed = shared[Scenario.KILL_BROKER.value].observed
    assert observed is not None
    assert min(v for _, v in observed.brokers_up) < 3, observed.brokers_up


def test_seed_config_loses_tasks_when_a_worker_dies(tmp_path: Path) -> None:
    """The harness can see a loss: the seed's early acks drop the tasks a killed worker was running.
    Run as ``make demo CONFIG=seed`` runs it: the CLI exits 1 and writes the report and the timeline."""
    out = tmp_path / "demo"
    argv = ["run", "--config", "seed", "--scenario", "kill-worker", "--tasks", str(TASKS), "--task-ms", str(TASK_MS)]
    status = main([*argv, "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert status == 1, f"the CLI must fail on a loss: {report}"
    for key in REPORT_KEYS:
        assert key in report
    assert report["error"] is None, report["error"]
    assert report["lost"] > 0, f"the seed config lost nothing: {report}"
    assert report["completed"] + report["lost"] == TASKS, report
    assert (report["config"], report["plan"]) == ("seed", None), report
    assert report["rabbitmq_version"].startswith("3.10."), report["rabbitmq_version"]
    png = (out / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG"), "timeline is not a PNG"
