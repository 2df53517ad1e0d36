"""The failure drills, for real: the plan's RabbitMQ 4.3 StatefulSet and worker Deployment booted
by the pod runner, a fault mid-load, nothing lost; and the seed's 2018 setup on 3.10 beside it.

One dev-plan cluster runs every scenario it recovers from, in turn (``run_plan_drills``, as
``SCENARIO=all``: between two drills every pod Ready, the task queue empty, the Prometheus quiet),
booted and settled once; each test below asserts one drill's result, so a failure names its
scenario. The order matters:

* the ``eta`` drill opens it: it needs a cluster on which no worker pod has ever run, so the
  cluster boots with the worker Deployment at 0 and the other drills find the pods it started;
* baseline, kill-worker and kill-broker next: their alerts are asserted, before any longer fault;
* partition-node and node-unreachable before delete-node and kill-node: dev's one-broker-per-node
  anti-affinity is only preferred, and delete-node and kill-node (like drain-node) leave two brokers
  on one node (seen in a ``SCENARIO=all`` run): cutting that node's link would take the majority
  with it. (The node drills themselves pick a node with one broker: ``drill.node_scenarios``.)
* the two day-2 updates close it: they leave the cluster on another plan.

Elsewhere: drain-node on the prod plan shares prod's cluster with the TLS tests
(``test_prod_plan.py``); the app's own paths on the dev plan (``dev_plan/``) share a dev cluster
of their own (their dead-lettered tasks would set off alerts these drills assert, and the eta
drill needs a cluster no worker pod has run on); the seed's 3.10 nodes boot on their own (no plan; its target cannot be
reset between drills), run through the CLI as ``make demo CONFIG=seed`` runs them. Sizes: see
``tests/drills/conftest.py``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from contract.lanes import LONG_LANE
from contract.timing import GKE_AUTO_REPAIR_S
from drill.__main__ import main
from drill.node_scenarios import NODE_COMPRESSION
from drill.observe import ALERT_COMPRESSION
from drill.pod_scenarios import BROKERS, LONG_WORKERS, WORKERS
from drill.records import read
from drill.runner import DrillOptions, DrillResult, run_plan_drills
from drill.scenario import Scenario
from drill.update import UpdateSpec
from drill.workload import Workload, published_before_workers
from harness.kube.nodes import NodeTiming
from harness.kube.workloads import named_for
from monitoring.rules import BROKER_NODE_DOWN
from plan import diff as plan_diff
from tests.conftest import ROOT, Plan, run_plan
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
    Scenario.LOSE_DISK,
    Scenario.PARTITION_NODE,
    Scenario.NODE_UNREACHABLE,
    Scenario.DELETE_NODE,
    Scenario.KILL_NODE,
    Scenario.SCALE_IN,
)
"""After the eta drill, in this order on the shared cluster (see the module docstring)."""
ON_PROD = (Scenario.DRAIN_NODE,)
"""Run on prod's cluster instead (test_prod_plan.py): prod's required one-broker-per-node
anti-affinity makes drain-node the stricter case (the evicted broker stays Pending until uncordon),
and one drain per ``make test`` is enough to prove the PDBs and the drain path."""
ALERTS_ASSERTED = (Scenario.BASELINE, Scenario.KILL_WORKER, Scenario.KILL_BROKER)
NODE_DRILLS = (Scenario.NODE_UNREACHABLE, Scenario.DELETE_NODE, Scenario.KILL_NODE)
SHARED_TIMEOUT_S = 1800
"""The first test to ask for the shared cluster's results waits for every drill (~11 min)."""
UPDATE_CONFIG = "update-config"
UPDATE_ROLLOUT = "update-rollout"
"""Day 2, last on the shared cluster (they leave it on another plan): a broker config change that rolls
the StatefulSet one pod at a time, highest ordinal first, then a worker rollout while long tasks run
(each finishes within the grace period on its old pod, or is redelivered), applied step by step as
the engine would (the steps file written as ``make plan-diff`` writes it, ``plan.diff.diff_plans``)."""
LONG_TASKS = 12
LONG_TASK_S = (20.0, 40.0)
"""On the long lane (``WORKLOAD=long``): 12 at once on its one dev pod (16 processes), each ending
well inside its grace period; short, to keep ``make test`` short."""
BROKER_TASKS = 2000
BROKER_TASK_MS = 100


def _long_lane_resized(concurrency: int) -> str:
    """dev's workerLanes with the long lane's concurrency changed, nothing else (a `pulumi config set`)."""
    lanes = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["ha-celery:workerLanes"]
    resized = [lane | {"concurrency": concurrency} if lane["name"] == LONG_LANE else lane for lane in lanes]
    return "workerLanes=" + json.dumps(resized)


WORKERS_SET = _long_lane_resized(12)
"""The long lane's pod template changes (dev's has 16 processes): its Deployment rolls while the long tasks run."""
BROKER_SET = "brokerMemoryMiB=1536"


def _plan(tmp: Path, *overrides: str) -> Path:
    done = run_plan("dev", tmp, *overrides)
    assert done.returncode == 0, done.stderr
    return tmp / "dev"


def write_steps(old_plan: Path, new_plan: Path, out: Path) -> Path:
    """plan-diff's steps from one built plan to the other, as ``make plan-diff`` writes steps.json."""
    steps = plan_diff.diff_plans(plan_diff.Plan.load(old_plan), plan_diff.Plan.load(new_plan))
    out.write_text(json.dumps([s.as_json() for s in steps], indent=2) + "\n")
    return out


def _updates(base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[DrillOptions]:
    brokers = _plan(tmp_path_factory.mktemp("plan-brokers"), BROKER_SET)
    workers = _plan(tmp_path_factory.mktemp("plan-workers"), BROKER_SET, WORKERS_SET)
    steps = tmp_path_factory.mktemp("steps")
    return [
        DrillOptions(
            scenario=Scenario.UPDATE,
            tasks=BROKER_TASKS,
            task_ms=BROKER_TASK_MS,
            plan=base,
            update=UpdateSpec(brokers, write_steps(base, brokers, steps / "brokers.json"), (BROKER_SET,)),
        ),
        DrillOptions(
            scenario=Scenario.UPDATE,
            tasks=LONG_TASKS,
            plan=brokers,
            workload=Workload.LONG,
            long_task_s=LONG_TASK_S,
            lane=LONG_LANE,
            update=UpdateSpec(workers, write_steps(brokers, workers, steps / "workers.json"), (WORKERS_SET,)),
        ),
    ]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """The shared cluster's directory, kept to read the last drill's records (the worker rollout's).
    Traversable by the rabbitmq user (pytest's tmp_path is not: pytest resets its base to 0700
    whenever a session starts)."""
    work = Path(tempfile.mkdtemp(prefix="ha-celery-drills-"))
    work.chmod(0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(plans: dict[str, Plan], workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DrillResult]:
    """The eta drill, every drill of ``SHARED``, then the two updates, in turn on one dev-plan cluster."""
    dev = plans["dev"].directory
    eta = DrillOptions(
        Scenario.KILL_BROKER, tasks=ETA_TASKS, task_ms=TASK_MS, plan=dev, workload=Workload.ETA, workdir=workdir
    )
    drills = [DrillOptions(s, tasks=TASKS, task_ms=TASK_MS, plan=dev) for s in SHARED]
    options = [eta, *drills, *_updates(dev, tmp_path_factory)]
    results = run_plan_drills(options)
    assert [r.options for r in results] == options
    return {
        ETA: results[0],
        **{r.options.scenario.value: r for r in results[1:-2]},
        UPDATE_CONFIG: results[-2],
        UPDATE_ROLLOUT: results[-1],
    }


def test_the_shared_cluster_runs_every_scenario_of_the_pod_runner() -> None:
    # partition-broker is partition-node's older name on the pod runner: one run covers both;
    # update (a second plan) closes the shared run; oom runs on the dev_plan package's cluster
    # (tests/drills/dev_plan/test_oom.py), where its dead-lettered task is purged after it.
    # rolling-restart (~150 s) proves nothing the broker config update does not: the same three
    # pods deleted one at a time, highest ordinal first, each through its preStop and back Ready
    # before the next, under load (test_a_broker_config_change_then_a_worker_rollout_lose_nothing
    # asserts that order and two brokers Ready throughout); SCENARIO=all still runs it.
    covered_elsewhere = {Scenario.PARTITION_BROKER, Scenario.OOM, Scenario.ROLLING_RESTART}
    others = (s for s in Scenario if s not in covered_elsewhere and not s.needs_update)
    assert sorted(SHARED + ON_PROD) == sorted(others)


@pytest.mark.timeout(SHARED_TIMEOUT_S)
@pytest.mark.parametrize("scenario", SHARED, ids=[s.value for s in SHARED])
def test_no_task_lost_on_the_dev_plan(scenario: Scenario, shared: dict[str, DrillResult]) -> None:
    result = shared[scenario.value]
    # Emptied between drills, not carried over: each counts exactly its own tasks.
    assert_nothing_lost(result, scenario)
    assert result.observed is not None, "the plan-booted cluster runs a Prometheus"
    if scenario is Scenario.SCALE_IN:
        # The default lane scaled 3 -> 4 -> 3 under load: the newest pod deleted, gone within its grace.
        assert result.scale is not None, "scale-in reports the pod it deleted"
        scale = result.scale.to_json(result.started_at)
        assert result.scale.ok, scale
        assert result.scale.victim is not None
        assert named_for(WORKERS, result.scale.victim), scale
        assert result.scale.finished_after_deletion is not None, scale
    if scenario is Scenario.FREEZE_BROKER:
        # The queue leader frozen (dev_plan's test freezes a follower for longer than the liveness
        # limit): every worker on a healthy node within the limit, the frozen pod not Ready.
        assert result.freeze is not None, "freeze-broker reports each worker"
        freeze = result.freeze.to_json(result.started_at)
        assert result.freeze.role == "leader", freeze
        assert result.freeze.ok, freeze
    assert not result.failed, result.to_json()


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
    worker_events = [(t, pod, reason) for t, pod, reason, _ in result.pod_events if named_for(WORKERS, pod)]
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


@pytest.mark.timeout(SHARED_TIMEOUT_S)
def test_a_dead_node_is_handled_as_kubernetes_does(shared: dict[str, DrillResult]) -> None:
    """kill-node: the node NotReady after its (compressed) grace, its workers evicted at their
    toleration and replaced, the broker held on it until auto-repair deletes the Node, never two
    copies of a broker alive; node-unreachable: the evicted workers killed by the kubelet once the
    node is back, the broker rejoined as it was; delete-node: its pods force-deleted by the pod GC."""
    for scenario in NODE_DRILLS:
        node = shared[scenario.value].to_json()["node"]
        assert node is not None, f"{scenario}: no node report"
        assert node["compression"] == NODE_COMPRESSION
        assert set(node["max_incarnations"].values()) == {1}, f"{scenario}: {node['max_incarnations']}"
    dead = shared[Scenario.KILL_NODE.value].to_json()
    node = dead["node"]
    timing = NodeTiming(factor=NODE_COMPRESSION)
    # The node's last status report precedes the drill's mark by up to a reconcile pass and the kills.
    assert node["not_ready_at"] - node["fault_at"] >= timing.grace - 0.5, node
    evicted = {e["pod"] for e in node["evictions"] if "taint manager" in e["why"]}
    assert any(p.startswith(WORKERS.split("/", 1)[1]) for p in evicted), node["evictions"]
    (held,) = node["held_s"].values()
    assert held >= timing.scaled(GKE_AUTO_REPAIR_S), node
    assert node["node_deleted_at"] - node["fault_at"] >= held - 0.01, node  # each rounded to 1 ms
    assert dead["time_to_full_worker_capacity_s"] is not None, node
    assert dead["time_to_full_worker_capacity_s"] < held, node
    cut = shared[Scenario.NODE_UNREACHABLE.value].to_json()["node"]
    assert cut["not_ready_at"] is not None, cut
    gone = shared[Scenario.DELETE_NODE.value].to_json()["node"]
    assert any("pod GC" in e["why"] for e in gone["evictions"]), gone["evictions"]


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


def _ordered(result: DrillResult, prefix: str, reason: str) -> list[str]:
    return [pod for _, pod, why, _ in result.pod_events if why == reason and pod.startswith(prefix)]


@pytest.mark.timeout(SHARED_TIMEOUT_S)
def test_a_broker_config_change_then_a_worker_rollout_lose_nothing(
    shared: dict[str, DrillResult], workdir: Path
) -> None:
    config, rollout = shared[UPDATE_CONFIG], shared[UPDATE_ROLLOUT]
    executions = read(workdir / "results")[0]
    for result, tasks in ((config, BROKER_TASKS), (rollout, LONG_TASKS)):
        report = result.to_json()
        assert result.error is None, result.error
        assert result.publish.ok, result.publish.error
        assert (result.completed, result.lost) == (tasks, 0), report
        assert result.update is not None, "the update scenario always reports its update"
        assert result.update.ok, report["update"]

    # The config change: the StatefulSet rolled highest ordinal first, one pod at a time.
    assert config.update is not None
    applied = [a.step.object for a in config.update.applied if a.step.step != "same"]
    assert applied == ["ConfigMap/ha-celery/rabbitmq-config", "StatefulSet/ha-celery/rabbitmq"], applied
    broker = BROKERS.split("/", 1)[1] + "-"
    assert _ordered(config, broker, "Deleting") == ["rabbitmq-2", "rabbitmq-1", "rabbitmq-0"]
    assert config.update.min_ready_brokers == 2, config.to_json()["update"]

    # The long lane's rollout: its one old pod deleted, nothing else touched (the default lane's
    # workers and the brokers stay).
    assert rollout.update is not None
    applied = [a.step.object for a in rollout.update.applied if a.step.step != "same"]
    assert applied == ["Deployment/ha-celery/celery-worker-long"], applied
    assert rollout.update.min_ready_brokers == 3
    deleting = {pod: t for t, pod, why, _ in rollout.pod_events if why == "Deleting"}
    assert len([p for p in deleting if named_for(LONG_WORKERS, p)]) == 1, rollout.pod_events
    assert not [p for p in deleting if named_for(WORKERS, p)], "the default lane must not roll"
    # Long tasks met the rollout: some ran to their end on a pod already being deleted (warm shutdown).
    on_old = [r for r in executions if r.host in deleting and r.finished_at > deleting[r.host]]
    assert on_old, f"no task finished on a worker pod after its deletion began: {deleting}"
