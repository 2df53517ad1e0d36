"""Build a configured Celery app without reading the process environment."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, Final

from celery import Celery
from celery.result import AsyncResult

import app.tasks  # noqa: F401  (registers the shared tasks on every app)
from app import outgoing
from app.bootsteps import HealthStep, MetricsStep, UndecompressedConsumer
from app.config import AppConfig, celery_settings
from app.tls import TlsAwareAMQP
from contract import timing

APP_NAME: Final = "ha-celery"

MIN_DELAY_S: Final = 1.0
"""Shortest delay native delayed delivery can express: its levels count whole seconds."""


def delayed(countdown: float | None, eta: datetime | str | None, now: datetime) -> tuple[float | None, Any]:
    """``(countdown, eta)`` as Celery's quorum-queue delayed delivery can send them.

    Celery routes a delayed task by ``int(countdown)`` whole seconds and refuses a positive
    delay under one second (kombu ``calculate_routing_key``: "countdown must be a positive
    number"); the worker then holds the message until its exact ``eta`` header. A future
    delay is therefore sent as a countdown of at least one second: never early, at most a
    second late for a sub-second one. A past or absent delay is left as it was.
    """
    if eta is not None and countdown is None:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        remaining = (when - now).total_seconds()
        if remaining <= 0:
            return None, eta
        countdown = remaining + _ETA_ROUNDING_S
        return max(countdown, MIN_DELAY_S), None
    if countdown is not None and 0 < countdown < MIN_DELAY_S:
        return MIN_DELAY_S, eta
    return countdown, eta


_ETA_ROUNDING_S: Final = 1e-3
"""An eta converted to a countdown is recomputed from a later clock reading; this keeps the
recomputed eta header at or after the one asked for."""


class ProjectAMQP(TlsAwareAMQP):
    """Celery's AMQP helper as this app uses it: every connection verifies its own broker host over
    TLS (``app.tls``); every task message is checked against the intake's limits before it is sent
    (``app.outgoing``: an oversized one raises ``MessageRefused``, never retried); the task
    consumer hands a compressed delivery to the intake undecompressed (``UndecompressedConsumer``)."""

    Consumer = UndecompressedConsumer

    def _create_task_sender(self) -> outgoing.Sender:
        # What Celery's cached ``send_task_message`` is made by (celery/app/amqp.py); not in the stubs.
        stock = super()._create_task_sender()  # type: ignore[misc]
        conf = self.app.conf
        return outgoing.checked(stock, conf.task_serializer, conf.task_compression)


class ConfirmedCelery(Celery):
    """The project's app: every publish (``.delay()``, ``apply_async``, ``send_task``, ``retry()``)
    waits for the broker's confirm at most ``timing.PUBLISH_CONFIRM_TIMEOUT_S``, and any delay
    goes out in the form delayed delivery supports (:func:`delayed`).

    A nack or a confirm timeout is a recoverable connection error for kombu (py-amqp's
    ``MessageNacked``, ``socket.timeout``): the publish retry policy reconnects to the next
    broker URL and publishes again (same task id), and raises once the policy is spent. So a
    call returns only with the message confirmed, and never blocks without bound.
    """

    amqp_cls = "app.factory:ProjectAMQP"
    """TLS per broker host, task messages checked before they are sent (see :class:`ProjectAMQP`)."""
    control_cls = "app.failover:Control"
    """Remote control with a pidbox queue per connection (see app.failover)."""
    task_cls = "app.failures:KeepingTask"
    """Every task's final failure goes into the dead-letter queue with its reason (see app.failures)."""

    def send_task(self, name: str, *args: Any, **options: Any) -> AsyncResult[Any]:
        if len(args) > len(_LEADING):
            raise TypeError(f"send_task takes {', '.join(_LEADING)} by position, the rest by keyword")
        options.update(zip(_LEADING, args, strict=False))
        options.setdefault("confirm_timeout", float(timing.PUBLISH_CONFIRM_TIMEOUT_S))
        options["countdown"], options["eta"] = delayed(options.get("countdown"), options.get("eta"), datetime.now(UTC))
        return super().send_task(name, **options)


_LEADING: Final = ("args", "kwargs", "countdown", "eta")
"""Celery's send_task parameters a caller may pass by position."""


def make_app(config: AppConfig, rng: random.Random | None = None) -> Celery:
    """A Celery app for ``config`` with this project's tasks, the health and the metrics bootsteps.

    ``rng`` orders the broker failover list; by default a fresh, OS-seeded one so
    every process picks its own first node. Nothing connects here.
    """
    celery = ConfirmedCelery(APP_NAME, set_as_current=True)
    celery.conf.update(celery_settings(config, rng or random.Random()))
    celery.steps["consumer"].add(HealthStep)
    celery.steps["consumer"].add(MetricsStep)
    return celery
