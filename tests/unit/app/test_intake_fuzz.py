"""app.intake, fuzzed (hypothesis, derandomized): any delivery is accepted or refused with a reason,
never an exception; and nothing passes silently: every accepted delivery goes through Celery 5.7's
own task handler (the code that killed workers) without an error, as a request for that task.
"""

from __future__ import annotations

import json
import random
from contextlib import suppress
from typing import Any, ClassVar
from unittest import mock

import amqp
from celery.worker.consumer import Consumer as StockConsumer
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from kombu.transport.pyamqp import Message

from app import intake, tasks
from app.bootsteps import Consumer
from app.config import AppConfig
from app.factory import make_app
from app.intake import Accepted, Delivery, Refused

FUZZ = hyp_settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
"""Derandomized: the same examples on every run and machine."""

KNOWN = frozenset({tasks.NOOP, tasks.SLEEP_MS, tasks.COUNT})

# JSON values, and the AMQP table values py-amqp decodes headers into.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
amqp_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    max_leaves=10,
)
CELERY_HEADERS = (
    "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit", "root_id",
    "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting",
    "stamped_headers", "stamps", "compression", "lang",
)  # fmt: skip
header_values = (
    amqp_values
    | st.sampled_from([tasks.NOOP, "app.tasks.nope", "", " ", "2026-12-07T10:00:00+00:00", "nope"])
    | st.lists(st.none() | st.integers(-5, 100) | st.floats(allow_nan=True), max_size=3)
    | st.integers(-3, 3)
)


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    task = draw(st.sampled_from([tasks.NOOP, tasks.SLEEP_MS, "app.tasks.nope"]))
    headers: Any = {"lang": "py", "task": task, "id": draw(st.uuids()).hex, "retries": 0, "timelimit": [None, None]}
    overrides = draw(st.dictionaries(st.sampled_from(CELERY_HEADERS) | st.text(max_size=6), header_values, max_size=3))
    headers.update(overrides)
    form = draw(st.sampled_from(["table"] * 8 + ["none", "list"]))
    if form != "table":
        headers = None if form == "none" else [tasks.NOOP]
    shaped = st.tuples(
        st.lists(json_values, max_size=3) | json_values,
        st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        st.fixed_dictionaries({}, optional={"callbacks": json_values, "chord": json_values}) | json_values,
    ).map(list)
    payload = draw(shaped | shaped | json_values | st.lists(json_values, max_size=4))
    encoded = json.dumps(payload).encode()
    raw_body = draw(st.sampled_from([encoded] * 6 + [encoded[: len(encoded) // 2]]) | st.binary(max_size=64))
    body: bytes | str = raw_body
    if draw(st.booleans()):
        with suppress(UnicodeDecodeError):
            body = raw_body.decode()  # py-amqp hands over a UTF-8 body as text
    content_type = draw(st.sampled_from(["application/json"] * 4 + ["application/data", "text/plain", ""]) | st.none())
    encoding = draw(st.sampled_from(["utf-8"] * 4 + ["UTF-8", "binary", "latin-1"]) | st.none())
    return Delivery(body=body, content_type=content_type, content_encoding=encoding, headers=headers)


def stock_handler() -> tuple[Any, list[Any]]:
    """Celery 5.7's own task handler (not the intake's), on a consumer without a broker."""
    app = make_app(AppConfig(broker_urls=("amqp://u:p@a:5672//",), metrics_port=0), random.Random(0))
    requests: list[Any] = []
    consumer = Consumer(
        requests.append, app=app, hostname="h", pool=mock.Mock(), timer=mock.Mock(), controller=mock.MagicMock()
    )
    consumer.update_strategies()
    return StockConsumer.create_task_handler(consumer), requests


STOCK, REQUESTS = stock_handler()


class Channel:
    no_ack_consumers: ClassVar[set[str]] = set()

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        raise AssertionError(f"Celery acked an accepted delivery at once (tag {tag}, multiple {multiple})")

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        raise AssertionError(f"Celery rejected an accepted delivery (tag {tag}, requeue {requeue})")


def as_kombu(delivery: Delivery) -> Message:
    raw = amqp.Message(
        delivery.body,
        content_type=delivery.content_type,
        content_encoding=delivery.content_encoding,
        application_headers=delivery.headers,
    )
    raw.delivery_info = {"delivery_tag": 1, "consumer_tag": "c", "routing_key": "celery", "exchange": "celery"}
    return Message(raw, channel=Channel())


@FUZZ
@given(deliveries())
def test_every_delivery_is_accepted_or_refused_with_a_reason_and_never_passes_silently(delivery: Delivery) -> None:
    verdict = intake.check(delivery, KNOWN)
    if isinstance(verdict, Refused):
        event(f"refused: {verdict.reason.split(' ', 2)[:2]}")
        assert verdict.reason.strip(), "a refusal names its reason"
        assert len(verdict.reason) < 600, "a reason never echoes a large value"
        return
    assert isinstance(verdict, Accepted)
    event("accepted")
    assert verdict.task in KNOWN
    # The oracle: Celery's own handler takes it as a request for that task, without an exception.
    REQUESTS.clear()
    STOCK(as_kombu(delivery))
    if REQUESTS:  # an ETA/countdown one waits on the (mocked) timer instead
        [request] = REQUESTS
        assert (request.name, request.id) == (verdict.task, verdict.task_id)
        args, kwargs, _embed = json.loads(delivery.body)
        assert (list(request.args), dict(request.kwargs)) == (args, kwargs)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300), st.text(max_size=30) | st.none(), amqp_values)
def test_any_bytes_any_headers_never_raise(body: bytes | str, content_type: str | None, headers: Any) -> None:
    verdict = intake.check(Delivery(body, content_type, "utf-8", headers), KNOWN)
    assert isinstance(verdict, Accepted | Refused)
