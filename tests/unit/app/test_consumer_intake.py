"""app.bootsteps.Consumer's intake, on Celery 5.7's real consumer and task handler without a broker:
what it refuses goes to the dead-letter queue (a confirmed copy first, then the ack), what it
cannot put there is rejected to the dead-letter policy, and nothing is acked away or raised."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest

from app import tasks
from app.bootsteps import Consumer
from app.intake import QUEUE_HEADER, REASON_HEADER, REFUSED_AT_HEADER
from tests.unit.app.consumer_fakes import FakeChannel, FakeRefuser, delivery, new_consumer


@pytest.fixture
def consumer() -> Consumer:
    return new_consumer()


def test_a_good_task_reaches_celery_and_nothing_is_refused(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    consumer.create_task_handler()(delivery(channel, json.dumps([[], {}, {}]).encode()))
    assert [r.name for r in consumer.requests] == [tasks.NOOP]  # type: ignore[attr-defined]
    assert channel.log == []


def test_the_body_that_killed_every_worker_is_dead_lettered_with_its_reason_then_acked(consumer: Consumer) -> None:
    channel = FakeChannel()
    refuser = FakeRefuser(channel)
    consumer.refuser = refuser  # type: ignore[assignment]
    consumer.create_task_handler()(delivery(channel, b'"just a string"'))
    assert [kind for kind, _ in channel.log] == ["dead-letter", "ack"], "acked only after the confirmed copy"
    [copy] = refuser.put_messages
    headers = copy.properties["application_headers"]
    assert headers[REASON_HEADER].startswith("body is 'just a string'")
    assert headers[QUEUE_HEADER] == "celery"
    assert REFUSED_AT_HEADER in headers
    assert (headers["task"], headers["id"]) == (tasks.NOOP, "t-1"), "the original headers are kept"
    assert copy.body == b'"just a string"', "the body as delivered"
    assert consumer.requests == []  # type: ignore[attr-defined]


def test_without_a_confirmed_copy_the_delivery_is_rejected_to_the_dead_letter_policy(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel, fail=True)  # type: ignore[assignment]
    consumer.create_task_handler()(delivery(channel, b"\xff not utf-8"))
    assert channel.log == [("reject", (7, False))], "never acked without the copy, never requeued to loop"


def test_an_unknown_task_is_refused_by_name(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    consumer.create_task_handler()(delivery(channel, b"[[], {}, {}]", task="app.tasks.gone"))
    assert channel.log[0] == (
        "dead-letter",
        "unknown task 'app.tasks.gone': this worker does not register it (task id t-1)",
    )


def test_celery_failing_on_an_accepted_delivery_refuses_it_instead_of_crashing(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    strategies: Any = consumer.strategies  # type: ignore[attr-defined]
    strategies[tasks.NOOP] = mock.Mock(side_effect=ValueError("not enough values to unpack"))
    consumer.create_task_handler()(delivery(channel, b"[[], {}, {}]"))
    assert channel.log[0] == ("dead-letter", "the worker failed on it: ValueError: not enough values to unpack")
    assert channel.log[1][0] == "ack"


def test_connection_errors_still_reach_celery_which_reconnects(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    strategies: Any = consumer.strategies  # type: ignore[attr-defined]
    strategies[tasks.NOOP] = mock.Mock(side_effect=ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        consumer.create_task_handler()(delivery(channel, b"[[], {}, {}]"))
    assert channel.log == []


def test_a_decode_error_is_refused_not_acked_away(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    consumer.on_decode_error(delivery(channel, b"x"), ValueError("Can't decode"))
    assert channel.log[0] == ("dead-letter", "cannot be decoded: ValueError: Can't decode")
    assert channel.log[1][0] == "ack"
