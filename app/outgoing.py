"""What a task message must be before it is sent: the publisher's half of the intake check.

The worker refuses a delivery whose headers or body pass the intake's limits (``app.intake``:
headers of at most :data:`~app.intake.MAX_HEADER_BYTES` as AMQP encodes them, nested at most
:data:`~app.intake.MAX_HEADER_DEPTH` deep, a body of at most :data:`~app.intake.MAX_BODY_BYTES`).
A publisher that sent one anyway would only fill the dead-letter queue; and headers past the
broker's ``frame_max`` (``contract.wire.AMQP_FRAME_MAX``, 128 KiB) never get that far: RabbitMQ
closes the connection on the oversized frame, kombu reads that as a lost connection, and the
publish retry policy sends the same frame again until it gives up with "Connection reset by
peer" (issue 28: 63 s for a 1 MiB header). So every task message this app publishes is
checked against the same functions first and refused with :class:`MessageRefused`.

The check sits in ``app.amqp.send_task_message`` (:func:`checked`), the one function every
Celery publish ends in whatever its producer: ``.delay()``, ``apply_async``, ``send_task``,
``retry()``, a chain's next task, and ``app.publish.publish_pipelined``. A
``before_task_publish`` handler would not do: Celery's ``Signal.send`` logs a receiver's
exception and goes on (``celery/utils/dispatch/signal.py``), so the message would still be sent.
:class:`MessageRefused` is a ``ValueError``, no connection or channel error, so neither kombu's
``Connection.ensure`` nor Celery's publish retry policy retries it: the call raises at once and
nothing was written to the socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kombu.serialization import dumps

from app.intake import body_size_problem, headers_problem

Sender = Callable[..., Any]
"""Celery's ``send_task_message(producer, name, message, **options)``."""


class MessageRefused(ValueError):
    """A task message the worker would refuse, or the broker could not take: not sent."""

    def __init__(self, task_name: str, task_id: str, reason: str) -> None:
        super().__init__(
            f"task {task_name} id {task_id} not sent: {reason} (app.intake's limits, shared by the worker)"
        )
        self.task_name = task_name
        self.task_id = task_id
        self.reason = reason


def problem(headers: Mapping[str, Any], body: object, serializer: str, compression: str | None) -> str | None:
    """Why a task message of ``headers`` and ``body`` (before serializing) must not be sent, or None."""
    why = headers_problem(headers, whole=True)
    if why is not None:
        return why
    if compression:
        # The worker refuses every compressed body before decompressing it (app.bootsteps).
        return f"compression {compression!r}; allowed: none (the worker refuses compressed bodies)"
    # Serialized once more to be measured: a few microseconds for a task's arguments, against a
    # round trip to the broker per publish window.
    _content_type, _encoding, data = dumps(body, serializer=serializer)
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    return body_size_problem(size)


def checked(send: Sender, default_serializer: str, default_compression: str | None) -> Sender:
    """Celery's ``send_task_message`` ``send``, refusing (:class:`MessageRefused`) what :func:`problem` names."""

    def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
        headers = {**message.headers, **(options.get("headers") or {})}
        why = problem(
            headers,
            message.body,
            options.get("serializer") or default_serializer,
            options.get("compression") or default_compression,
        )
        if why is not None:
            raise MessageRefused(name, str(headers.get("id")), why)
        return send(producer, name, message, **options)

    return send_task_message
