"""app.factory: what every publish of the project's app sends (confirm timeout, delays)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app import tasks
from app.config import from_env
from app.factory import MIN_DELAY_S, ConfirmedCelery, delayed, make_app
from contract import timing
from tests.unit.app.test_publish import URLS_ENV, CapturingProducer

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("countdown", "eta", "expected"),
    [
        (None, None, (None, None)),
        (0.3, None, (MIN_DELAY_S, None)),
        (1.5, None, (1.5, None)),
        (-2.0, None, (-2.0, None)),
        (0.0, None, (0.0, None)),
    ],
)
def test_countdowns_under_a_second_become_one_second(
    countdown: float | None, eta: datetime | None, expected: tuple[float | None, Any]
) -> None:
    assert delayed(countdown, eta, NOW) == expected


def test_an_eta_becomes_a_countdown_never_shorter_than_asked() -> None:
    countdown, eta = delayed(None, NOW + timedelta(seconds=7.25), NOW)
    assert eta is None
    assert countdown is not None
    assert 7.25 <= countdown < 7.26
    soon, _ = delayed(None, (NOW + timedelta(seconds=0.2)).isoformat(), NOW)
    assert soon == MIN_DELAY_S
    naive, _ = delayed(None, (NOW + timedelta(seconds=3)).replace(tzinfo=None), NOW)
    assert naive is not None
    assert naive >= 3, "a naive eta is UTC (enable_utc)"


def test_a_past_eta_is_left_to_run_now() -> None:
    past = NOW - timedelta(seconds=5)
    assert delayed(None, past, NOW) == (None, past)


def sent(countdown: float | None = None, **options: Any) -> dict[str, Any]:
    app = make_app(from_env(URLS_ENV), random.Random(0))
    assert isinstance(app, ConfirmedCelery)
    producer = CapturingProducer()
    app.send_task(tasks.NOOP, (), {}, countdown, producer=producer, **options)
    [(_, kwargs)] = producer.calls
    return kwargs


def test_every_publish_waits_for_its_confirm_with_a_bound() -> None:
    assert sent()["confirm_timeout"] == timing.PUBLISH_CONFIRM_TIMEOUT_S
    assert sent(confirm_timeout=3.0)["confirm_timeout"] == 3.0, "a caller's own bound wins"
    assert make_app(from_env(URLS_ENV)).tasks[tasks.NOOP].app.__class__ is ConfirmedCelery


def test_a_sub_second_countdown_goes_through_delayed_delivery_with_its_eta() -> None:
    """Stock Celery raises ValueError("countdown must be a positive number") for countdown=0.3."""
    before = datetime.now(UTC)
    kwargs = sent(0.3)
    assert kwargs["exchange"].name == "celery_delayed_27"
    # 28 bits of the delay in whole seconds, then the task queue's routing key: 1 s.
    assert kwargs["routing_key"] == "0." * 27 + "1.celery"
    eta = datetime.fromisoformat(kwargs["headers"]["eta"])
    assert eta >= before + timedelta(seconds=1), "never early"


def test_send_task_takes_at_most_its_leading_parameters_by_position() -> None:
    app = make_app(from_env(URLS_ENV))
    with pytest.raises(TypeError, match="by keyword"):
        app.send_task(tasks.NOOP, (), {}, None, None, "task-id")
