"""The broker's own ceiling for consumers: a plain AMQP consumer, no Celery.

``consume_raw`` drains the task queue with py-amqp (through kombu's connection, the same
transport the worker uses): ``basic.qos`` with a prefetch count, ``basic.consume``, and an ack
per message, or one ``basic.ack`` with ``multiple`` for every ``ack_every`` messages. Nothing is
decoded or executed: the rate is what the broker can deliver and take acks for on this cluster,
so the Celery worker's rate divided by it is what Celery itself costs per message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from app.publish import publisher_connection
from contract.wire import QUEUE_NAME

CONSUME_TIMEOUT_S = 120.0
"""Give up when the queue did not deliver everything within this long."""


@dataclass(frozen=True)
class ConsumeRun:
    count: int
    prefetch: int
    ack_every: int
    """1: ``basic.ack`` per message; N > 1: one ``basic.ack`` with ``multiple`` per N messages."""
    received: int
    per_s: float
    """Steady rate: the middle 80 % of deliveries (first and last tenth left out), as for workers."""

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "per_s": round(self.per_s, 1)}


def steady_rate(stamps: list[float]) -> float:
    """Events per second between the 10th and the 90th percentile timestamp."""
    ordered = sorted(stamps)
    if len(ordered) < 10:
        return 0.0
    lo, hi = ordered[len(ordered) // 10], ordered[(len(ordered) * 9) // 10]
    span = hi - lo
    return (len(ordered) * 0.8) / span if span > 0 else 0.0


def consume_raw(app: Celery, count: int, *, prefetch: int, ack_every: int = 1) -> ConsumeRun:
    """Take ``count`` messages off the task queue (which must hold them) and ack them."""
    if ack_every < 1 or prefetch < ack_every:
        raise ValueError(f"need 1 <= ack_every <= prefetch, got ack_every={ack_every}, prefetch={prefetch}")
    stamps: list[float] = []
    last_tag = acked_tag = 0

    with publisher_connection(app) as conn:
        conn.ensure_connection(max_retries=3)
        channel: Any = conn.channel()
        channel.basic_qos(0, prefetch, False)

        def on_message(message: Any) -> None:
            nonlocal last_tag, acked_tag
            stamps.append(time.monotonic())
            last_tag = message.delivery_tag
            if ack_every == 1 or len(stamps) % ack_every == 0:
                channel.basic_ack(last_tag, multiple=ack_every > 1)
                acked_tag = last_tag

        consumer_tag = channel.basic_consume(QUEUE_NAME, callback=on_message)
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(stamps) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the raw consumer got {len(stamps)} of {count} messages in {CONSUME_TIMEOUT_S}s")
            try:
                conn.drain_events(timeout=1.0)
            except TimeoutError:
                continue
        channel.basic_cancel(consumer_tag)
        if last_tag != acked_tag:
            channel.basic_ack(last_tag, multiple=True)
    return ConsumeRun(count, prefetch, ack_every, len(stamps), steady_rate(stamps))
