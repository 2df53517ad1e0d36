"""``app.dlq`` without a broker: header cleanup, x-death parsing, the CLI's argument and
configuration errors, and the replay's publish-confirm-ack order against a scripted channel.

The real broker side (tasks dead-lettered by a raise, a crash, a time limit; list and replay,
and a replay killed mid-way) is in tests/drills/dev_plan/test_failure_paths.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import amqp
import pytest
from amqp import spec

from app import dlq
from app.dlq import DeadTask, Death

DIED_AT = datetime(2026, 1, 2, 3, 4, 5)
TASK_ID = "0b9e4c3e-4f7a-4f9e-9d43-2f5a0c6d9a11"


def dead_headers(task: str = "app.tasks.count", task_id: str = TASK_ID, queue: str = "celery") -> dict[str, Any]:
    """Headers as RabbitMQ 4.3 hands a dead-lettered Celery (protocol 2) message out of celery.dlq."""
    return {
        "id": task_id,
        "task": task,
        "root_id": task_id,
        "retries": 0,
        "timelimit": [None, None],
        "x-acquired-count": 1,
        "x-delivery-count": 1,
        "x-death": [
            {
                "count": 1,
                "reason": "delivery_limit",
                "queue": queue,
                "time": DIED_AT,
                "exchange": "celery",
                "routing-keys": ["celery"],
            },
            {"count": 2, "reason": "rejected", "queue": "other", "exchange": "", "routing-keys": ["other"]},
        ],
        "x-first-death-exchange": "celery",
        "x-first-death-queue": "other",
        "x-first-death-reason": "rejected",
        "x-last-death-exchange": "celery",
        "x-last-death-queue": queue,
        "x-last-death-reason": "delivery_limit",
    }


def test_replay_headers_drop_the_brokers_bookkeeping_and_keep_celerys() -> None:
    cleaned = dlq.replay_headers(dead_headers())
    assert cleaned == {
        "id": TASK_ID,
        "task": "app.tasks.count",
        "root_id": TASK_ID,
        "retries": 0,
        "timelimit": [None, None],
    }
    assert dlq.replay_headers(None) == {}


def test_replay_copy_keeps_body_properties_and_task_id() -> None:
    original = amqp.Message(
        b'[[1], {}, {"callbacks": null}]',
        content_type="application/json",
        content_encoding="utf-8",
        correlation_id=TASK_ID,
        delivery_mode=2,
        priority=0,
        reply_to="r",
        application_headers=dead_headers(),
    )
    copy = dlq.replay_copy(original)
    assert copy.body == original.body
    assert {k: v for k, v in copy.properties.items() if k != "application_headers"} == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": TASK_ID,
        "delivery_mode": 2,
        "priority": 0,
        "reply_to": "r",
    }
    headers = copy.properties["application_headers"]
    assert headers["id"] == TASK_ID
    assert not [k for k in headers if k.startswith("x-")], headers
    stamped = amqp.Message(b"", application_headers={**dead_headers(), dlq.ROTATION_HEADER: "run"})
    assert dlq.ROTATION_HEADER not in dlq.replay_copy(stamped).properties["application_headers"]


def test_parse_x_death_newest_first_and_skips_malformed_entries() -> None:
    headers = dead_headers()
    headers["x-death"] = [*headers["x-death"], "junk", {"queue": 3, "reason": "rejected"}, {"queue": "q"}]
    deaths = dlq.parse_x_death(headers)
    assert deaths == (
        Death("celery", "delivery_limit", 1, "celery", ("celery",), DIED_AT),
        Death("other", "rejected", 2, "", ("other",), None),
    )
    assert dlq.parse_x_death({}) == ()
    assert dlq.parse_x_death(None) == ()
    assert dlq.parse_x_death({"x-death": "not a list"}) == ()


def test_describe_reads_protocol_2_headers_and_falls_back_to_correlation_id() -> None:
    task = dlq.describe({"application_headers": dead_headers(), "correlation_id": "ignored"})
    assert (task.task_id, task.task_name, task.latest and task.latest.queue) == (TASK_ID, "app.tasks.count", "celery")
    bare = dlq.describe({"correlation_id": "cid"})
    assert (bare.task_id, bare.task_name, bare.latest) == ("cid", None, None)


def test_age_and_row() -> None:
    task = dlq.describe({"application_headers": dead_headers()})
    now = datetime(2026, 1, 2, 3, 6, 5)
    assert task.age_s(now) == 120.0
    row = dlq.format_row(task, now)
    for part in ("app.tasks.count", TASK_ID, "delivery_limit x1", "celery", "2m"):
        assert part in row, row
    assert DeadTask(None, None, ()).age_s(now) is None
    assert dlq.format_row(DeadTask(None, None, ()), now).split() == ["-", "-", "-", "-", "-"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["replay", "--limit", "0"], "expected a positive integer, got '0'"),
        (["list", "--limit", "x"], "expected a positive integer, got 'x'"),
        (["purge"], "invalid choice: 'purge'"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        dlq.main(argv, environ={"BROKER_URLS": "amqp://u:p@h:5672/"})
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "BROKER_URLS"),
        ({"BROKER_URLS": "amqp://u:p@h/", "BROKER_HOSTS": "h"}, "BROKER_HOSTS"),
        ({"BROKER_HOSTS": "h", "BROKER_USER": "u"}, "BROKER_PASSWORD"),
    ],
)
def test_configuration_error_exits_2_naming_the_variable(
    environ: dict[str, str], variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq.main(["list"], environ=environ) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error:"), err
    assert variable in err, err


# --- replay against a scripted channel -----------------------------------------------------------


class FakeChannel:
    """The py-amqp channel calls ``list_dead``/``replay`` make, logged in order; publishing to
    celery.dlq appends to the fake queue, a nack returns the message to the head (RabbitMQ 4.3's
    quorum queues deliver returned messages first, in the order they came back)."""

    def __init__(self, messages: list[amqp.Message], unroutable: frozenset[str] = frozenset()) -> None:
        self.queue = messages
        self.returned = 0
        """How many messages at the head of ``queue`` are returned ones."""
        self.unroutable = unroutable
        self.log: list[tuple[str, Any]] = []
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.next_tag = 0
        self.unacked: dict[int, amqp.Message] = {}

    def queue_declare(self, queue: str, passive: bool = False) -> tuple[str, int, int]:
        assert passive, "the tool must never declare (create) the dead-letter queue"
        return queue, len(self.queue), 0

    def basic_get(self, queue: str) -> amqp.Message | None:
        assert queue == "celery.dlq"
        if not self.queue:
            return None
        message = self.queue.pop(0)
        self.returned = max(0, self.returned - 1)
        self.next_tag += 1
        message.delivery_info = {"delivery_tag": self.next_tag}
        self.unacked[self.next_tag] = message
        self.log.append(("get", self.next_tag))
        return message

    def basic_publish_confirm(self, message: amqp.Message, **kwargs: Any) -> None:
        assert kwargs["mandatory"], "an unroutable copy must come back, not vanish"
        assert kwargs["exchange"] == ""
        queue = kwargs["routing_key"]
        self.log.append(("publish", (queue, message.properties["correlation_id"])))
        if queue in self.unroutable:
            for handler in list(self.events["basic_return"]):
                handler(Exception("NO_ROUTE"), "", queue, message)
        elif queue == "celery.dlq":
            self.queue.append(message)

    def basic_ack(self, tag: int) -> None:
        del self.unacked[tag]
        self.log.append(("ack", tag))

    def send_method(self, sig: tuple[int, int], fmt: str, args: tuple[int, bool, bool]) -> None:
        assert (sig, fmt) == (spec.Basic.Nack, "Lbb")
        tag, multiple, requeue = args
        assert not multiple
        assert requeue
        self.queue.insert(self.returned, self.unacked.pop(tag))
        self.returned += 1
        self.log.append(("nack", tag))

    def ids(self) -> list[str]:
        return [m.properties["correlation_id"] for m in self.queue]


def dead_message(task: str, task_id: str, queue: str = "celery") -> amqp.Message:
    return amqp.Message(b"[]", correlation_id=task_id, application_headers=dead_headers(task, task_id, queue))


def test_replay_publishes_then_acks_each_and_keeps_the_rest_by_confirmed_copies() -> None:
    channel = FakeChannel(
        [
            dead_message("a", "1"),
            dead_message("b", "2"),
            dead_message("a", "3", queue="gone"),
            dead_message("a", "4"),
            dead_message("a", "5"),
        ],
        unroutable=frozenset({"gone"}),
    )
    seen: list[str | None] = []
    result = dlq.replay(
        cast(amqp.Channel, channel), limit=2, task_name="a", on_replayed=lambda task: seen.append(task.task_id)
    )
    assert [t.task_id for t in result.replayed] == seen == ["1", "4"]
    assert result.skipped == 1
    assert [(t.task_id, why) for t, why in result.failed] == [("3", "unroutable to 'gone' (NO_ROUTE)")]
    assert channel.log == [
        ("get", 1),
        ("publish", ("celery", "1")),
        ("ack", 1),  # only after the copy's confirm
        ("get", 2),  # task b: kept (copy at the tail, confirmed, then ack), never returned
        ("publish", ("celery.dlq", "2")),
        ("ack", 2),
        ("get", 3),
        ("publish", ("gone", "3")),  # returned: kept
        ("publish", ("celery.dlq", "3")),
        ("ack", 3),
        ("get", 4),
        ("publish", ("celery", "4")),
        ("ack", 4),
        # --limit 2 reached: message 5 never taken.
    ]
    assert not channel.events["basic_return"], "the return handler must be removed"
    assert channel.ids() == ["5", "2", "3"]
    assert not channel.unacked
    kept = channel.queue[1].properties["application_headers"]
    assert kept["x-death"] == dead_headers()["x-death"], "a kept message keeps its x-death"
    assert "x-delivery-count" not in kept


def test_replay_replays_each_task_id_once_per_run() -> None:
    channel = FakeChannel([dead_message("a", "1"), dead_message("a", "2")])
    original_publish = channel.basic_publish_confirm

    def publish_and_die_again(message: amqp.Message, **kwargs: Any) -> None:
        # Every replayed task is dead-lettered again at once, same task id: the run must still end.
        original_publish(message, **kwargs)
        if kwargs["routing_key"] == "celery":
            channel.queue.append(dead_message("a", message.properties["correlation_id"]))

    channel.basic_publish_confirm = publish_and_die_again  # type: ignore[method-assign]
    result = dlq.replay(cast(amqp.Channel, channel))
    assert [t.task_id for t in result.replayed] == ["1", "2"]
    assert result.skipped == 2
    assert channel.ids() == ["1", "2"], "both back for the next run"
    assert not channel.unacked


def test_list_keeps_every_message_and_stops_after_one_round() -> None:
    channel = FakeChannel([dead_message("a", "1"), dead_message("b", "2"), dead_message("c", "3")])
    assert [t.task_name for t in dlq.list_dead(cast(amqp.Channel, channel))] == ["a", "b", "c"]
    # Each message copied to the tail, confirmed, then acked; the copies seen again are held
    # until nothing is ready, then handed back.
    assert channel.log[-6:] == [("get", 4), ("get", 5), ("get", 6), ("nack", 4), ("nack", 5), ("nack", 6)]
    assert channel.ids() == ["1", "2", "3"]
    assert not channel.unacked
    # A second listing sees the same tasks (a new run id): listing is repeatable.
    assert [t.task_id for t in dlq.list_dead(cast(amqp.Channel, channel), limit=2)] == ["1", "2"]
    assert channel.ids() == ["3", "1", "2"]


def test_the_cli_refuses_a_missing_ca_file_by_name_before_dialling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the worker and the scheduler: not minutes of TLS retries, one error naming the variable."""
    env = {
        "BROKER_HOSTS": "rabbitmq-0.rabbitmq-nodes.ha-celery.svc.cluster.local",
        "BROKER_USER": "celery-worker",
        "BROKER_PASSWORD": "x",
        "BROKER_TLS_CA_FILE": str(tmp_path / "missing" / "ca.crt"),
    }
    assert dlq.main(["list"], env) == 2
    err = capsys.readouterr().err
    assert "BROKER_TLS_CA_FILE=" in err
    assert "cannot be read" in err
