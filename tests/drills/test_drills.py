"""The failure drills, for real: 3 RabbitMQ nodes, Celery workers, a fault mid-load, nothing lost.

Small task counts keep each drill under a minute; `make demo` runs the same code with 10,000.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drill.__main__ import main
from drill.profiles import Profile
from drill.runner import DrillOptions, DrillResult, run_drill
from drill.scenarios import Scenario
from harness.cluster import rabbitmq_installed

pytestmark = [
    pytest.mark.drill,
    pytest.mark.skipif(
        not rabbitmq_installed() and not os.environ.get("CI"), reason="rabbitmq-server is not installed (make setup)"
    ),
]
TASKS = 1000
TASK_MS = 40


def drill(scenario: Scenario, profile: Profile = Profile.HA) -> DrillResult:
    # workdir None: the runner's own directory under /tmp, traversable by the rabbitmq user
    # (pytest's tmp_path is not: pytest resets its base to 0700 whenever a session starts).
    return run_drill(DrillOptions(scenario=scenario, profile=profile, tasks=TASKS, task_ms=TASK_MS))


@pytest.mark.parametrize("scenario", list(Scenario), ids=[s.value for s in Scenario])
def test_no_task_lost(scenario: Scenario) -> None:
    if scenario.needs_netns and os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    result = drill(scenario)
    assert result.error is None, result.error
    assert result.events, f"{scenario}: no fault was injected"
    assert result.publish.ok, f"{scenario}: publisher failed: {result.publish.error}"
    assert (result.completed, result.lost) == (TASKS, 0), f"{scenario}: {result.to_json()}"
    assert result.failover_seconds is not None


def test_seed_config_loses_tasks_when_a_worker_dies() -> None:
    """The harness can see a loss: the seed's early acks drop the tasks a killed worker was running."""
    result = drill(Scenario.KILL_WORKER, Profile.SEED)
    assert result.error is None, result.error
    assert result.lost > 0, f"the seed config lost nothing: {result.to_json()}"
    assert result.completed + result.lost == TASKS


def test_cli_writes_report_and_timeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    status = main(["run", "--scenario", "kill-broker", "--tasks", "200", "--out", str(out)])
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
    ):
        assert key in report
    assert (report["scheduled"], report["completed"], report["lost"]) == (200, 200, 0)
    assert report["versions"]["rabbitmq"].startswith("3.10")
    png = (out / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG"), "timeline is not a PNG"
