"""The scale-in drill's report, the lane a drill loads, and what the runner counts for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

import drill.__main__ as cli
from drill.records import Record
from drill.runner import _counted
from drill.scale import ScaleReport


def report(**fields: object) -> ScaleReport:
    return ScaleReport("Deployment/celery-worker-long", 1, 3615, **fields)  # type: ignore[arg-type]


def test_a_scale_in_is_ok_once_the_deleted_pod_left_within_its_grace_period() -> None:
    assert not report().ok, "no pod deleted: nothing shown"
    assert report(victim="p", deleting_at=100.0, gone_at=250.0).ok
    assert not report(victim="p", deleting_at=100.0, gone_at=100.0 + 3616).ok, "past the grace: SIGKILL"
    assert not report(victim="p", deleting_at=100.0, gone_at=101.0, error="boom").ok
    assert report(victim="p", deleting_at=100.0, gone_at=250.0).to_json(90.0) == {
        "owner": "Deployment/celery-worker-long",
        "replicas": 1,
        "grace_s": 3615,
        "victim": "p",
        "deleting_t": 10.0,
        "shutdown_s": 150.0,
        "finished_after_deletion": None,
        "ok": True,
        "error": None,
    }


def record(host: str, finished_at: float) -> Record:
    return Record(task_id=f"{host}-{finished_at}", key=0, redelivered=False, host=host, pid=1, finished_at=finished_at)


def test_the_runner_counts_the_tasks_the_deleted_pod_finished_during_its_warm_shutdown() -> None:
    executions = [record("p", 99.0), record("p", 101.0), record("p", 140.0), record("q", 120.0)]
    counted = _counted(report(victim="p", deleting_at=100.0, gone_at=150.0), executions)
    assert counted is not None
    assert counted.finished_after_deletion == 2
    assert _counted(None, executions) is None


@pytest.mark.parametrize(
    ("argv", "lane"),
    [
        ([], "default"),
        (["--workload", "long"], "long"),
        (["--workload", "long", "--lane", "default"], "default"),
        (["--lane", "long"], "long"),
    ],
)
def test_long_tasks_load_the_long_lane_unless_told(plan: Path, argv: list[str], lane: str) -> None:
    parser = cli._parser()
    (options,) = cli._options(parser, parser.parse_args(["run", "--plan", str(plan), *argv]), Console())
    assert options.lane == lane


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lane", "Long"], "--lane 'Long': 1-20 lower-case letters"),
        (["--config", "seed", "--lane", "long"], "the seed's 2018 setup has one queue"),
    ],
)
def test_a_bad_lane_is_refused(plan: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli._parser()
    with pytest.raises(SystemExit):
        cli._options(parser, parser.parse_args(["run", "--plan", str(plan), *argv]), Console())
    assert message in capsys.readouterr().err
