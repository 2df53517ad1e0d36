"""The publisher's half of the intake check (``app.outgoing``) without a broker: what it refuses,
that a refusal is never sent nor retried on any publish path, what the scheduler's batch does
with the rest, and the worker side's compressed deliveries that reach the intake undecompressed.

The real 4.3 broker side (a 1 MiB header refused, the good tasks beside it run, the connection
kept) is in tests/drills/dev_plan/test_poison.py.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import amqp
import pytest
from amqp.serialization import dumps as amqp_dumps
from celery import Celery
from kombu import Connection
from kombu.transport.pyamqp import Message as PyAmqpMessage

from app import batch, intake, tasks
from app.batch import MAX_REFUSED, PublishPlan
from app.bootsteps import Consumer, UndecompressedConsumer
from app.config import AppConfig
from app.factory import make_app
from app.outgoing import MessageRefused, problem
from app.publish import ConfirmWindow, publish_pipelined
from app.scheduler import main as scheduler_main
from app.scheduler import publish_confirmed
from contract.wire import AMQP_FRAME_MAX
from tests.unit.app import test_consumer_intake
from tests.unit.app.consumer_fakes import FakeChannel, FakeRefuser
from tests.unit.app.test_publish import (
    URLS_ENV,
    CapturingProducer,
    FakeBroker,
    FakeConnection,
    build_app,
    with_fake_connection,
)

MIB = 1024 * 1024
HUGE_HEADER = {"big": "x" * MIB}
"""Issue 28's case: a 1 MiB header (the broker's frame_max is 128 KiB)."""

consumer = test_consumer_intake.consumer
"""The same fixture: app.bootsteps.Consumer on Celery 5.7's real consumer, no broker."""


# ------------------------------------------------------------------- the check ----


def test_the_publishers_header_limit_leaves_the_header_frame_far_under_frame_max() -> None:
    # The header frame: class, weight, body size, property flags, then the properties; the 13
    # basic properties besides the headers are at most ten short strings (255 bytes each),
    # two octets, a timestamp.
    other_properties = 10 * (1 + 255) + 2 + 8
    frame = 8 + 2 + 2 + 8 + 2 + intake.MAX_HEADER_BYTES + other_properties
    assert frame * 3 < AMQP_FRAME_MAX, "32 KiB of headers must stay a fraction of the broker's frame"


@pytest.mark.parametrize(
    "headers",
    [
        {"task": "t", "id": "1", "argsrepr": "x" * 1024, "n": 2**40, "ok": True, "none": None},
        {"a": [1, 2.5, "three", [b"four"], {"five": 5}], "é": "ü" * 100},
        {"nested": {"deep": {"deeper": ["", "", ""]}}},
    ],
)
def test_the_counted_size_is_at_least_what_py_amqp_writes(headers: dict[str, Any]) -> None:
    written = len(amqp_dumps("F", (headers,)))
    with mock.patch.object(intake, "MAX_HEADER_BYTES", written - 1):
        assert intake.headers_problem(headers) is not None, f"py-amqp writes {written} bytes, the check counts fewer"


def test_an_array_of_empty_strings_is_not_free() -> None:
    # 10,000 empty strings: 50 KB on the wire (type tag and length each), nothing in bytes of text.
    headers = {"task": "t", "id": "1", "empty": [""] * 10_000}
    assert len(amqp_dumps("F", (headers,))) > intake.MAX_HEADER_BYTES
    assert intake.headers_problem(headers) == "headers exceed 32 KiB; allowed: at most 32768 bytes"


def test_a_1_mib_header_is_refused_naming_the_limit_and_its_size() -> None:
    why = problem({"task": "t", "id": "1", **HUGE_HEADER}, ((), {}, {}), "json", None)
    assert why is not None
    assert why.startswith("headers exceed 32 KiB (1048")
    assert why.endswith("bytes as AMQP encodes them); allowed: at most 32768 bytes")


@pytest.mark.parametrize(
    ("headers", "body", "compression", "expected"),
    [
        ({"deep": [[[[[[[[["x"]]]]]]]]]}, ((), {}, {}), None, "headers nest deeper than 8 levels"),
        ({}, (("x" * MIB,), {}, {}), None, "body of 1048"),
        ({}, ((), {}, {}), "zlib", "compression 'zlib'; allowed: none"),
    ],
)
def test_every_limit_the_worker_checks_is_checked_before_sending(
    headers: dict[str, Any], body: object, compression: str | None, expected: str
) -> None:
    why = problem({"task": "t", "id": "1", **headers}, body, "json", compression)
    assert why is not None
    assert why.startswith(expected), why


def test_a_message_the_worker_accepts_passes() -> None:
    assert problem({"task": "t", "id": "1", "argsrepr": "x" * 1024}, (("y" * 1000,), {}, {}), "json", None) is None


# ------------------------------------------------------------ every publish path ----


class ConnectionTrouble(ConnectionError):
    pass


PUBLISH_PATHS = {
    "send_task": lambda app, producer: app.send_task(tasks.NOOP, headers=HUGE_HEADER, producer=producer),
    "apply_async": lambda app, producer: app.tasks[tasks.NOOP].apply_async(headers=HUGE_HEADER, producer=producer),
    "a 1 MiB argument": lambda app, producer: app.tasks[tasks.SLEEP_MS].apply_async(
        kwargs={"ms": "x" * MIB}, producer=producer
    ),
}


@pytest.mark.parametrize("path", sorted(PUBLISH_PATHS))
def test_a_refused_task_is_never_published_and_raises_at_once(path: str) -> None:
    app = build_app()
    producer = CapturingProducer()
    with pytest.raises(MessageRefused) as refused:
        PUBLISH_PATHS[path](app, producer)
    assert producer.calls == [], "nothing reached the producer, so nothing can be retried"
    assert refused.value.task_name in (tasks.NOOP, tasks.SLEEP_MS)
    assert "app.intake's limits" in str(refused.value)


def test_the_publish_retry_policy_never_sees_a_refusal() -> None:
    # A producer on a connection that would fail every publish: a refusal must not reach it,
    # or kombu's ensure() would reconnect and retry (issue 28: 63 s, then a reset).
    app = build_app()
    producer = mock.Mock()
    producer.connection = Connection("memory://")
    producer.publish.side_effect = ConnectionTrouble("reset by peer")
    with pytest.raises(MessageRefused):
        app.send_task(tasks.NOOP, headers=HUGE_HEADER, producer=producer)
    producer.publish.assert_not_called()
    with pytest.raises(ConnectionTrouble):
        app.send_task(tasks.NOOP, producer=producer)  # the same producer: a good task does reach it


def big_at(*indexes: int) -> batch.PublishPlan:
    def arguments(index: int) -> batch.TaskArguments:
        return ((), {"ms": "x" * MIB if index in indexes else 1})

    return PublishPlan(tasks.SLEEP_MS, 10, arguments)


def test_a_withdrawn_publish_gives_its_tag_back() -> None:
    window = ConfirmWindow(8)
    window.sent(0)
    tag = window.sent(1)
    assert window.withdraw(tag) == 1
    assert window.sent(2) == tag, "the broker numbers only what it received"
    assert window.settle(tag, multiple=True) == [0, 2]
    with pytest.raises(ValueError, match="only the latest publish"):
        window.withdraw(1)


def test_the_pipelined_batch_refuses_the_one_publishes_the_rest_and_never_reconnects() -> None:
    broker = FakeBroker()
    plan = big_at(3, 7)
    result = _pipelined(build_app(), plan, broker)
    assert [(r.index, r.task_id) for r in result.refused] == [(3, plan.task_id(3)), (7, plan.task_id(7))]
    assert all(r.reason.startswith("body of 1048") for r in result.refused)
    assert result.error is None
    assert not result.ok
    assert result.confirmed == 8
    assert set(result.task_ids) == {plan.task_id(i) for i in range(10)} - {plan.task_id(3), plan.task_id(7)}
    assert sorted(broker.stored) == sorted(result.task_ids)
    assert (broker.connections, result.failovers, result.republished) == (1, 0, 0), "no reconnect, no retry"


def _pipelined(app: Celery, plan: PublishPlan, broker: FakeBroker) -> batch.PublishResult:
    conn = FakeConnection(broker)
    with_fake_connection(app, conn)
    return publish_pipelined(app, plan, lambda _: None, window=4, clock=broker.clock, sleep=broker.clock.sleep)


def test_a_plan_refused_throughout_stops_after_max_refused() -> None:
    broker = FakeBroker()
    every = PublishPlan(tasks.SLEEP_MS, MAX_REFUSED + 50, lambda _i: ((), {"ms": "x" * MIB}))
    result = _pipelined(build_app(), every, broker)
    assert result.error is not None
    assert f"tasks refused (more than {MAX_REFUSED}): the plan itself is wrong" in result.error
    assert len(result.refused) == MAX_REFUSED + 1
    assert (broker.stored, broker.connections) == ([], 1)


def test_the_simple_publisher_refuses_the_one_and_publishes_the_rest() -> None:
    app = build_app()
    producer = CapturingProducer()

    @contextlib.contextmanager
    def acquire(*_: Any, **__: Any) -> Iterator[CapturingProducer]:
        yield producer

    app.producer_or_acquire = acquire  # type: ignore[assignment]
    plan = big_at(4)
    progress: list[int] = []
    result = publish_confirmed(app, plan, progress.append)
    assert [r.index for r in result.refused] == [4]
    assert len(producer.calls) == 9
    assert list(result.task_ids) == [plan.task_id(i) for i in range(10) if i != 4]
    assert progress[-1] == 9
    assert result.error is None
    assert not result.ok


def test_the_scheduler_exits_1_naming_every_refused_task(capsys: pytest.CaptureFixture[str]) -> None:
    def refusing(_app: Celery, plan: PublishPlan, on_progress: batch.ProgressCallback) -> batch.PublishResult:
        on_progress(plan.count - 1)
        refused = batch.RefusedTask(1, plan.task_id(1), "body of 2000000 bytes; allowed: at most 1048576 (1 MiB)")
        confirmed = batch.ConfirmedIds(plan, plan.count, [1])
        return batch.PublishResult(plan.count, confirmed, 0.1, refused=(refused,))

    assert scheduler_main(["--count", "3", "--task", "noop"], URLS_ENV, publisher=refusing) == 1
    err = capsys.readouterr().err
    assert "FAILED: 2/3 confirmed" in err
    assert "stopped by" not in err
    assert "1 refused, not sent:\nrefused task " in err
    assert "(plan index 1): body of 2000000 bytes; allowed: at most 1048576 (1 MiB)" in err


# ------------------------------------------- compressed deliveries: never decompressed ----


def compressed_bomb() -> amqp.Message:
    """100 MB of JSON once decompressed, ~100 KB as sent."""
    body = zlib.compress(b"[[" + b"0," * (50 * 1024 * 1024) + b"0], {}, {}]", 9)
    raw = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers={"task": tasks.NOOP, "id": "bomb-1", "compression": "application/x-gzip"},
    )
    raw.delivery_info = {"delivery_tag": 9, "consumer_tag": "ctag", "routing_key": "celery", "exchange": "celery"}
    return raw


def test_the_task_consumer_is_the_one_that_does_not_decompress() -> None:
    app = make_app(AppConfig(broker_urls=("amqp://u:p@a:5672//",), metrics_port=0), random.Random(0))
    assert issubclass(app.amqp.Consumer, UndecompressedConsumer)


def test_a_compressed_bomb_reaches_the_intake_compressed_and_is_dead_lettered_as_sent(consumer: Consumer) -> None:
    channel = FakeChannel()
    refuser = FakeRefuser(channel)
    consumer.refuser = refuser  # type: ignore[assignment]
    raw = compressed_bomb()
    kombu_consumer = UndecompressedConsumer(
        channel,  # type: ignore[arg-type]
        auto_declare=False,
        on_message=consumer.create_task_handler(),
    )
    with mock.patch("kombu.message.decompress", side_effect=AssertionError("decompressed")) as decompress:
        kombu_consumer._receive_callback(raw)
    decompress.assert_not_called()
    assert channel.log[0] == (
        "dead-letter",
        "header 'compression' is 'application/x-gzip'; allowed: none (uncompressed bodies only)",
    )
    assert channel.log[1] == ("ack", (9, False))
    [copy] = refuser.put_messages
    assert copy.body == raw.body, "kept compressed"
    assert copy.properties["application_headers"]["compression"] == "application/x-gzip", "with its header"


def test_an_uncompressed_delivery_takes_kombus_own_path(consumer: Consumer) -> None:
    channel = FakeChannel()
    consumer.refuser = FakeRefuser(channel)  # type: ignore[assignment]
    raw = amqp.Message(
        b"[[], {}, {}]",
        content_type="application/json",
        content_encoding="utf-8",
        application_headers={"task": tasks.NOOP, "id": "t-2"},
    )
    raw.delivery_info = {"delivery_tag": 3, "consumer_tag": "ctag", "routing_key": "celery", "exchange": "celery"}
    # What py-amqp's kombu channel does with a delivery (kombu.transport.pyamqp.Channel.message_to_python).
    channel.message_to_python = lambda message: PyAmqpMessage(message, channel=channel)  # type: ignore[attr-defined]
    kombu_consumer = UndecompressedConsumer(
        channel,  # type: ignore[arg-type]
        auto_declare=False,
        on_message=consumer.create_task_handler(),
    )
    kombu_consumer._receive_callback(raw)
    assert [r.name for r in consumer.requests] == [tasks.NOOP]  # type: ignore[attr-defined]
    assert channel.log == []
