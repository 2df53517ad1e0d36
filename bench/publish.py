"""Publishing benchmarks: unconfirmed (raw) vs pipelined confirms vs one confirm per task.

All three publish the same Celery task messages (``app.amqp.create_task_message`` through
``app.amqp.send_task_message``, i.e. kombu's ``Producer.publish``) to the same quorum queue
on the same cluster, interleaved round by round so that load from anything else on the
machine falls on all three alike. Only the delivery guarantee differs:

* raw: a channel without confirm mode; the loop's rate is how fast the broker *accepts*
  bytes (its flow control throttles the loop), and ``ingest`` is how fast the queue really
  holds them (until a passive declare counts every message);
* pipelined: ``app.publish.publish_pipelined`` (a window of confirms in flight);
* simple: ``app.scheduler.publish_confirmed`` (``send_task``, each publish waits for its confirm).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from celery import Celery
from kombu import Producer

from app import tasks
from app.batch import PublishPlan, PublishResult
from app.publish import TaskRoute, publish_pipelined, publisher_connection
from app.scheduler import publish_confirmed
from contract.wire import QUEUE_NAME

INGEST_TIMEOUT_S = 120.0
"""Longest wait for unconfirmed publishes to show up in the queue."""


@dataclass(frozen=True)
class RawResult:
    count: int
    loop_seconds: float
    ingest_seconds: float
    """From the first publish until the queue held all ``count`` messages."""

    @property
    def loop_rate(self) -> float:
        return self.count / self.loop_seconds

    @property
    def ingest_rate(self) -> float:
        return self.count / self.ingest_seconds


@dataclass
class PublishBench:
    """Rates of every round, per method, and the figures derived from them (medians)."""

    raw: list[RawResult] = field(default_factory=list)
    pipelined: list[PublishResult] = field(default_factory=list)
    simple: list[PublishResult] = field(default_factory=list)
    windows: dict[int, float] = field(default_factory=dict)
    """Window size -> pipelined rate (the full run's sweep)."""

    def figures(self) -> dict[str, float]:
        return {
            "publish_raw_per_s": statistics.median(r.loop_rate for r in self.raw),
            "publish_raw_ingest_per_s": statistics.median(r.ingest_rate for r in self.raw),
            "publish_confirmed_per_s": statistics.median(r.rate for r in self.pipelined),
            "publish_confirmed_simple_per_s": statistics.median(r.rate for r in self.simple),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "raw": [
                {"count": r.count, "loop_per_s": round(r.loop_rate, 1), "ingest_per_s": round(r.ingest_rate, 1)}
                for r in self.raw
            ],
            "pipelined": [_result_json(r) for r in self.pipelined],
            "simple": [_result_json(r) for r in self.simple],
            "window_sweep_per_s": {str(w): round(rate, 1) for w, rate in self.windows.items()},
        }


def _result_json(result: PublishResult) -> dict[str, Any]:
    return {
        "count": result.requested,
        "confirmed": result.confirmed,
        "per_s": round(result.rate, 1),
        "failovers": result.failovers,
        "error": result.error,
    }


def queue_depth(app: Celery) -> int:
    """Messages in the task queue (a passive declare: answered by the queue's leader)."""
    with app.connection_for_write() as conn:
        # kombu returns py-amqp's queue_declare_ok_t here (its stub says str | None).
        declared: Any = app.amqp.queues[QUEUE_NAME].bind(conn.default_channel).queue_declare(passive=True)
        return int(declared.message_count)


def purge(app: Celery) -> None:
    with app.connection_for_write() as conn:
        queue = app.amqp.queues[QUEUE_NAME].bind(conn.default_channel)
        queue.declare()
        queue.purge()


def publish_raw(app: Celery, plan: PublishPlan) -> RawResult:
    """The pipelined publisher's messages and route, on a channel that never confirms."""
    route = TaskRoute.of(app, plan)
    create = app.amqp.create_task_message
    send = app.amqp.send_task_message
    reply_to = app.thread_oid
    with publisher_connection(app) as conn:
        channel = conn.channel()
        for queue in route.declare:
            queue.bind(channel).declare()
        producer = Producer(channel, auto_declare=False)
        # Ids made up front, as the pipelined publisher does: the loop times publishing only.
        ids = [f"raw-{i}-{time.monotonic_ns()}" for i in range(plan.count)]
        started = time.monotonic()
        for index, task_id in enumerate(ids):
            args, kwargs = plan.arguments(index)
            message = create(task_id, plan.task_name, args, kwargs, reply_to=reply_to, ignore_result=None)
            send(producer, plan.task_name, message, retry=False, declare=[], **route.options)
        loop = time.monotonic() - started
        deadline = started + INGEST_TIMEOUT_S
        while queue_depth(app) < plan.count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the queue never held the {plan.count} unconfirmed publishes")
            time.sleep(0.02)
        ingest = time.monotonic() - started
    return RawResult(plan.count, loop, ingest)


def run_publish_bench(
    app: Celery,
    *,
    rounds: int,
    count: int,
    simple_count: int,
    windows: tuple[int, ...],
    sweep_count: int,
    say: Callable[[str], None],
) -> PublishBench:
    """Interleaved rounds of raw / pipelined / simple on an empty queue with no consumer."""
    bench = PublishBench()
    plan = PublishPlan(tasks.NOOP, count)
    for round_no in range(1, rounds + 1):
        purge(app)
        raw = publish_raw(app, plan)
        bench.raw.append(raw)
        purge(app)
        pipelined = publish_pipelined(app, plan, lambda _: None)
        _check(pipelined, "pipelined")
        bench.pipelined.append(pipelined)
        purge(app)
        simple = publish_confirmed(app, PublishPlan(tasks.NOOP, simple_count), lambda _: None)
        _check(simple, "simple")
        bench.simple.append(simple)
        say(
            f"publish round {round_no}/{rounds}: raw {raw.loop_rate:.0f}/s (ingest {raw.ingest_rate:.0f}/s), "
            f"pipelined {pipelined.rate:.0f}/s, simple {simple.rate:.0f}/s"
        )
    for window in windows:
        purge(app)
        publisher = partial(publish_pipelined, window=window)
        result = publisher(app, PublishPlan(tasks.NOOP, sweep_count), lambda _: None)
        _check(result, f"window {window}")
        bench.windows[window] = result.rate
        say(f"window {window}: {result.rate:.0f}/s")
    purge(app)
    return bench


def _check(result: PublishResult, what: str) -> None:
    if not result.ok:
        raise RuntimeError(f"{what} publishing failed: {result.error}")
