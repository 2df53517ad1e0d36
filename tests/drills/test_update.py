"""Day 2 on the pod runner: a second plan applied to the running cluster under load, step by step as the
engine would (the steps file written as ``make plan-diff`` writes it, from ``plan.diff.diff_plans``).

Two drills on one booted cluster: a broker config change that rolls the StatefulSet one pod at a
time, highest ordinal first, then a worker rollout while long tasks run (each finishes within the
grace period on its old pod, or is redelivered). Both: nothing lost, never fewer Ready
brokers than a majority.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from drill.pod_scenarios import BROKERS, WORKERS
from drill.records import read
from drill.runner import DrillOptions, DrillResult, run_plan_drills
from drill.scenario import Scenario
from drill.update import UpdateSpec
from drill.workload import Workload
from plan import diff as plan_diff
from tests.conftest import Plan, run_plan

pytestmark = [pytest.mark.drill]
LONG_TASKS = 12
LONG_TASK_S = (20.0, 40.0)
"""Within the plan's soft time limit (50 s) and the worker pods' grace period (75 s)."""
BROKER_TASKS = 2000
BROKER_TASK_MS = 100
WORKERS_SET = "workerConcurrency=3"
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


def _ordered(result: DrillResult, prefix: str, reason: str) -> list[str]:
    return [pod for _, pod, why, _ in result.pod_events if why == reason and pod.startswith(prefix)]


def test_a_broker_config_change_then_a_worker_rollout_lose_nothing(
    plans: dict[str, Plan], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = plans["dev"].directory
    brokers = _plan(tmp_path_factory.mktemp("plan-brokers"), BROKER_SET)
    workers = _plan(tmp_path_factory.mktemp("plan-workers"), BROKER_SET, WORKERS_SET)
    steps = tmp_path_factory.mktemp("steps")
    # The runner's kind of directory (traversable by the rabbitmq user), kept to read the last drill's records.
    work = Path(tempfile.mkdtemp(prefix="ha-celery-update-"))
    work.chmod(0o755)
    options = [
        DrillOptions(
            scenario=Scenario.UPDATE,
            tasks=BROKER_TASKS,
            task_ms=BROKER_TASK_MS,
            plan=base,
            workdir=work,
            update=UpdateSpec(brokers, write_steps(base, brokers, steps / "brokers.json"), (BROKER_SET,)),
        ),
        DrillOptions(
            scenario=Scenario.UPDATE,
            tasks=LONG_TASKS,
            plan=brokers,
            workload=Workload.LONG,
            long_task_s=LONG_TASK_S,
            update=UpdateSpec(workers, write_steps(brokers, workers, steps / "workers.json"), (WORKERS_SET,)),
        ),
    ]
    try:
        config, rollout = run_plan_drills(options)
        executions = read(work / "results")[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
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

    # The worker rollout: three old pods deleted, no broker touched.
    assert rollout.update is not None
    applied = [a.step.object for a in rollout.update.applied if a.step.step != "same"]
    assert applied == ["Deployment/ha-celery/celery-worker"], applied
    assert rollout.update.min_ready_brokers == 3
    deleting = {pod: t for t, pod, why, _ in rollout.pod_events if why == "Deleting"}
    assert len([p for p in deleting if p.startswith(WORKERS.split("/", 1)[1] + "-")]) == 3, rollout.pod_events
    # Long tasks met the rollout: some ran to their end on a pod already being deleted (warm shutdown).
    on_old = [r for r in executions if r.host in deleting and r.finished_at > deleting[r.host]]
    assert on_old, f"no task finished on a worker pod after its deletion began: {deleting}"
