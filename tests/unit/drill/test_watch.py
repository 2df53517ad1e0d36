"""The drill's stop rule and its loop (``drill.watch``) on a fake clock: each exit, the inject
point, and the progress bar as an observer."""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace

import pytest
from rich.console import Console

from drill.watch import (
    CheckQueues,
    Continue,
    Done,
    Fault,
    Inject,
    Limits,
    ProgressBar,
    Reason,
    Sample,
    WatchState,
    next_step,
    watch,
)

LIMITS = Limits(tasks=100, fault_point=30.0, stall_timeout_s=90.0)
ETA = replace(LIMITS, due_after_s=30.0)


def state(limits: Limits = LIMITS, **fields: object) -> WatchState:
    """A state at t=1000 with the last progress then; ``fields`` override the rest."""
    return replace(WatchState(limits, last_progress=1000.0), **fields)  # type: ignore[arg-type]


# Publishing and the fault both over, 80 of 100 tasks completed, the last at t=1000.
AFTER = state(published=100, completed=80, publishing=False, publish_ended_at=990.0, fault=Fault.DONE)


# ------------------------------------------------------------------------ the rule ----


def test_the_fault_is_injected_once_the_publisher_reaches_the_fault_point() -> None:
    assert next_step(state(published=29), 1000.0) == Continue()
    assert next_step(state(published=30), 1000.0) == Inject()
    assert next_step(state(published=31, fault=Fault.RUNNING), 1000.0) == Continue(), "never twice"
    assert next_step(state(published=31, fault=Fault.DONE), 1000.0) == Continue()


def test_a_fault_point_of_zero_injects_on_the_first_look() -> None:
    assert next_step(state(replace(LIMITS, fault_point=0.0)), 1000.0) == Inject()


def test_done_when_every_task_completed_and_the_fault_is_over() -> None:
    every = replace(AFTER, completed=100)
    assert next_step(every, 1000.0) == Done(Reason.ALL_DONE)
    assert next_step(replace(every, publishing=True), 1000.0) == Done(Reason.ALL_DONE)
    # A fault still running (a rolling restart) keeps the drill going, however long it takes.
    assert next_step(replace(every, fault=Fault.RUNNING), 5000.0) == Continue()


def test_stalled_when_no_task_completed_for_the_stall_timeout() -> None:
    assert next_step(AFTER, 1090.0) != Done(Reason.STALLED)
    assert next_step(AFTER, 1090.5) == Done(Reason.STALLED)
    # Not while publishing or the fault go on: either may still bring tasks.
    assert next_step(replace(AFTER, publishing=True), 1200.0) == Continue()
    assert next_step(replace(AFTER, fault=Fault.RUNNING), 1200.0) == Continue()


def test_the_broker_is_asked_only_after_the_quiet_time_and_drained_ends_the_drill() -> None:
    assert next_step(AFTER, 1005.0) == Continue(), "not before 5 s idle"
    assert next_step(AFTER, 1005.5) == CheckQueues()
    assert next_step(replace(AFTER, queues_empty=True), 1005.5) == Done(Reason.DRAINED)
    assert next_step(replace(AFTER, queues_empty=False), 1005.5) == Continue()
    assert next_step(replace(AFTER, publishing=True), 1005.5) == Continue(), "publishing: no question"


def test_eta_idle_time_counts_from_the_last_tasks_due_time() -> None:
    eta = replace(AFTER, limits=ETA)  # publishing ended at 990, so the last task is due by 1020
    assert eta.idle(1024.0) == pytest.approx(4.0)
    assert next_step(eta, 1024.0) == Continue()
    assert next_step(eta, 1025.5) == CheckQueues()
    assert next_step(eta, 1110.0) == CheckQueues(), "90 s after the due time, not after publishing"
    assert next_step(eta, 1110.5) == Done(Reason.STALLED)
    # Progress after the due time counts from there, as for plain tasks.
    assert replace(eta, last_progress=1050.0).idle(1060.0) == pytest.approx(10.0)


def test_plain_idle_time_ignores_when_publishing_ended() -> None:
    assert replace(AFTER, publish_ended_at=1003.0).idle(1006.0) == pytest.approx(6.0)


def test_publishing_that_stops_short_of_the_fault_point_ends_the_drill() -> None:
    short = state(published=12, completed=5, publishing=False, publish_ended_at=999.0)
    assert next_step(short, 1000.0) == Done(Reason.PUBLISH_FAILED)
    # Nothing completed yet: wait (the stall timeout or an empty broker ends it).
    assert next_step(replace(short, completed=0), 1000.0) == Continue()
    assert next_step(replace(short, completed=0), 1090.5) == Done(Reason.STALLED)
    assert next_step(replace(short, publishing=True), 1000.0) == Continue()


def test_the_state_keeps_the_times_the_rule_needs() -> None:
    start = state(queues_empty=True)
    one = start.seen(Sample(published=10, completed=0, publishing=True, fault=Fault.PENDING), 1001.0)
    assert (one.published, one.last_progress, one.publish_ended_at, one.queues_empty) == (10, 1000.0, None, None)
    two = one.seen(Sample(published=40, completed=3, publishing=False, fault=Fault.RUNNING), 1002.0)
    assert (two.completed, two.last_progress, two.publish_ended_at, two.fault) == (3, 1002.0, 1002.0, Fault.RUNNING)
    three = two.seen(Sample(published=40, completed=3, publishing=False, fault=Fault.DONE), 1003.0)
    assert (three.last_progress, three.publish_ended_at) == (1002.0, 1002.0), "kept from the first time seen"


# ------------------------------------------------------------------------ the loop ----


@dataclass
class FakeClock:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class FakeDrill:
    """A drill whose publisher, workers and fault move with the fake clock."""

    clock: FakeClock
    publish_per_s: float = 40.0
    publish_upto: int = 100
    complete_per_s: float = 20.0
    complete_upto: int = 100
    fault_s: float = 2.0
    queued: bool = False
    injected_at: list[float] = field(default_factory=list)
    queue_checks: list[float] = field(default_factory=list)

    def published(self) -> int:
        return min(self.publish_upto, int(self.clock.now * self.publish_per_s))

    def sample(self) -> Sample:
        if not self.injected_at:
            fault = Fault.PENDING
        else:
            fault = Fault.RUNNING if self.clock.now < self.injected_at[0] + self.fault_s else Fault.DONE
        completed = min(self.complete_upto, self.published(), int(self.clock.now * self.complete_per_s))
        return Sample(self.published(), completed, self.published() < self.publish_upto, fault)

    def queues_empty(self) -> bool:
        self.queue_checks.append(self.clock.now)
        return not self.queued

    def inject(self) -> None:
        self.injected_at.append(self.clock.now)


def run(drill: FakeDrill, limits: Limits = LIMITS) -> tuple[Done, WatchState, list[WatchState]]:
    seen: list[WatchState] = []
    done, last = watch(drill, limits, observers=[seen.append], clock=drill.clock, sleep=drill.clock.sleep)
    return done, last, seen


def test_the_loop_injects_at_the_fault_point_and_stops_when_all_is_done() -> None:
    drill = FakeDrill(FakeClock())
    done, last, seen = run(drill)
    assert done == Done(Reason.ALL_DONE)
    # 40 published per second: 30 (the fault point) at t=0.75, the third look.
    assert drill.injected_at == [0.75]
    assert [s.published for s in seen][:3] == [10, 20, 30]
    # 20 completed per second: 100 at t=5; the fault ended at 2.75.
    assert drill.clock.now == 5.0
    assert (last.completed, last.fault) == (100, Fault.DONE)
    assert set(drill.clock.slept) == {0.25}
    assert drill.queue_checks == [], "all done: the broker was never asked"


def test_the_loop_waits_for_a_long_fault_before_it_stops() -> None:
    drill = FakeDrill(FakeClock(), fault_s=60.0)
    done, _, _ = run(drill)
    assert done == Done(Reason.ALL_DONE)
    assert drill.clock.now == 60.75


def test_the_loop_stops_when_nothing_is_queued_and_tasks_are_missing() -> None:
    drill = FakeDrill(FakeClock(), complete_upto=97)
    done, last, _ = run(drill)
    assert done == Done(Reason.DRAINED)
    assert last.completed == 97
    # The 97th completed at t=4.85, seen at 5.0; 5 s idle passed at 10.25, the first question.
    assert drill.queue_checks == [10.25]
    assert drill.clock.now == 10.25


def test_the_loop_keeps_asking_while_something_is_queued_then_gives_up_at_the_stall_timeout() -> None:
    drill = FakeDrill(FakeClock(), complete_upto=97, queued=True)
    done, _, _ = run(drill, replace(LIMITS, stall_timeout_s=20.0))
    assert done == Done(Reason.STALLED)
    assert drill.clock.now == 25.25
    assert drill.queue_checks[0] == 10.25
    assert len(drill.queue_checks) == (25.0 - 10.25) / 0.25 + 1, "once a look from 10.25 to 25.0"


def test_the_loop_ends_when_publishing_fails_before_the_fault_point() -> None:
    drill = FakeDrill(FakeClock(), publish_upto=12)
    done, last, _ = run(drill)
    assert done == Done(Reason.PUBLISH_FAILED)
    assert drill.injected_at == []
    assert (last.published, last.completed) == (12, 10)


# -------------------------------------------------------------------- the observer ----


def test_the_progress_bar_shows_each_state_it_is_given() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    drill = FakeDrill(FakeClock())
    with ProgressBar(console, 100) as bar:
        first = state(published=10, completed=0)
        bar(first)
        published, completed = bar.progress.tasks
        assert (published.description, published.completed, published.total) == ("published", 10, 100)
        assert (completed.description, completed.completed, completed.total) == ("completed", 0, 100)
        watch(drill, LIMITS, observers=[bar], clock=drill.clock, sleep=drill.clock.sleep)
        assert (published.completed, completed.completed) == (100, 100)
    assert "100/100" in out.getvalue(), out.getvalue()
