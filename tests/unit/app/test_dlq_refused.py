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
from app.intake import DELIVERY_COUNT_HEADER, OUTCOME_HEADER, QUEUE_HEADER, REASON_HEADER, REFUSED_AT_HEADER

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
        OUTCOME_HEADER: "refused",
        DELIVERY_COUNT_HEADER: 0,
    }
    assert copy.properties["content_type"] == "application/json"
    assert copy.properties["delivery_mode"] == 2, "persistent"
    assert copy.body == b""
    odd = refused_copy(b"x", {"application_headers": "not a table"}, "r" * 5000, "celery", NOW)
    assert len(odd.properties["application_headers"][REASON_HEADER]) == dlq.REASON_MAX_CHARS
    # A redelivery's counters stay behind (the broker counts a published copy afresh); its count is ours.
    counted = {"id": "t-1", "task": "a", "x-delivery-count": 3, "x-acquired-count": 5}
    again = refused_copy(b"", {"application_headers": counted}, "r", "celery", NOW).properties["application_headers"]
    assert ("x-delivery-count" in again, "x-acquired-count" in again, again[DELIVERY_COUNT_HEADER]) == (False, False, 3)


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


class PriorityChannel(Channel):
    """A dead-letter queue that hands out higher priorities first (RabbitMQ 4.3 quorum queues),
    a message without a priority above Celery's 0, returned messages before all others."""

    def __init__(self, messages: list[amqp.Message]) -> None:
        super().__init__(messages)
        self.returns: list[amqp.Message] = []
        self.unacked: dict[int, amqp.Message] = {}

    def basic_get(self, queue: str) -> amqp.Message | None:
        assert queue == "celery.dlq"
        if not self.returns and self.queue:
            first = max(self.queue, key=_priority)  # max() keeps the earliest of equals
            self.queue.remove(first)
            self.returns.append(first)
        if not self.returns:
            return None
        self.tag += 1
        message = self.returns.pop(0)
        message.delivery_info = {"delivery_tag": self.tag}
        self.unacked[self.tag] = message
        return message

    def basic_ack(self, tag: int) -> None:
        del self.unacked[tag]

    def send_method(self, *args: Any) -> None:
        tag, _multiple, requeue = args[2]
        assert requeue
        self.returns.append(self.unacked.pop(tag))


def _priority(message: amqp.Message) -> int:
    priority = message.properties.get("priority")
    return 4 if priority is None else int(priority)


def celery_dead(task_id: str) -> amqp.Message:
    return amqp.Message(
        b"[[], {}, {}]",
        priority=0,
        correlation_id=task_id,
        application_headers={"id": task_id, "task": "a", "x-death": [{"queue": "celery", "reason": "rejected"}]},
    )


def test_list_sees_every_message_when_its_copies_overtake_the_rest() -> None:
    # A refused copy without a priority first, then three Celery messages (priority 0): every
    # copy of the refused one is handed out before them. Ending at the first own copy met
    # listed 1 of 4 (what the booted plan showed: 2 of 7).
    channel = PriorityChannel([refused("r"), celery_dead("f1"), celery_dead("f2"), celery_dead("f3")])
    for _ in range(2):  # listing twice: the second sees what the first left
        listed = [t.task_id or "" for t in dlq.list_dead(cast(amqp.Channel, channel))]
        assert sorted(listed) == ["f1", "f2", "f3", "r"]
        assert not channel.unacked, "every held copy handed back"
        remaining = [m.properties["correlation_id"] for m in channel.returns + channel.queue]
        assert sorted(remaining) == ["f1", "f2", "f3", "r"], "each message left exactly once"
    result = dlq.replay(cast(amqp.Channel, channel))
    assert sorted(t.task_id or "" for t in result.replayed) == sorted(listed), "replay sees what list sees"
