"""Watching a drill: when to inject the fault and when to stop, apart from the I/O that feeds it.

The decision is pure: :func:`next_step` reads a :class:`WatchState` and a time and answers
:class:`Continue`, :class:`Inject`, :class:`CheckQueues` (the rule needs the broker's word that
nothing is queued or delayed) or :class:`Done` with its :class:`Reason`. :func:`watch` is the loop:
look at the drill, update the state, tell the observers, ask the rule, act. Its clock, its sleep and
the drill it looks at are arguments, so the rule and the loop run on fake time in the unit tests
(as kubelet's prober keeps its bookkeeping, ``harness.kube.probes``, apart from the probing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import Final, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

INTERVAL_S: Final = 0.25
"""How often the loop looks at the drill (counting the result files is cheap)."""
QUIET_S: Final = 5.0
"""Idle this long after publishing and the fault, the rule asks whether anything is still queued."""


class Fault(Enum):
    """Where the fault injection is."""

    PENDING = "pending"
    """Not started: the publisher has not reached the fault point yet."""
    RUNNING = "running"
    DONE = "done"
    """Finished, or failed (the runner keeps the error for the result)."""


@dataclass(frozen=True)
class Limits:
    """The rule's settings for one drill."""

    tasks: int
    fault_point: float
    """Inject once this many tasks are published (``DrillOptions.fault_at`` x tasks)."""
    stall_timeout_s: float
    due_after_s: float | None = None
    """``eta``: the last task is due at most this long after publishing ended, and idle time counts
    from then; None: every task is due at once."""
    quiet_s: float = QUIET_S


@dataclass(frozen=True)
class Sample:
    """One look at the drill."""

    published: int
    """Tasks the publisher has confirmed so far."""
    completed: int
    """Distinct scheduled tasks with a result record."""
    publishing: bool
    """The publisher is still running."""
    fault: Fault


@dataclass(frozen=True)
class WatchState:
    """What the rule knows: the latest sample and the times it needs from earlier ones."""

    limits: Limits
    last_progress: float
    """When the completed count last changed (the watch's start before the first task)."""
    published: int = 0
    completed: int = 0
    publishing: bool = True
    publish_ended_at: float | None = None
    """When the publisher was first seen stopped."""
    fault: Fault = Fault.PENDING
    queues_empty: bool | None = None
    """Nothing queued or delayed, as the broker said on this tick; None: not asked on this tick."""

    def seen(self, sample: Sample, now: float) -> WatchState:
        """The state after ``sample``, taken at ``now`` (the broker's answer is per tick: forgotten)."""
        ended = self.publish_ended_at
        if ended is None and not sample.publishing:
            ended = now
        return replace(
            self,
            published=sample.published,
            completed=sample.completed,
            last_progress=now if sample.completed != self.completed else self.last_progress,
            publishing=sample.publishing,
            publish_ended_at=ended,
            fault=sample.fault,
            queues_empty=None,
        )

    def idle(self, now: float) -> float:
        """Seconds without a completed task; ``eta``: counted from the last task's ETA at the earliest."""
        since = self.last_progress
        if self.limits.due_after_s is not None and self.publish_ended_at is not None:
            since = max(since, self.publish_ended_at + self.limits.due_after_s)
        return now - since


@dataclass(frozen=True)
class Continue:
    """Look again after the interval."""


@dataclass(frozen=True)
class Inject:
    """Start the fault now (the publisher reached the fault point)."""


@dataclass(frozen=True)
class CheckQueues:
    """Ask the broker whether anything is queued or delayed, then ask the rule again."""


class Reason(StrEnum):
    ALL_DONE = "every task completed and the fault is over"
    STALLED = "no task completed for the stall timeout"
    DRAINED = "nothing queued, delayed or running: what is missing will never come"
    PUBLISH_FAILED = "publishing ended before the fault point"


@dataclass(frozen=True)
class Done:
    reason: Reason


Step = Continue | Inject | CheckQueues | Done


def next_step(state: WatchState, now: float) -> Step:
    """The stop rule: what the loop does after a look at the drill at ``now``."""
    limits = state.limits
    if state.fault is Fault.PENDING and state.published >= limits.fault_point:
        return Inject()
    if state.completed >= limits.tasks and state.fault is Fault.DONE:
        return Done(Reason.ALL_DONE)
    # Once publishing and the fault are over, only the workers can still change the count.
    if not state.publishing and state.fault is not Fault.RUNNING:
        idle = state.idle(now)
        if idle > limits.stall_timeout_s:
            return Done(Reason.STALLED)
        if idle > limits.quiet_s:
            if state.queues_empty is None:
                return CheckQueues()
            if state.queues_empty:
                return Done(Reason.DRAINED)
    if state.fault is Fault.PENDING and not state.publishing and state.completed > 0:
        # The publisher stopped short of the fault point: report what happened.
        return Done(Reason.PUBLISH_FAILED)
    return Continue()


class Watched(Protocol):
    """The drill as the loop sees it (the runner's I/O)."""

    def sample(self) -> Sample: ...

    def queues_empty(self) -> bool:
        """Nothing in the task queue and nothing in the delayed-delivery queues."""
        ...

    def inject(self) -> None:
        """Start the fault in the background; later samples say it is running or done."""
        ...


Observer = Callable[[WatchState], None]


def watch(
    drill: Watched,
    limits: Limits,
    *,
    observers: Sequence[Observer] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = INTERVAL_S,
) -> tuple[Done, WatchState]:
    """Look at ``drill`` every ``interval`` until the rule says done; returns why, and the last state."""
    state = WatchState(limits, last_progress=clock())
    while True:
        sleep(interval)
        now = clock()
        state = state.seen(drill.sample(), now)
        for observer in observers:
            observer(state)
        step = next_step(state, now)
        if isinstance(step, CheckQueues):
            state = replace(state, queues_empty=drill.queues_empty())
            step = next_step(state, now)
        if isinstance(step, Inject):
            drill.inject()
        elif isinstance(step, Done):
            return step, state


class ProgressBar:
    """Two bars, tasks published and tasks completed, redrawn from each watch state (an observer)."""

    def __init__(self, console: Console, tasks: int) -> None:
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._published = self.progress.add_task("published", total=tasks)
        self._completed = self.progress.add_task("completed", total=tasks)

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def __call__(self, state: WatchState) -> None:
        self.progress.update(self._published, completed=state.published)
        self.progress.update(self._completed, completed=state.completed)
