"""Fakes for the worker's consumer without a broker: the channel kombu acks and rejects on, the
consumer's way into the dead-letter queue, a consumer on the project's app, a task delivery."""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

import amqp
from kombu.transport.pyamqp import Message

from app import tasks
from app.bootsteps import Consumer
from app.config import AppConfig
from app.factory import make_app
from app.intake import REASON_HEADER


class FakeChannel:
    """What kombu's Message calls to ack or reject."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.no_ack_consumers: set[str] = set()

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.log.append(("ack", (tag, multiple)))

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        self.log.append(("reject", (tag, requeue)))


class FakeRefuser:
    def __init__(self, channel: FakeChannel, fail: bool = False) -> None:
        self.channel = channel
        self.fail = fail
        self.put_messages: list[amqp.Message] = []

    def put(self, message: amqp.Message) -> None:
        if self.fail:
            raise TimeoutError("no confirm")
        self.channel.log.append(("dead-letter", message.properties["application_headers"][REASON_HEADER]))
        self.put_messages.append(message)

    def close(self) -> None:
        pass


def new_consumer(**config: Any) -> Consumer:
    """The project's consumer on a real app (``config``: more AppConfig fields), its strategies built;
    the requests it hands to the pool are collected in ``.requests``."""
    # No metrics exporter: a unit test opens no port.
    app = make_app(AppConfig(broker_urls=("amqp://u:p@a:5672//",), metrics_port=0, **config), random.Random(0))
    requests: list[Any] = []
    c = Consumer(
        requests.append, app=app, hostname="h", pool=mock.Mock(), timer=mock.Mock(), controller=mock.MagicMock()
    )
    c.update_strategies()
    c.requests = requests  # type: ignore[attr-defined]
    return c


def delivery(channel: FakeChannel, body: bytes, task: str = tasks.NOOP, **headers: Any) -> Message:
    raw = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers={"task": task, "id": "t-1", **headers},
    )
    raw.delivery_info = {"delivery_tag": 7, "consumer_tag": "ctag", "routing_key": "celery", "exchange": "celery"}
    return Message(raw, channel=channel)
