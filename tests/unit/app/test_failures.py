"""app.failures: a task's final failure goes into the dead-letter queue with its reason, then is acked.

The pure parts (the reason, final or not, the copy's headers and how ``list`` shows it), then the
request hook on Celery 5.7's real consumer, strategy and request without a broker: what the pool
reports (a raise, a lost pool process, the hard time limit) is handed to the request as the prefork
pool hands it. The real broker and worker: tests/drills/dev_plan/test_failure_paths.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback  # type: ignore[attr-defined]
from celery import signals
from celery.exceptions import TimeLimitExceeded, WorkerLostError

from app import dlq
from app.bootsteps import Consumer
from app.dlq import Outcome, refused_copy
from app.failures import KeepingRequest, failure_reason, is_final, traceback_tail
from app.intake import DELIVERY_COUNT_HEADER, OUTCOME_HEADER, QUEUE_HEADER, REASON_HEADER
from contract.wire import DELIVERY_LIMIT
from tests.unit.app.consumer_fakes import FakeChannel, FakeRefuser, delivery, new_consumer

NOW = datetime(2026, 12, 7, 20, 0, 0, tzinfo=UTC)
LOST = "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."
"""What billiard says of a pool process killed by SIGKILL (``Pool.mark_as_worker_lost``)."""


def einfo(exc: BaseException) -> Any:
    """``exc`` raised and caught, as the pool reports it: a billiard ExceptionInfo."""
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


# --- the pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requeue", "count", "limit", "final"),
    [
        (False, 0, 20, True),  # a raise: never requeued
        (True, 0, 20, False),  # a first crash: the broker redelivers it
        (True, 19, 20, False),  # its requeue makes 20 failed deliveries: still within the limit
        (True, 20, 20, True),  # the 21st delivery: its requeue would be dead-lettered
        (True, 2, 3, False),
        (True, 3, 3, True),
    ],
)
def test_final_means_no_requeue_or_a_requeue_past_the_limit(requeue: bool, count: int, limit: int, final: bool) -> None:
    assert is_final(requeue, count, limit) is final


@pytest.mark.parametrize(
    ("headers", "count"),
    [
        (None, 0),
        ({}, 0),
        ({"x-delivery-count": 20}, 20),
        ({"x-delivery-count": "20"}, 0),
        ({"x-delivery-count": True}, 0),
    ],
)
def test_the_delivery_count_is_the_brokers_header_or_zero(headers: dict[str, Any] | None, count: int) -> None:
    assert dlq.delivery_count(headers) == count


def test_a_lost_pool_process_and_the_hard_time_limit_are_named() -> None:
    assert failure_reason(WorkerLostError(LOST), None) == f"worker lost: {LOST}"
    # billiard may hand the exception over wrapped with its traceback text.
    assert failure_reason(ExceptionWithTraceback(WorkerLostError(LOST), "tb"), None) == f"worker lost: {LOST}"
    assert failure_reason(TimeLimitExceeded(60.0), None) == "hard time limit 60 s exceeded"
    assert failure_reason(SystemExit(3), "tb") == "worker lost: the pool process exited (SystemExit: 3)"
    assert failure_reason(TimeLimitExceeded(2.5), None) == "hard time limit 2.5 s exceeded"


def test_a_raise_gives_its_type_message_and_the_end_of_its_traceback_bounded() -> None:
    frames = [f'  File "/app/t.py", line {n}, in step{n}\n    step{n + 1}()' for n in range(200)]
    formatted = "Traceback (most recent call last):\n" + "\n".join(frames) + "\nValueError: boom\n"
    reason = failure_reason(ValueError("boom"), formatted)
    head, _, tail = reason.partition("\n")
    assert head == "ValueError: boom"
    assert tail.endswith("    step200()"), "the innermost frame is kept"
    assert "in step0" not in tail, "the outer frames are cut"
    assert "ValueError" not in tail, "the exception is said once, first"
    assert len(reason) <= dlq.REASON_MAX_CHARS
    assert tail.startswith("  File "), "whole lines only"
    long = failure_reason(RuntimeError("x" * 5000), formatted)
    assert len(long.partition("\n")[0]) == 400
    assert len(long) <= dlq.REASON_MAX_CHARS
    assert traceback_tail("Traceback (most recent call last):\nValueError: boom", 100) == ""
    assert failure_reason(KeyError("k"), None) == "KeyError: 'k'"


def test_the_failed_copy_carries_why_where_from_and_its_count_and_list_shows_it() -> None:
    properties = {"application_headers": {"id": "t-1", "task": "a", "x-delivery-count": 20}}
    reason = 'ValueError: boom\n  File "/app/t.py", line 3, in run\n    raise ValueError("boom")'
    copy = refused_copy(b"[[], {}, {}]", properties, reason, "celery", NOW, outcome=Outcome.FAILED)
    headers = copy.properties["application_headers"]
    assert (headers[OUTCOME_HEADER], headers[DELIVERY_COUNT_HEADER], headers[QUEUE_HEADER]) == ("failed", 20, "celery")
    assert headers[REASON_HEADER] == reason
    assert "x-delivery-count" not in headers
    task = dlq.describe(copy.properties)
    assert (task.why, task.queue) == ("failed x21", "celery")
    first, *rest = dlq.format_row(task, NOW.replace(tzinfo=None, minute=2)).split("\n")
    assert first.split() == ["a", "t-1", "failed", "x21", "celery", "2m"]
    assert rest == [
        "    failed: ValueError: boom",
        '        File "/app/t.py", line 3, in run',
        '          raise ValueError("boom")',
    ]
    assert dlq.replay_headers(headers) == {"id": "t-1", "task": "a"}, "a replay starts afresh"


# --- the request hook ----------------------------------------------------------------------------------


@pytest.fixture
def consumer() -> Consumer:
    return new_consumer()


@pytest.fixture
def signalled() -> Iterator[list[str]]:
    """The metrics' signals fired in this (the main) process: ``app.metrics`` counts these."""
    fired: list[str] = []

    def failure(**_: Any) -> None:
        fired.append("task_failure")

    def rejected(**_: Any) -> None:
        fired.append("task_rejected")

    signals.task_failure.connect(failure, weak=False)
    signals.task_rejected.connect(rejected, weak=False)
    yield fired
    signals.task_failure.disconnect(failure)
    signals.task_rejected.disconnect(rejected)


def received(consumer: Consumer, channel: FakeChannel, count: int | None = None) -> KeepingRequest:
    """The request Celery builds for a delivery (``count``: its ``x-delivery-count``) and hands to the pool."""
    headers: dict[str, Any] = {} if count is None else {"x-delivery-count": count}
    consumer.create_task_handler()(delivery(channel, b"[[], {}, {}]", **headers))
    [request] = consumer.requests  # type: ignore[attr-defined]
    assert isinstance(request, KeepingRequest)
    return request


def test_every_request_the_consumer_runs_carries_its_keeper(consumer: Consumer) -> None:
    request = received(consumer, FakeChannel())
    assert request.keeper is consumer.keeper
    assert request.keeper.delivery_limit == DELIVERY_LIMIT


def test_a_raise_is_kept_with_its_exception_then_acked(consumer: Consumer, signalled: list[str]) -> None:
    channel = FakeChannel()
    refuser = FakeRefuser(channel)
    consumer.refuser = refuser  # type: ignore[assignment]
    request = received(consumer, channel)
    # The pool's result of a task that raised: (failed, ExceptionInfo, runtime), to on_success.
    request.on_success((1, einfo(ValueError("boom")), 0.01))
    [copy] = refuser.put_messages
    headers = copy.properties["application_headers"]
    assert headers[REASON_HEADER].startswith("ValueError: boom\n  File ")
    assert "raise exc" in headers[REASON_HEADER], "the traceback's tail"
    assert (headers[OUTCOME_HEADER], headers[DELIVERY_COUNT_HEADER], headers[QUEUE_HEADER]) == ("failed", 0, "celery")
    assert [kind for kind, _ in channel.log] == ["dead-letter", "ack"], "acked only after the confirmed copy"
    assert signalled == [], "counted in the pool process (task_failure there), as before: no second count here"


@pytest.mark.parametrize("count", [None, 5, DELIVERY_LIMIT - 1])
def test_a_lost_pool_process_is_requeued_while_deliveries_are_left(
    consumer: Consumer, signalled: list[str], count: int | None
) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    received(consumer, channel, count).on_failure(einfo(WorkerLostError(LOST)))
    assert channel.log == [("reject", (7, True))], "Celery's task_reject_on_worker_lost, untouched"
    assert signalled == []


def test_a_lost_pool_process_on_the_last_delivery_is_kept_with_why(consumer: Consumer, signalled: list[str]) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    received(consumer, channel, DELIVERY_LIMIT).on_failure(einfo(WorkerLostError(LOST)))
    assert channel.log == [("dead-letter", f"worker lost: {LOST}"), ("ack", (7, False))]
    assert signalled == [], "a lost pool process was never a task_failure nor a rejection"


def test_the_hard_time_limit_on_the_last_delivery_is_kept_with_why(consumer: Consumer, signalled: list[str]) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    # billiard reports the hard limit through the error callback first (Pool.on_hard_timeout).
    received(consumer, channel, DELIVERY_LIMIT).on_failure(einfo(TimeLimitExceeded(2.0)))
    assert channel.log == [("dead-letter", "hard time limit 2 s exceeded"), ("ack", (7, False))]
    assert signalled == [], "its task_failure comes once, from on_timeout, as before"


def test_the_limit_is_the_configured_one() -> None:
    consumer = new_consumer(delivery_limit=3)
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    received(consumer, channel, 2).on_failure(einfo(WorkerLostError(LOST)))
    consumer.requests.clear()  # type: ignore[attr-defined]
    received(consumer, channel, 3).on_failure(einfo(WorkerLostError(LOST)))
    assert [kind for kind, _ in channel.log] == ["reject", "dead-letter", "ack"]


@pytest.mark.parametrize(("failure", "count", "requeue"), [("raise", None, False), ("lost", DELIVERY_LIMIT, True)])
def test_without_a_confirmed_copy_the_request_rejects_as_celery_does(
    consumer: Consumer, failure: str, count: int | None, requeue: bool
) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel, fail=True)  # type: ignore[assignment]
    request = received(consumer, channel, count)
    if failure == "raise":
        request.on_success((1, einfo(ValueError("boom")), 0.01))
    else:
        request.on_failure(einfo(WorkerLostError(LOST)))
    # A raise: dead-lettered at once as "rejected"; a lost process: requeued, so past the limit "delivery_limit".
    assert channel.log == [("reject", (7, requeue))]


def test_a_request_without_a_keeper_rejects_as_celery_does(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    request = received(consumer, channel)
    request.keeper = None
    request.on_success((1, einfo(ValueError("boom")), 0.01))
    assert channel.log == [("reject", (7, False))]
