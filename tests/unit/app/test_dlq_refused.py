"""app.dlq and the worker's refusals: how a refused delivery is stored (``refused_copy``), how
the worker puts it into the dead-letter queue (``Refuser``: confirmed, one reconnect), and how
``list`` shows and ``replay`` routes it. Without a broker; the real one is tests/drills/test_poison.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import amqp
import pytest
from amqp.exceptions import MessageNacked

from app import dlq
from app.dlq import DeadTask, Refusal, Refuser, refused_copy
from app.intake import QUEUE_HEADER, REASON_HEADER, REFUSED_AT_HEADER

NOW = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def refused(task_id: str = "t-1", reason: str = "empty body; allowed: a JSON array") -> amqp.Message:
    return refused_copy(
        b"",
        {
            "content_type": "application/json",
            "correlation_id": task_id,
            "application_headers": {"id": task_id, "task": "a"},
        },
        reason,
        "celery",
        NOW,
    )


def test_a_refused_copy_keeps_body_properties_and_headers_and_adds_the_reason() -> None:
    copy = refused()
    headers = copy.properties["application_headers"]
    assert headers == {
        "id": "t-1",
        "task": "a",
        REASON_HEADER: "empty body; allowed: a JSON array",
        QUEUE_HEADER: "celery",
        REFUSED_AT_HEADER: NOW.replace(tzinfo=None),
    }
    assert copy.properties["content_type"] == "application/json"
    assert copy.properties["delivery_mode"] == 2, "persistent"
    assert copy.body == b""
    odd = refused_copy(b"x", {"application_headers": "not a table"}, "r" * 5000, "celery", NOW)
    assert len(odd.properties["application_headers"][REASON_HEADER]) == dlq.REASON_MAX_CHARS


def test_list_shows_a_refusal_with_its_reason_and_replay_drops_the_stamps() -> None:
    task = dlq.describe(refused().properties)
    assert task.refusal == Refusal("empty body; allowed: a JSON array", "celery", NOW.replace(tzinfo=None))
    assert (task.why, task.queue, task.latest) == ("refused", "celery", None)
    row = dlq.format_row(task, NOW.replace(tzinfo=None, minute=3))
    first, second = row.split("\n")
    assert first.split() == ["a", "t-1", "refused", "celery", "3m"]
    assert second == "    refused: empty body; allowed: a JSON array"
    assert dlq.replay_headers(refused().properties["application_headers"]) == {"id": "t-1", "task": "a"}
    assert DeadTask(None, None, ()).why == "-"


class Channel:
    """A py-amqp channel for the dead-letter queue: get, publish (confirmed), ack, nack."""

    def __init__(self, messages: list[amqp.Message]) -> None:
        self.queue = messages
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.published: list[tuple[str, str]] = []
        self.tag = 0

    def queue_declare(self, queue: str, passive: bool = False) -> tuple[str, int, int]:
        assert passive
        return queue, len(self.queue), 0

    def basic_get(self, queue: str) -> amqp.Message | None:
        assert queue == "celery.dlq"
        if not self.queue:
            return None
        self.tag += 1
        message = self.queue.pop(0)
        message.delivery_info = {"delivery_tag": self.tag}
        return message

    def basic_publish_confirm(self, message: amqp.Message, **kwargs: Any) -> None:
        self.published.append((kwargs["routing_key"], message.properties["correlation_id"]))
        if kwargs["routing_key"] == "celery.dlq":
            self.queue.append(message)

    def basic_ack(self, tag: int) -> None:
        pass

    def send_method(self, *args: Any) -> None:
        pass


def test_replay_sends_a_refused_message_back_to_the_queue_it_was_refused_from() -> None:
    channel = Channel([refused("t-1"), refused("t-2")])
    result = dlq.replay(cast(amqp.Channel, channel))
    assert [t.task_id for t in result.replayed] == ["t-1", "t-2"]
    assert channel.published == [("celery", "t-1"), ("celery", "t-2")]


class Connection:
    """A kombu connection whose py-amqp channel confirms, or fails as told."""

    def __init__(self, outcomes: list[str], opened: list[Connection]) -> None:
        self.outcomes = outcomes
        self.alt = ["a", "b", "c"]
        self.released = False
        self.retries: int | None = None
        opened.append(self)
        self.connection = self
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.published: list[tuple[str, float]] = []

    def ensure_connection(self, max_retries: int, interval_start: float) -> None:
        self.retries = max_retries
        assert interval_start == 0, "no sleeping on the worker's main loop"

    def channel(self) -> Connection:
        return self

    def basic_publish_confirm(self, message: amqp.Message, **kwargs: Any) -> None:
        outcome = self.outcomes.pop(0)
        assert kwargs["mandatory"]
        if outcome == "reset":
            raise ConnectionResetError("gone")
        if outcome == "nack":
            raise MessageNacked()
        if outcome == "unroutable":
            for handler in list(self.events["basic_return"]):
                handler(Exception("NO_ROUTE"), "", kwargs["routing_key"], message)
        self.published.append((kwargs["routing_key"], kwargs["confirm_timeout"]))

    def release(self) -> None:
        self.released = True


def test_the_refuser_reconnects_once_and_then_raises_so_the_worker_rejects() -> None:
    opened: list[Connection] = []
    outcomes = ["reset", "ok", "ok"]
    refuser = Refuser(lambda: Connection(outcomes, opened), confirm_timeout=7.0)
    refuser.put(refused())
    refuser.put(refused())
    assert len(opened) == 2, "a broken connection is replaced once, then reused"
    assert opened[0].released
    assert opened[1].published == [("celery.dlq", 7.0), ("celery.dlq", 7.0)]
    assert opened[1].retries == 3, "every node of the failover list"

    for failure in (["reset", "reset"], ["nack"], ["unroutable"]):
        broken = Refuser(lambda failure=failure: Connection(list(failure), []))  # type: ignore[misc]
        with pytest.raises((ConnectionResetError, RuntimeError)):
            broken.put(refused())
