"""The drill's phases (``drill.runner.Drill``) against a fake cluster: what the watch is fed, and
what the result says for each way a drill ends. No broker: the fake publisher writes the records
the workers would write."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import pytest
from celery import Celery
from rich.console import Console

from app.batch import ConfirmedIds, ProgressCallback, Publisher, PublishPlan, PublishResult
from drill import records
from drill.held import FreezeReport
from drill.node_scenarios import NodeReport
from drill.observe import Observed
from drill.pod_scenarios import Mark
from drill.runner import Drill, DrillOptions, DrillResult, drive
from drill.scale import ScaleReport
from drill.scenario import Scenario
from drill.targets import PodEvent
from drill.update import UpdateReport
from drill.watch import Done, Fault, Reason
from harness.kube.fields import Delta

T = TypeVar("T")


@dataclass
class FakeTarget:
    """Workers that complete every published task at once; a fault that only marks itself."""

    results: Path
    publish_upto: int | None = None
    """Stop publishing after this many (the publisher's error), None: all of them."""
    fault_error: Exception | None = None
    queued: int | None = 0
    """The task queue's depth as the broker reports it (None: no node answers)."""
    injected: list[Scenario] = field(default_factory=list)
    lanes: list[str] = field(default_factory=list)
    """The lanes the drills asked for (:meth:`use_lane`)."""
    queue: str = "celery"

    @property
    def versions(self) -> dict[str, str]:
        return {"fake": "1"}

    def use_lane(self, lane: str) -> None:
        self.lanes.append(lane)

    @property
    def deltas(self) -> list[Delta]:
        return []

    def start_workers(self) -> int:
        return 1

    def stop_workers(self) -> None:
        raise AssertionError("plain workload: the workers stay")

    def workers_present(self) -> int:
        return 1

    def workers_ever(self) -> int:
        return 1

    def delayed_messages(self) -> int | None:
        return 0

    def publisher(self) -> tuple[Celery, Publisher]:
        return cast(Celery, None), self._publish

    def in_cluster(self, fn: Callable[[], T]) -> T:
        return fn()

    def _publish(self, app: Celery, plan: PublishPlan, on_progress: ProgressCallback) -> PublishResult:
        del app
        upto = plan.count if self.publish_upto is None else self.publish_upto
        for index in range(upto):
            records.append(self.results, records.make_record(plan.task_id(index), index, redelivered=False))
            on_progress(index + 1)
        error = None if upto == plan.count else "ConnectionError: gone"
        return PublishResult(plan.count, ConfirmedIds(plan, upto), 0.1, error)

    def queue_stat(self, item: str) -> int | None:
        return 1 if item == "consumers" else self.queued

    def inject(self, scenario: Scenario, mark: Mark) -> None:
        self.injected.append(scenario)
        mark(f"fault {scenario}")
        if self.fault_error is not None:
            raise self.fault_error

    def reset(self) -> None:
        pass

    def pod_events(self, since: float) -> list[PodEvent]:
        return [(since, "pod-0", "Started", "")]

    def observe(self, since: float) -> Observed | None:
        del since
        return None

    def update_result(self) -> UpdateReport | None:
        return None

    def node_result(self) -> NodeReport | None:
        return None

    def freeze_result(self) -> FreezeReport | None:
        return None

    def scale_result(self) -> ScaleReport | None:
        return None


def run(tmp_path: Path, target: FakeTarget, **options: float) -> tuple[DrillResult, str]:
    out = io.StringIO()
    console = Console(file=out, width=120)
    drill_options = DrillOptions(Scenario.KILL_BROKER, tasks=40, **options)  # type: ignore[arg-type]
    return drive(drill_options, target=target, results=tmp_path, console=console), out.getvalue()


def test_a_drill_that_completes_everything(tmp_path: Path) -> None:
    target = FakeTarget(tmp_path)
    result, _ = run(tmp_path, target)
    assert target.injected == [Scenario.KILL_BROKER]
    assert (result.completed, result.lost, result.duplicates, result.error) == (40, 0, 0, None)
    assert result.publish.confirmed == 40
    assert [label for _, label in result.events] == ["fault kill-broker"]
    assert result.fault_at == result.events[0][0]
    assert result.pod_events == [(result.started_at, "pod-0", "Started", "")]


def test_a_failed_injection_is_the_results_error(tmp_path: Path) -> None:
    result, _ = run(tmp_path, FakeTarget(tmp_path, fault_error=RuntimeError("no such pod")))
    assert result.error == "fault injection failed: RuntimeError: no such pod"
    assert result.lost == 0


def test_publishing_that_fails_before_the_fault_point_is_reported(tmp_path: Path) -> None:
    target = FakeTarget(tmp_path, publish_upto=5)
    result, _ = run(tmp_path, target)
    assert target.injected == []
    assert result.error == "the fault was never injected"
    assert (result.completed, result.lost) == (5, 35)
    assert result.publish.error == "ConnectionError: gone"


def test_a_stalled_drill_says_so(tmp_path: Path) -> None:
    result, console = run(tmp_path, FakeTarget(tmp_path, publish_upto=0), stall_timeout_s=0.3)
    assert result.lost == 40
    assert "no task completed for 0s: stopping" in console


def test_the_watch_samples_the_publisher_before_its_count(tmp_path: Path) -> None:
    drill = Drill(
        DrillOptions(Scenario.KILL_BROKER, tasks=10),
        target=FakeTarget(tmp_path),
        results=tmp_path,
        console=Console(file=io.StringIO()),
    )
    assert drill.sample().fault is Fault.PENDING
    drill.start_publisher()
    assert drill.publishing is not None
    drill.publishing.join(timeout=10)
    sample = drill.sample()
    assert (sample.publishing, sample.published, sample.completed) == (False, 10, 10)
    assert drill.queues_empty()
    drill.inject()
    assert drill.fault is not None
    drill.fault.join(timeout=10)
    assert drill.sample().fault is Fault.DONE
    assert drill.watch() == Done(Reason.ALL_DONE)


@pytest.mark.parametrize("stat", [None, 3])
def test_the_queues_are_not_empty_when_the_broker_does_not_say_zero(tmp_path: Path, stat: int | None) -> None:
    target = FakeTarget(tmp_path, queued=stat)
    drill = Drill(DrillOptions(Scenario.KILL_BROKER), target=target, results=tmp_path, console=Console())
    assert not drill.queues_empty()
