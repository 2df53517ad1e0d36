"""``python -m drill run`` without a cluster: which runner each choice of flags takes, where the
reports go, and the exit status (the runners replaced by fakes returning made-up results)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

import drill.__main__ as cli
from app.batch import PublishResult
from contract.timing import FROZEN_BROKER_HOLD_MAX_S
from drill.held import FreezeReport, WorkerHold
from drill.profiles import Profile
from drill.runner import DrillOptions, DrillResult
from drill.scenario import Scenario

T0 = 1_700_000_000.0


def made_up(options: DrillOptions, lost: int = 0) -> DrillResult:
    return DrillResult(
        options=options,
        scheduled=options.tasks,
        completed=options.tasks - lost,
        lost=lost,
        duplicates=0,
        publish=PublishResult(options.tasks, [str(i) for i in range(options.tasks)], 1.0),
        fault_at=T0 + 1,
        events=[(T0 + 1, "fault")],
        finished_at=[T0 + 0.5 + i / 100 for i in range(options.tasks - lost)],
        started_at=T0,
        versions={"rabbitmq": "4.3"},
        failover_seconds=0.5,
        max_gap_seconds=0.6,
        throughput_per_s=100.0,
    )


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Scenario]]:
    """Which runner got which scenarios."""
    calls: dict[str, list[Scenario]] = {"run_drill": [], "run_plan_drills": []}

    def run_drill(options: DrillOptions, console: Console | None = None) -> DrillResult:
        del console
        calls["run_drill"].append(options.scenario)
        return made_up(options, lost=1 if options.scenario is Scenario.KILL_WORKER else 0)

    def run_plan_drills(options: Sequence[DrillOptions], console: Console | None = None) -> list[DrillResult]:
        del console
        calls["run_plan_drills"] += [o.scenario for o in options]
        return [made_up(o) for o in options]

    monkeypatch.setattr(cli, "run_drill", run_drill)
    monkeypatch.setattr(cli, "run_plan_drills", run_plan_drills)
    return calls


def stub_timeline(result: DrillResult, path: Path) -> Path:
    """The picture itself is the single-scenario test's (matplotlib takes a second apiece)."""
    del result
    path.write_bytes(b"png")
    return path


def test_one_scenario_writes_its_report_and_timeline_in_out(
    tmp_path: Path, plan: Path, ran: dict[str, list[Scenario]]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", "--tasks", "50", "--plan", str(plan), "--out", str(out)]) == 0
    assert ran == {"run_drill": [Scenario.KILL_BROKER], "run_plan_drills": []}
    report = json.loads((out / "report.json").read_text())
    assert (report["scenario"], report["scheduled"], report["lost"]) == ("kill-broker", 50, 0)
    assert (out / "timeline.png").read_bytes().startswith(b"\x89PNG")


def test_all_on_the_plan_boots_once_runs_partition_node_once_and_writes_a_folder_each(
    tmp_path: Path, plan: Path, ran: dict[str, list[Scenario]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "timeline", stub_timeline)
    out = tmp_path / "out"
    assert cli.main(["run", "--scenario", "all", "--tasks", "20", "--plan", str(plan), "--out", str(out)]) == 0
    # update needs a second plan (UPDATE=): never part of all.
    expected = [s for s in Scenario if s not in (Scenario.PARTITION_BROKER, Scenario.UPDATE)]
    assert ran == {"run_drill": [], "run_plan_drills": expected}
    combined = json.loads((out / "report.json").read_text())
    assert [r["scenario"] for r in combined] == [s.value for s in expected]
    for scenario in expected:
        assert (out / scenario.value / "report.json").is_file()
        assert (out / scenario.value / "timeline.png").is_file()


def test_all_on_the_seed_runs_each_scenario_it_can_on_its_own_cluster(
    tmp_path: Path, ran: dict[str, list[Scenario]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "timeline", stub_timeline)
    out = tmp_path / "out"
    status = cli.main(["run", "--config", "seed", "--scenario", "all", "--tasks", "10", "--out", str(out)])
    assert status == 1, "kill-worker lost a task"
    assert ran["run_drill"] == [s for s in Scenario if not s.needs_pod_runner]
    assert Scenario.PARTITION_BROKER in ran["run_drill"], "the seed's own partition scenario"
    assert ran["run_plan_drills"] == []
    assert json.loads((out / "kill-worker" / "report.json").read_text())["lost"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "0"], "--tasks must be >= 1, got 0"),
        (["--concurrency", "0"], "--concurrency must be >= 1, got 0"),
        (["--task-ms", "-1"], "--task-ms must be >= 0, got -1"),
        (["--config", "seed", "--workload", "eta"], "--workload eta needs --config ha"),
        (["--config", "seed", "--scenario", "drain-node"], "--scenario drain-node needs --config ha"),
        (["--plan", "/nonexistent"], "--plan /nonexistent: no plan there"),
    ],
)
def test_bad_flags_are_refused_before_anything_boots(
    argv: list[str], message: str, ran: dict[str, list[Scenario]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert ran == {"run_drill": [], "run_plan_drills": []}


def test_the_default_options_are_the_documented_ones(plan: Path, ran: dict[str, list[Scenario]]) -> None:
    del ran
    parser = cli._parser()
    (options,) = cli._options(parser, parser.parse_args(["run", "--plan", str(plan)]), Console())
    assert options == DrillOptions(Scenario.KILL_BROKER, Profile.HA, plan=plan)


def test_a_worker_held_by_a_frozen_node_fails_the_run_with_nothing_lost(
    tmp_path: Path, plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo SCENARIO=freeze-broker`` exits 1 when a worker stayed off a healthy broker too long."""
    held = WorkerHold("celery-worker-0", on_frozen_node=True, held_s=FROZEN_BROKER_HOLD_MAX_S + 1.0, left=True)

    def run_drill(options: DrillOptions, console: Console | None = None) -> DrillResult:
        del console
        result = made_up(options)
        result.freeze = FreezeReport("rabbitmq-0", "leader", 60.0, holds=[held], not_ready_after_s=31.0)
        return result

    monkeypatch.setattr(cli, "run_drill", run_drill)
    monkeypatch.setattr(cli, "timeline", stub_timeline)
    out = tmp_path / "out"
    argv = ["run", "--scenario", "freeze-broker", "--tasks", "20", "--plan", str(plan), "--out", str(out)]
    assert cli.main(argv) == 1
    report = json.loads((out / "report.json").read_text())
    assert (report["lost"], report["freeze"]["ok"]) == (0, False)
    assert report["freeze"]["workers"][0]["held_s"] == FROZEN_BROKER_HOLD_MAX_S + 1.0
