"""What a drill publishes: ``plain`` tasks, ``eta`` tasks delayed by a countdown, or ``long`` tasks.

``plain`` is the scheduler's default: every task due at once, published by the pipelined
publisher (``app.publish.publish_pipelined``).

``long`` publishes like ``plain``, but each task runs for 1-3 minutes (``drill.tasks.long_plan``):
what a worker rollout meets in production. Each must finish within the worker pod's grace period
(warm shutdown) or be redelivered and run again; none may be lost.

``eta`` goes through Celery's native delayed delivery, the path every ``countdown=``/``eta=``
task takes on quorum queues: the message is published to ``celery_delayed_27`` with the
countdown's bits as routing key, waits in the ``celery_delayed_<level>`` quorum queues (each
level a TTL of 2^level s, dead-lettered at-least-once to the next) and reaches the task queue
through ``celery_delayed_delivery`` once the whole seconds have passed; the worker holds it
for the fraction left, until its ETA. Each task is published the way application code does
it, ``app.send_task(..., countdown=...)``, one at a time, each waiting for its confirm (the
simple publisher's pattern, ``app.scheduler.publish_confirmed``: the pipelined publisher
has no countdown). The countdowns are spread over 1-30 s by index, with a few sub-second
ones (:data:`SUB_SECOND`). The first :data:`BEFORE_WORKERS` of the tasks are published
while the worker Deployment has no pod at all: a delayed task must not need a worker to be
routed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Final

from celery import Celery

from app.batch import ProgressCallback, PublishPlan, PublishResult
from app.scheduler import send_one


class Workload(StrEnum):
    PLAIN = "plain"
    """Every task due at once (no ETA), the pipelined publisher."""
    ETA = "eta"
    """Countdowns of 1-30 s (a few sub-second), ``app.send_task(countdown=...)``, part before any worker."""
    LONG = "long"
    """Tasks due at once that each run for minutes (:data:`LONG_TASK_S`): a rollout meets them mid-run."""


LONG_TASK_S: Final = (60.0, 180.0)
"""The ``long`` workload's task durations, seconds: 1-3 minutes, spread over the range by index."""
MIN_COUNTDOWN_S: Final = 1.0
MAX_COUNTDOWN_S: Final = 30.0
"""The countdowns of the ``eta`` workload span [MIN_COUNTDOWN_S, MAX_COUNTDOWN_S)."""
SUB_SECOND: Final = (0.3, 0.7)
"""Countdowns below one second, which native delayed delivery cannot express in whole seconds
(``app.factory.make_app`` rounds positive ones up to 1 s)."""
SUB_SECOND_EVERY: Final = 100
"""One task in this many has a sub-second countdown (index 3, 103, 203, ...)."""
BEFORE_WORKERS: Final = 0.1
"""Fraction of the ``eta`` tasks published while no worker pod exists (below the fault point)."""
_GOLDEN: Final = 0.6180339887498949
"""Successive multiples modulo 1 spread evenly over [0, 1) for any prefix of the indexes."""


def countdown(index: int) -> float:
    """The ``index``-th task's countdown in seconds, deterministic; rounded to 10 ms."""
    if index % SUB_SECOND_EVERY == 3:
        return SUB_SECOND[(index // SUB_SECOND_EVERY) % len(SUB_SECOND)]
    fraction = (index * _GOLDEN) % 1.0
    return round(MIN_COUNTDOWN_S + fraction * (MAX_COUNTDOWN_S - MIN_COUNTDOWN_S - 0.01), 2)


def published_before_workers(tasks: int) -> int:
    """How many of ``tasks`` the ``eta`` workload publishes before the workers start (at least 1)."""
    return max(1, int(tasks * BEFORE_WORKERS))


def publish_delayed(
    app: Celery,
    plan: PublishPlan,
    on_progress: ProgressCallback,
    *,
    countdowns: Callable[[int], float] = countdown,
    pause_after: int = 0,
    pause: Callable[[], None] | None = None,
) -> PublishResult:
    """Publish ``plan`` with ``app.send_task(..., countdown=countdowns(index))``, each confirmed.

    After ``pause_after`` publishes, ``pause()`` runs (the drill starts the workers there) with
    no connection held, so an idle publisher connection cannot time out meanwhile; its time is
    not counted in the result's seconds. Stops at the first publish that still fails after the
    app's retry policy, like ``publish_confirmed``.
    """
    task_ids: list[str] = []
    started = time.monotonic()
    paused = 0.0
    parts = [range(0, pause_after), range(pause_after, plan.count)] if pause_after else [range(plan.count)]
    try:
        for number, part in enumerate(parts):
            if number and pause is not None:
                before = time.monotonic()
                pause()
                paused += time.monotonic() - before
            with app.producer_or_acquire() as producer:
                for index in part:
                    task_ids.append(send_one(app, plan, index, producer, countdown=countdowns(index)))
                    on_progress(len(task_ids))
    except Exception as exc:
        # Reported, never swallowed: the drill counts what was confirmed.
        seconds = time.monotonic() - started - paused
        return PublishResult(plan.count, tuple(task_ids), seconds, f"{type(exc).__name__}: {exc}")
    return PublishResult(plan.count, tuple(task_ids), time.monotonic() - started - paused)
