"""Publish many tasks, each one confirmed by the broker: the seed's scheduler, made honest.

    python -m app.scheduler --count 10000 --task count [--publisher pipelined|simple]

Shows progress (a progress bar on a terminal, periodic lines otherwise),
prints the rate, and exits 1 if any publish failed or was not confirmed, after
the publisher's own failover retries. Exit status 2 means bad arguments or
configuration.

Two publishing loops with the same signature (``Publisher``):

``pipelined`` (default)
    ``app.publish.publish_pipelined``: many publishes in flight on one
    confirm-mode channel, each still confirmed; unconfirmed ones are republished
    on the next broker node after a failover. See BENCHMARKS.md for its rate.
``simple``
    ``publish_confirmed``: ``app.send_task`` waiting for each confirm in turn
    (one round trip per task); ``task_publish_retry_policy`` rides out a failover.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from celery import Celery
from kombu import Producer

from app import tasks
from app.batch import MAX_REFUSED, ConfirmedIds, ProgressCallback, Publisher, PublishPlan, PublishResult, RefusedTask
from app.config import ConfigError, check_files, from_env
from app.factory import make_app
from app.outgoing import MessageRefused
from app.publish import publish_pipelined
from contract import timing
from contract.wire import ENV_SCHEDULER_RUN_ID

DEFAULT_COUNT: Final = 10_000
"""The seed schedules 10,000 ``count`` tasks."""

PlanFactory = Callable[[int, int], PublishPlan]
"""Builds the plan of one ``--task`` choice from ``--count`` and ``--sleep-ms``."""

PLANS: Final[Mapping[str, PlanFactory]] = MappingProxyType(
    {
        "count": lambda count, _ms: PublishPlan(tasks.COUNT, count),
        "noop": lambda count, _ms: PublishPlan(tasks.NOOP, count),
        "sleep_ms": lambda count, ms: PublishPlan(tasks.SLEEP_MS, count, lambda _index: ((), {"ms": ms})),
    }
)
"""``--task`` choices: the image's own tasks."""


def send_one(app: Celery, plan: PublishPlan, index: int, producer: Producer, **options: Any) -> str:
    """``app.send_task`` of the plan's ``index``-th task on ``producer`` (confirmed, see below); its id."""
    args, kwargs = plan.arguments(index)
    task_id = plan.task_id(index)
    if plan.queue is not None:
        options.setdefault("queue", plan.queue)
    app.send_task(plan.task_name, args=args, kwargs=kwargs, task_id=task_id, producer=producer, **options)
    return task_id


def publish_confirmed(app: Celery, plan: PublishPlan, on_progress: ProgressCallback) -> PublishResult:
    """Publish ``plan`` one message at a time, each waiting for its broker confirm.

    ``broker_transport_options.confirm_publish`` makes every publish block until
    the broker acks it (the quorum queue's majority has the message) and raise on
    a nack; ``confirm_timeout`` turns a silent, dead broker into an error that the
    retry policy handles by reconnecting (to the next URL) and republishing.
    Stops at the first publish that still fails after the retry policy. A task the worker would
    refuse (``app.outgoing.MessageRefused``, never sent) is recorded and the rest published, as
    ``publish_pipelined`` does.
    """
    # A count, not a list of ids: the confirmed ones are a prefix of the plan minus the refused (ConfirmedIds).
    reached = 0
    refused: list[RefusedTask] = []
    started = time.monotonic()

    def result(error: str | None = None) -> PublishResult:
        confirmed = ConfirmedIds(plan, reached, [r.index for r in refused])
        return PublishResult(plan.count, confirmed, time.monotonic() - started, error, refused=tuple(refused))

    try:
        with app.producer_or_acquire() as producer:
            for index in range(plan.count):
                try:
                    # Explicit: the seed's plain Celery app has no default bound of its own.
                    send_one(app, plan, index, producer, confirm_timeout=timing.PUBLISH_CONFIRM_TIMEOUT_S)
                except MessageRefused as exc:
                    refused.append(RefusedTask(index, exc.task_id, exc.reason))
                    reached = index + 1
                    if len(refused) > MAX_REFUSED:
                        raise
                    continue
                reached = index + 1
                on_progress(reached - len(refused))
    except Exception as exc:
        # Anything (connection errors after all retries, nacks, timeouts) ends the run
        # and is reported: the caller decides; nothing is swallowed.
        return result(f"{type(exc).__name__}: {exc}")
    return result()


PUBLISHERS: Final[Mapping[str, Publisher]] = MappingProxyType(
    {"pipelined": publish_pipelined, "simple": publish_confirmed}
)
"""``--publisher`` choices; the first is the default."""
DEFAULT_PUBLISHER: Final = "pipelined"


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
    publisher: Publisher | None = None,
    plans: Mapping[str, PlanFactory] = PLANS,
) -> int:
    """CLI entry point; returns the exit status.

    ``publisher`` overrides ``--publisher`` (tests); ``plans`` are the ``--task`` choices (the
    benchmarks add the drill's counting task to run this very CLI).
    """
    parser = argparse.ArgumentParser(prog="python -m app.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="tasks to publish (default %(default)s)")
    parser.add_argument("--task", choices=sorted(plans), default="count", help="task to publish")
    parser.add_argument("--sleep-ms", type=int, default=0, help="argument of the sleep_ms task (default 0)")
    parser.add_argument(
        "--run-id",
        default=None,
        help=f"names this run: a rerun with the same id publishes the same task ids (default: ${ENV_SCHEDULER_RUN_ID}, "
        "which the Job sets to its UID, else a new id)",
    )
    parser.add_argument(
        "--publisher",
        choices=sorted(PUBLISHERS),
        default=DEFAULT_PUBLISHER,
        help="pipelined: many confirms in flight; simple: wait for each confirm (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    if args.sleep_ms < 0:
        parser.error(f"--sleep-ms must not be negative, got {args.sleep_ms}")
    env = os.environ if environ is None else environ
    try:
        config = check_files(from_env(env))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    # The publishers log their retries (an unreachable broker, a failover) through logging.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    app = make_app(config)
    plan = plans[args.task](args.count, args.sleep_ms)
    run_id = args.run_id or env.get(ENV_SCHEDULER_RUN_ID, "").strip()
    if run_id:
        plan = dataclasses.replace(plan, run_id=run_id)
    chosen = publisher or PUBLISHERS[args.publisher]
    print(
        f"publishing {plan.count} x {plan.task_name} ({args.publisher} publisher, run {plan.run_id}) "
        f"via {', '.join(config.redacted_urls())}",
        flush=True,
    )
    try:
        result = run_with_progress(app, plan, chosen, interactive=sys.stdout.isatty())
    finally:
        # Close the pooled connections cleanly instead of letting the broker see them drop.
        app.close()
    summary = f"{result.confirmed}/{result.requested} confirmed in {result.seconds:.1f} s ({result.rate:.0f} tasks/s)"
    if result.ok:
        print(f"ok: {summary}", flush=True)
        return 0
    refused = f"; {len(result.refused)} refused, not sent:\n{result.refusals()}" if result.refused else ""
    stopped = f"; stopped by {result.error}" if result.error else ""
    print(f"FAILED: {summary}{stopped}{refused}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
