"""The drills' eta workload, offline: its countdowns, its publisher, and how an early start is counted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery

from app.batch import PublishPlan
from app.config import from_env
from app.factory import make_app
from drill import records, runner, tasks, workload
from drill.__main__ import main
from drill.runner import DrillOptions
from drill.scenario import Scenario
from drill.workload import Workload

HOSTS_ENV = {"BROKER_HOSTS": "rmq-0", "BROKER_USER": "celery", "BROKER_PASSWORD": "pw"}


def iso(epoch: float) -> str:
    """An ETA the way Celery writes it (ISO 8601, UTC, microseconds)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# ------------------------------------------------------------------------ countdowns ----


def test_countdowns_spread_over_one_to_thirty_seconds_with_a_few_sub_second_ones() -> None:
    countdowns = [workload.countdown(i) for i in range(1000)]
    assert countdowns == [workload.countdown(i) for i in range(1000)], "the spread must be deterministic"
    sub_second = [c for c in countdowns if c < 1]
    assert len(sub_second) == 10, "one task in a hundred"
    assert set(sub_second) == set(workload.SUB_SECOND)
    assert 0.3 in sub_second
    rest = [c for c in countdowns if c >= 1]
    assert min(rest) >= 1.0, min(rest)
    assert max(rest) < 30.0, max(rest)
    # Evenly spread: every 1-second bucket from 1 to 29 gets its share (990 / 29 ~ 34).
    buckets = {int(c) for c in rest}
    assert buckets == set(range(1, 30)), sorted(buckets)
    assert all(20 <= sum(1 for c in rest if int(c) == b) <= 50 for b in buckets)


def test_the_part_published_before_the_workers_is_spread_too_and_precedes_the_fault() -> None:
    for tasks_count in (1, 10, 300, 1000, 10_000):
        first = workload.published_before_workers(tasks_count)
        assert 1 <= first <= max(1, tasks_count // 10)
        if tasks_count >= 10:
            assert first < DrillOptions(Scenario.KILL_BROKER).fault_at * tasks_count
    early_ones = [workload.countdown(i) for i in range(workload.published_before_workers(300))]
    assert 0.3 in early_ones, "a sub-second countdown is published before any worker"
    assert min(c for c in early_ones if c >= 1) < 5, early_ones
    assert max(early_ones) > 25, early_ones


# ------------------------------------------------------------------------ publisher ----


@dataclass
class FakeApp:
    """Records ``send_task`` calls and whether a producer was held when the pause ran."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    held: int = 0
    held_during_pause: list[int] = field(default_factory=list)
    fail_at: int | None = None

    @contextlib.contextmanager
    def producer_or_acquire(self) -> Iterator[object]:
        self.held += 1
        try:
            yield object()
        finally:
            self.held -= 1

    def send_task(self, name: str, **options: Any) -> None:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise ConnectionError("broker gone")
        assert self.held, "published without a producer"
        self.sent.append({"name": name, **options})


def test_publish_delayed_sends_each_task_with_its_countdown_and_pauses_with_no_connection_held() -> None:
    app = FakeApp()
    progress: list[int] = []
    plan = tasks.record_plan(5, sleep_ms=7)
    result = workload.publish_delayed(
        cast(Celery, app),
        plan,
        progress.append,
        countdowns=lambda i: float(i + 1),
        pause_after=2,
        pause=lambda: app.held_during_pause.append(app.held),
    )
    assert result.ok, result.error
    assert result.confirmed == 5
    assert [s["countdown"] for s in app.sent] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s["args"] for s in app.sent] == [(i,) for i in range(5)], "the index is the record key"
    assert all(s["name"] == tasks.RECORD and s["kwargs"] == {"sleep_ms": 7} for s in app.sent)
    assert [s["task_id"] for s in app.sent] == list(result.task_ids)
    assert [s["task_id"] for s in app.sent] == [plan.task_id(i) for i in range(5)], "the plan's own ids"
    assert all("confirm_timeout" not in s for s in app.sent), "the app's own bound applies, as in user code"
    assert progress == [1, 2, 3, 4, 5]
    assert app.held_during_pause == [0], "the pause ran once, after 2 publishes, with no producer held"


def test_publish_delayed_reports_the_first_failure_with_what_was_confirmed() -> None:
    app = FakeApp(fail_at=3)
    result = workload.publish_delayed(cast(Celery, app), PublishPlan(tasks.RECORD, 5), lambda _n: None)
    assert result.confirmed == 3
    assert result.error == "ConnectionError: broker gone"


# ------------------------------------------------------------------------ early starts ----


def record(task_id: str, *, started_at: float | None, eta: str | None) -> records.Record:
    return records.Record(task_id, 0, False, "h", 1, (started_at or 0) + 0.04, started_at, eta)


def test_a_start_before_the_eta_is_early_by_any_margin_above_the_etas_microsecond() -> None:
    eta = 1_800_000_000.5
    assert record("a", started_at=eta - 0.001, eta=iso(eta)).early, "1 ms early is early"
    assert record("a", started_at=eta - 2e-6, eta=iso(eta)).early, "2 us early is early"
    assert not record("a", started_at=eta, eta=iso(eta)).early
    assert not record("a", started_at=eta - 5e-7, eta=iso(eta)).early, "below the ETA's resolution"
    assert not record("a", started_at=eta + 3, eta=iso(eta)).early
    assert not record("a", started_at=eta, eta=None).early, "a task due at once is never early"
    assert not record("a", started_at=None, eta=iso(eta)).early
    assert record("a", started_at=eta + 0.25, eta=iso(eta)).early_by == pytest.approx(-0.25, abs=1e-6)
    # Naive ISO strings are UTC (the app sets enable_utc).
    naive = datetime.fromtimestamp(eta, UTC).replace(tzinfo=None).isoformat()
    assert record("a", started_at=eta - 0.01, eta=naive).early


def test_tally_counts_early_tasks_once_and_an_unparseable_eta_as_malformed(tmp_path: Path) -> None:
    eta = 1_800_000_000.0
    lines = [
        records.make_record("early", 0, redelivered=False, started_at=eta - 0.5, eta=iso(eta)),
        records.make_record("early", 0, redelivered=True, started_at=eta - 0.2, eta=iso(eta)),
        records.make_record("on-time", 1, redelivered=False, started_at=eta + 0.01, eta=iso(eta)),
        records.make_record("plain", 2, redelivered=False, started_at=eta - 9, eta=None),
        records.make_record("bad", 3, redelivered=False, started_at=eta, eta="tomorrow"),
    ]
    for line in lines:
        records.append(tmp_path, line)
    tally = records.tally(tmp_path)
    assert (tally.early, tally.early_tasks) == (1, frozenset({"early"}))
    assert (tally.executions, tally.duplicates, tally.malformed) == (4, 1, 1)
    read, _ = records.read(tmp_path)
    # Start minus ETA of each task's first start ("early": -0.5, "on-time": +0.01): median, max.
    assert runner.late_seconds(read) == pytest.approx((-0.245, 0.01), abs=1e-6)


def test_record_task_writes_its_eta_and_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_app(from_env(HOSTS_ENV))
    monkeypatch.setenv(tasks.ENV_RESULTS_DIR, str(tmp_path))
    eta = "2030-01-01T00:00:00.123456+00:00"
    # What the worker sets before running a task (celery-stubs type push_request's kwargs as the task's).
    cast(Any, tasks.record).push_request(id="t-8", eta=eta, delivery_info={"redelivered": False})
    try:
        tasks.record.run(8, sleep_ms=20)
    finally:
        tasks.record.pop_request()
    (line,) = records.read(tmp_path)[0]
    assert (line.task_id, line.key, line.eta) == ("t-8", 8, eta)
    assert line.started_at is not None
    assert line.finished_at - line.started_at >= 0.02, "started before the sleep"
    assert line.early, "run long before 2030"


def test_late_seconds_is_none_without_any_eta() -> None:
    assert runner.late_seconds([record("a", started_at=1.0, eta=None)]) is None


# ------------------------------------------------------------------------ the command line ----


def test_cli_refuses_the_eta_workload_on_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", "seed", "--workload", "eta", "--scenario", "kill-worker"])
    assert exit_info.value.code == 2
    assert "--workload eta needs --config ha" in capsys.readouterr().err


def test_the_workload_names_are_the_clis_choices() -> None:
    assert [w.value for w in Workload] == ["plain", "eta", "long"]
    assert DrillOptions(Scenario.KILL_BROKER).workload is Workload.PLAIN
