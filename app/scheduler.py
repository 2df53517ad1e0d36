"""Publish many tasks, each one confirmed by the broker: the seed's scheduler, made honest.

    python -m app.scheduler --count 10000 --task count

Shows progress (a progress bar on a terminal, periodic lines otherwise),
prints the rate, and exits 1 if any publish failed or was not confirmed -
including the retries of ``task_publish_retry_policy``, which ride out a broker
failover. Exit status 2 means bad arguments or configuration.

The publishing loop is ``publish_confirmed``; anything with the same signature
(``Publisher``) can replace it, e.g. a pipelined publisher that keeps many
confirms in flight instead of waiting for each one (~10x faster, see DESIGN.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from celery import Celery
from kombu.utils.uuid import uuid

from app import tasks, timing
from app.config import ConfigError, from_env
from app.factory import make_app

DEFAULT_COUNT: Final = 10_000
"""The seed schedules 10,000 ``count`` tasks."""

TASK_CHOICES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "count": tasks.COUNT,
        "noop": tasks.NOOP,
        "sleep_ms": tasks.SLEEP_MS,
        "record": tasks.RECORD,
        "record_once": tasks.RECORD_ONCE,
    }
)

ProgressCallback = Callable[[int], None]
"""Called with the number of publishes confirmed so far."""


@dataclass(frozen=True)
class PublishPlan:
    """What to publish: ``count`` messages of ``task_name``."""

    task_name: str
    count: int
    sleep_ms: int = 0
    """Passed to tasks that take one (``sleep_ms``, ``record``, ``record_once``)."""

    def arguments(self, index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of the ``index``-th task."""
        if self.task_name in (tasks.RECORD, tasks.RECORD_ONCE):
            return (index,), {"sleep_ms": self.sleep_ms}
        if self.task_name == tasks.SLEEP_MS:
            return (), {"ms": self.sleep_ms}
        return (), {}


@dataclass(frozen=True)
class PublishResult:
    """What a publisher achieved."""

    requested: int
    task_ids: tuple[str, ...] = field(repr=False)
    """Ids of the confirmed publishes, in order (the index is the ``record`` key)."""
    seconds: float
    error: str | None = None
    """Why publishing stopped early; ``None`` if every publish was confirmed."""

    @property
    def confirmed(self) -> int:
        """Publishes the broker confirmed."""
        return len(self.task_ids)

    @property
    def ok(self) -> bool:
        """Every requested publish was confirmed."""
        return self.error is None and self.confirmed == self.requested

    @property
    def rate(self) -> float:
        """Confirmed publishes per second."""
        return self.confirmed / self.seconds if self.seconds > 0 else 0.0


Publisher = Callable[[Celery, PublishPlan, ProgressCallback], PublishResult]


def publish_confirmed(app: Celery, plan: PublishPlan, on_progress: ProgressCallback) -> PublishResult:
    """Publish ``plan`` one message at a time, each waiting for its broker confirm.

    ``broker_transport_options.confirm_publish`` makes every publish block until
    the broker acks it (the quorum queue's majority has the message) and raise on
    a nack; ``confirm_timeout`` turns a silent, dead broker into an error that the
    retry policy handles by reconnecting (to the next URL) and republishing.
    Stops at the first publish that still fails after the retry policy.
    """
    task_ids: list[str] = []
    started = time.monotonic()
    try:
        with app.producer_or_acquire() as producer:
            for index in range(plan.count):
                args, kwargs = plan.arguments(index)
                task_id = uuid()
                app.send_task(
                    plan.task_name,
                    args=args,
                    kwargs=kwargs,
                    task_id=task_id,
                    producer=producer,
                    confirm_timeout=timing.PUBLISH_CONFIRM_TIMEOUT_S,
                )
                task_ids.append(task_id)
                on_progress(len(task_ids))
    except Exception as exc:
        # Anything (connection errors after all retries, nacks, timeouts) ends the run
        # and is reported: the caller decides; nothing is swallowed.
        return PublishResult(plan.count, tuple(task_ids), time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    return PublishResult(plan.count, tuple(task_ids), time.monotonic() - started)


def run_with_progress(app: Celery, plan: PublishPlan, publisher: Publisher, interactive: bool) -> PublishResult:
    if interactive:
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            # The worker image ships without rich (app/requirements.txt): fall back to lines.
            return run_with_progress(app, plan, publisher, interactive=False)

        with Progress(
            TextColumn("[bold]publishing[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} tasks/s"),
            TimeElapsedColumn(),
        ) as progress:
            bar = progress.add_task("publish", total=plan.count, rate=0.0)
            started = time.monotonic()

            def update(done: int) -> None:
                elapsed = time.monotonic() - started
                progress.update(bar, completed=done, rate=done / elapsed if elapsed > 0 else 0.0)

            return publisher(app, plan, update)

    started = time.monotonic()
    last_report = started

    def report(done: int) -> None:
        nonlocal last_report
        now = time.monotonic()
        # Every 2 s, and at the end: enough to follow a drill in logs without flooding them.
        if now - last_report >= 2.0 or done == plan.count:
            last_report = now
            elapsed = now - started
            rate = done / elapsed if elapsed > 0 else 0.0
            print(f"published {done}/{plan.count} ({rate:.0f} tasks/s)", flush=True)

    return publisher(app, plan, report)


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    publisher: Publisher = publish_confirmed,
) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m app.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="tasks to publish (default %(default)s)")
    parser.add_argument("--task", choices=sorted(TASK_CHOICES), default="count", help="task to publish")
    parser.add_argument("--sleep-ms", type=int, default=0, help="argument for sleep_ms/record tasks (default 0)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    if args.sleep_ms < 0:
        parser.error(f"--sleep-ms must not be negative, got {args.sleep_ms}")
    try:
        config = from_env(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    app = make_app(config)
    plan = PublishPlan(TASK_CHOICES[args.task], args.count, args.sleep_ms)
    print(f"publishing {plan.count} x {plan.task_name} via {', '.join(config.redacted_urls())}", flush=True)
    try:
        result = run_with_progress(app, plan, publisher, interactive=sys.stdout.isatty())
    finally:
        # Close the pooled connections cleanly instead of letting the broker see them drop.
        app.close()
    summary = f"{result.confirmed}/{result.requested} confirmed in {result.seconds:.1f} s ({result.rate:.0f} tasks/s)"
    if result.ok:
        print(f"ok: {summary}", flush=True)
        return 0
    print(f"FAILED: {summary}; stopped by {result.error}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
