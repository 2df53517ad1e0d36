"""Dead-lettered tasks: list what is in ``celery.dlq`` and replay it to the queue it died in.

    python -m app.dlq list [--limit N]
    python -m app.dlq replay [--limit N] [--task NAME]

Configuration comes from the same environment as the worker and the scheduler
(``BROKER_URLS`` or ``BROKER_HOSTS`` with ``BROKER_USER``/``BROKER_PASSWORD``; see
``app.config``). Exit status: 0 done, 1 a replay failed (the message stays in the dead-letter
queue), 2 bad arguments or configuration.

What lands in ``celery.dlq``, and why
-------------------------------------
The broker policy gives the task queue a dead-letter exchange (``celery.dlx``, fanout, bound to
the quorum queue ``celery.dlq``) and a delivery limit (``contract.wire.DELIVERY_LIMIT``, 20). Most
copies are put here by the worker itself, with why; the broker's own dead-lettering (``x-death``)
is what is left when the worker could not do that.

``failed x<n>`` (no ``x-death``; the headers ``x-ha-celery-reason``, ``-queue``, ``-refused-at``,
``-outcome: failed``, ``-delivery-count``)
    The task ran and failed for good (``app.failures``), n failed deliveries in all. It raised
    (the reason: the exception's type and message and the tail of its traceback; the app never
    requeues a raise), or on the delivery that used up the delivery limit its pool process died
    (``worker lost: ...`` with Celery's words, e.g. ``signal 9 (SIGKILL)``: OOM kill, segfault,
    ``os._exit``; before that ``task_reject_on_worker_lost`` requeues it) or it hit its hard time
    limit (``hard time limit <N> s exceeded``; before that ``task_acks_on_timeout=False`` requeues
    it). The worker publishes a copy here, waits for the confirm, then acks the delivery.
``refused`` (no ``x-death``; the same headers, ``-outcome: refused`` or none)
    The worker's intake (``app.intake``) refused the delivery before Celery saw it: a body that is
    not UTF-8 JSON of the protocol-2 shape, another content type or encoding, headers that are
    missing, mistyped or too large, a body over the size limit, a task this worker does not
    register, or a delivery Celery could not decode or failed on. Copied and acked the same way.
    The task never ran.
``rejected`` (``x-death``)
    The task raised or was refused, and the worker's copy was not confirmed: the worker rejects
    the delivery without requeue (as Celery does with ``task_acks_on_failure=False``) and the
    broker dead-letters it at once. The reason is in the worker's log.
``delivery_limit`` (``x-death``)
    The message was returned to the queue more often than the delivery limit without the worker
    keeping it: a worker whose connection died with the task unacked, or a final crash or time
    limit whose copy was not confirmed (the worker then requeues it, as before, and the broker
    dead-letters it). A task that keeps doing that is poison; after the limit it is kept here
    instead of looping.

Successful tasks never come here, nor do ``task.retry()`` calls (a retry is a new publish).

How RabbitMQ 4.3 counts (measured on 4.3.6 quorum queues, ``x-delivery-count``)
---------------------------------------------------------------------------------
Counted as a failed delivery: ``basic.reject`` with requeue, and a channel or connection that
closes (a crashed consumer) with the message unacked. *Not* counted: ``basic.nack`` with
requeue, ``basic.recover``. The message is dead-lettered by the return that takes the count past
the limit, so a task that always crashes runs ``delivery-limit + 1`` times.

The count travels with the message into ``celery.dlq``, which the task policy excludes. The
broker definitions declare it with ``x-delivery-limit: -1`` (no limit), but a cluster whose
``celery.dlq`` predates that keeps the 4.x defaults (queue arguments never change in place): a
delivery limit of 20 and no dead-letter exchange. There a ``delivery_limit`` message arrives
already past the limit, and the first time it is handed back to that queue *in any way*, even
by an uncounted ``basic.nack``, the broker drops it for good (measured: ``basic.get`` +
``basic.nack(requeue=True)`` made it vanish). This tool therefore never hands a dead-letter
message back, whatever the queue's arguments: to leave one in the queue it
publishes a copy to the tail of ``celery.dlq`` (same body, properties and ``x-death``, without
the delivery counters, stamped with the run's id), waits for the confirm, then acks the
original. When a copy of this run comes up again it is held (taken, not acked), and the run
ends when nothing is ready any more: every message was taken once, whatever order the broker
hands them out in; the held copies then go back with ``basic.nack`` (each a fresh copy, count
0). Ending at the first copy met instead lost messages from the listing: RabbitMQ 4.3 delivers a
quorum queue by priority first, and a copy of a message without a priority overtook the Celery
messages (priority 0) not yet seen (measured on the booted plan: ``list`` showed 2 of the 7
messages the queue held, the two without a priority, again and again; and of three messages
published priority 0, none, 0, 4.3.6 hands out the one without a priority first). Listing rewrites the
queue in place; the order may change (held copies go back to the head). Killed between a copy's confirm and
the original's ack, a message is listed twice afterwards (same task id); killed before the
confirm, the original goes back by the connection's close, which is the one remaining way to
lose a ``delivery_limit`` message on a queue without ``x-delivery-limit: -1`` (measured: -1 is
no limit on 4.3.6).

Replay
------
``replay`` goes through the queue once with ``basic.get``. For each message of the chosen task
(``--task``, default all): publish a copy to the queue of its latest ``x-death`` entry (a refused
one: the queue it was refused from, where the intake checks it again) through
the default exchange (exactly that queue, whatever the original exchange's bindings), same
body, properties and task id, headers without the broker's bookkeeping (``x-death``,
``x-first-death-*``, ``x-last-death-*``, ``x-delivery-count``, ``x-acquired-count``, the
intake's ``x-ha-celery-*``), so its
delivery count starts fresh; wait for the publisher confirm (``mandatory``: a copy that routes
nowhere counts as failed); only then ack the dead-letter message. Killed at any point, nothing
is lost: at worst the one message between its confirm and its ack is replayed twice, with the
same task id (tasks are idempotent: at-least-once delivery). Messages of other tasks, ones whose
copy was not confirmed or not routed, and tasks replayed in this run that died again already,
are kept as above. (py-amqp has no client-side ``basic_nack``: the one nack this tool sends, for
its own fresh copy when a run wraps round, goes out with ``send_method``.)
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, cast

import amqp
from amqp import spec
from amqp.exceptions import AMQPError, MessageNacked
from kombu.exceptions import OperationalError

from app.config import ConfigError, check_files, from_env, ssl_options
from app.intake import DELIVERY_COUNT_HEADER, OUTCOME_HEADER, QUEUE_HEADER, REASON_HEADER, REFUSED_AT_HEADER
from app.tls import PerHostTlsConnection
from contract import timing
from contract.wire import DEAD_LETTER_QUEUE

ROTATION_HEADER: Final = "x-ha-celery-kept-by"
"""Stamped on the copy a run puts back at the tail of the dead-letter queue (its run id): meeting
its own stamp again tells the run it has been through the whole queue."""
COUNT_HEADERS: Final = frozenset({"x-delivery-count", "x-acquired-count"})
"""The broker's delivery counters: a kept copy drops them (the broker counts the copy afresh)."""
WORKER_HEADERS: Final = frozenset(
    {REASON_HEADER, QUEUE_HEADER, REFUSED_AT_HEADER, OUTCOME_HEADER, DELIVERY_COUNT_HEADER}
)
"""The stamps on a copy the worker put into the dead-letter queue itself (``app.intake``)."""
BOOKKEEPING_HEADERS: Final = frozenset({"x-death", ROTATION_HEADER, *COUNT_HEADERS, *WORKER_HEADERS})
"""Headers the broker writes while dead-lettering and redelivering, and the worker's stamps; a
replayed copy drops them."""
BOOKKEEPING_PREFIXES: Final = ("x-first-death-", "x-last-death-")
DEFAULT_EXCHANGE: Final = ""
"""Routes by queue name: a replay reaches exactly the queue the task died in."""


@dataclass(frozen=True)
class Death:
    """One entry of the ``x-death`` header: a message's deaths in one queue for one reason."""

    queue: str
    reason: str
    """``rejected``, ``delivery_limit``, ``expired`` or ``maxlen``."""
    count: int
    """How often it died in ``queue`` for ``reason``."""
    exchange: str
    routing_keys: tuple[str, ...]
    time: datetime | None
    """When it (last) died there, UTC (naive, as py-amqp decodes AMQP timestamps)."""


class Outcome(StrEnum):
    """Why the worker itself put a copy into the dead-letter queue (``OUTCOME_HEADER``)."""

    REFUSED = "refused"
    """The intake refused the delivery (``app.intake``): the task never ran."""
    FAILED = "failed"
    """The task ran and failed for good (``app.failures``): it raised, or its pool process died or
    it hit its hard time limit on the delivery that used up the delivery limit."""


@dataclass(frozen=True)
class Refusal:
    """Why and where the worker put a delivery into the dead-letter queue itself: refused by the
    intake (``app.intake``) or failed for good (``app.failures``)."""

    reason: str
    queue: str
    """The queue it came from; ``replay`` sends it back there."""
    time: datetime | None
    """When (naive UTC, as py-amqp decodes AMQP timestamps)."""
    outcome: Outcome = Outcome.REFUSED
    delivery_count: int = 0
    """The broker's count of the delivery's earlier failed deliveries (``x-delivery-count``)."""

    @property
    def why(self) -> str:
        """``refused``, or ``failed x<n>`` with n the failed deliveries, this one included."""
        if self.outcome is Outcome.FAILED:
            return f"{self.outcome} x{self.delivery_count + 1}"
        return str(self.outcome)


@dataclass(frozen=True)
class DeadTask:
    """What ``list`` shows of one dead-lettered message."""

    task_id: str | None
    task_name: str | None
    deaths: tuple[Death, ...]
    """Newest first, as the broker keeps them."""
    refusal: Refusal | None = None
    """Set when the worker put the copy there itself (refused, or failed with its reason) instead of
    the broker dead-lettering the delivery."""

    @property
    def latest(self) -> Death | None:
        return self.deaths[0] if self.deaths else None

    @property
    def queue(self) -> str | None:
        """The queue it died in (latest death) or was refused from; None if unknown."""
        if self.latest is not None:
            return self.latest.queue
        return self.refusal.queue if self.refusal is not None else None

    @property
    def why(self) -> str:
        """``rejected x1``, ``delivery_limit x21``, ``refused``, ``failed x21``, or ``-``."""
        if self.latest is not None:
            return f"{self.latest.reason} x{self.latest.count}"
        return self.refusal.why if self.refusal is not None else "-"

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the latest death or the refusal (``now`` naive UTC), None if unknown."""
        latest = self.latest
        when = latest.time if latest is not None else self.refusal.time if self.refusal is not None else None
        if when is None:
            return None
        return (now - when).total_seconds()


def parse_x_death(headers: Mapping[str, Any] | None) -> tuple[Death, ...]:
    """The ``x-death`` entries of ``headers``, newest first; malformed entries are skipped."""
    raw = (headers or {}).get("x-death")
    if not isinstance(raw, list):
        return ()
    deaths: list[Death] = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        queue, reason = entry.get("queue"), entry.get("reason")
        if not isinstance(queue, str) or not isinstance(reason, str):
            continue
        count = entry.get("count")
        keys = entry.get("routing-keys")
        when = entry.get("time")
        exchange = entry.get("exchange")
        deaths.append(
            Death(
                queue=queue,
                reason=reason,
                count=count if isinstance(count, int) and not isinstance(count, bool) else 0,
                exchange=exchange if isinstance(exchange, str) else "",
                routing_keys=tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else (),
                time=when if isinstance(when, datetime) else None,
            )
        )
    return tuple(deaths)


def describe(properties: Mapping[str, Any]) -> DeadTask:
    """A ``DeadTask`` from an AMQP message's properties (Celery protocol 2: id and task in headers)."""
    headers = properties.get("application_headers") or {}
    task_id = headers.get("id") or properties.get("correlation_id")
    task_name = headers.get("task")
    return DeadTask(
        task_id=task_id if isinstance(task_id, str) else None,
        task_name=task_name if isinstance(task_name, str) else None,
        deaths=parse_x_death(headers),
        refusal=parse_refusal(headers),
    )


def parse_refusal(headers: Mapping[str, Any]) -> Refusal | None:
    """The worker's stamps in ``headers`` (``app.intake``), None if it has none."""
    reason, queue, when = headers.get(REASON_HEADER), headers.get(QUEUE_HEADER), headers.get(REFUSED_AT_HEADER)
    if not isinstance(reason, str):
        return None
    outcome = headers.get(OUTCOME_HEADER)
    return Refusal(
        reason=reason,
        queue=queue if isinstance(queue, str) else "",
        time=when if isinstance(when, datetime) else None,
        outcome=Outcome.FAILED if outcome == Outcome.FAILED else Outcome.REFUSED,
        delivery_count=delivery_count(headers, DELIVERY_COUNT_HEADER),
    )


def delivery_count(headers: Mapping[str, Any] | None, name: str = "x-delivery-count") -> int:
    """The count in header ``name`` (the broker's ``x-delivery-count`` by default), 0 if absent or not a count.

    RabbitMQ 4.3 quorum queues put ``x-delivery-count`` on every redelivery after a failed one:
    the number of failed deliveries so far (``basic.reject`` with requeue, a channel closed with
    the message unacked; not ``basic.nack``). A first delivery has none.
    """
    raw = (headers or {}).get(name)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else 0


def replay_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """``headers`` without the broker's dead-letter and delivery-count bookkeeping."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if key not in BOOKKEEPING_HEADERS and not key.startswith(BOOKKEEPING_PREFIXES)
    }


def replay_copy(message: amqp.Message) -> amqp.Message:
    """The message to publish for ``message``: same body and properties, headers cleaned."""
    properties = {k: v for k, v in message.properties.items() if k != "application_headers"}
    headers = replay_headers(message.properties.get("application_headers"))
    return amqp.Message(message.body, application_headers=headers, **properties)


def format_row(task: DeadTask, now: datetime) -> str:
    """One ``list`` entry: task name, task id, reason x count, original queue, age; a delivery the
    worker put there itself gets its reason below, indented (``refused: ...`` or ``failed: ...``)."""
    age = task.age_s(now)
    row = (
        f"{task.task_name or '-':<32} {task.task_id or '-':<36} {task.why:<18} {task.queue or '-':<12} "
        f"{'-' if age is None else _human_age(age)}"
    )
    if task.refusal is not None:
        reason = task.refusal.reason.replace("\n", "\n      ")  # a traceback's lines stay under their entry
        row += f"\n    {task.refusal.outcome}: {reason}"
    return row


def _human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


# --- talking to the broker -----------------------------------------------------------------------


def _nack_requeue(channel: amqp.Channel, delivery_tag: int, multiple: bool) -> None:
    # basic.nack(requeue=True): RabbitMQ 4.3 does not count it (module doc); py-amqp only
    # receives Nack (publisher confirms) and has no method to send it, hence the raw frame.
    channel.send_method(spec.Basic.Nack, "Lbb", (delivery_tag, multiple, True))


@contextmanager
def dead_letter_channel(broker_urls: Sequence[str], tls: dict[str, object] | bool = False) -> Iterator[amqp.Channel]:
    """A channel on the first broker node that answers, bodies left as bytes.

    ``tls``: py-amqp's ssl options (app.config.ssl_options), each node verified by its own name.
    """
    # kombu reads ";"-separated URLs as a failover list and connects to the first that answers.
    connection = PerHostTlsConnection(";".join(broker_urls), connect_timeout=timing.BROKER_CONNECT_TIMEOUT_S, ssl=tls)
    try:
        connection.ensure_connection(max_retries=len(broker_urls))
        channel = connection.connection.channel()
        if not isinstance(channel, amqp.Channel):
            raise TypeError(f"expected a py-amqp channel, got {type(channel).__name__}")
        # Republish exactly the bytes that were dead-lettered, whatever their content_encoding.
        channel.auto_decode = False
        yield channel
    finally:
        connection.release()


def _ready(channel: amqp.Channel, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: raises NotFound if the queue does not exist)."""
    declared = channel.queue_declare(queue, passive=True)
    if declared is None:
        raise RuntimeError(f"no declare-ok for {queue!r}")
    return declared[1]


def _tag(message: amqp.Message) -> int:
    return int(message.delivery_info["delivery_tag"])


def _headers(message: amqp.Message) -> dict[str, Any]:
    return dict(message.properties.get("application_headers") or {})


def _return_handlers(channel: amqp.Channel) -> set[Callable[[Exception, str, str, amqp.Message], None]]:
    # py-amqp calls these for a basic.return (mandatory publish that routed nowhere); not in its stubs.
    handlers: set[Callable[[Exception, str, str, amqp.Message], None]] = cast(Any, channel).events["basic_return"]
    return handlers


class ConfirmedPublisher:
    """Publishes on one channel to exactly one queue (the default exchange), ``mandatory`` and
    with publisher confirms: :meth:`publish` returns only once the broker has the message."""

    def __init__(self, channel: amqp.Channel, confirm_timeout: float = timing.PUBLISH_CONFIRM_TIMEOUT_S) -> None:
        self.channel = channel
        self.confirm_timeout = confirm_timeout
        self._returned: list[str] = []

    def __enter__(self) -> ConfirmedPublisher:
        _return_handlers(self.channel).add(self._on_return)
        return self

    def __exit__(self, *exc: object) -> None:
        _return_handlers(self.channel).discard(self._on_return)

    def _on_return(self, exc: Exception, _exchange: str, routing_key: str, _message: amqp.Message) -> None:
        self._returned.append(f"unroutable to {routing_key!r} ({exc})")

    def publish(self, message: amqp.Message, queue: str) -> str | None:
        """Publish ``message`` to ``queue`` and wait for its confirm; None if confirmed and routed, else why not.

        A confirm that does not come in ``confirm_timeout`` raises (``socket.timeout``), as do
        connection errors: the caller decides, and acks nothing.
        """
        self._returned.clear()
        try:
            # Publisher confirms: selected on first use, then each publish waits for its ack.
            self.channel.basic_publish_confirm(
                message,
                exchange=DEFAULT_EXCHANGE,
                routing_key=queue,
                mandatory=True,
                confirm_timeout=self.confirm_timeout,
            )
        except MessageNacked:
            self._returned.append("nacked by the broker")
        return "; ".join(self._returned) or None


class _Mover:
    """Moves dead-letter messages with confirmed copies, never returning one to its queue.

    A run takes every ready message once. Its own copies are held (taken, not acked) when they
    come up, not taken as the end of the run: a copy published to the tail is not always
    delivered last (RabbitMQ 4.3 quorum queues deliver by priority first, so a copy can overtake
    messages not yet seen). The run ends when nothing is ready any more; then the held copies go
    back with ``basic.nack`` (fresh copies: a count of 0, safe under any delivery limit).
    """

    def __init__(self, channel: amqp.Channel, queue: str) -> None:
        self.channel = channel
        self.queue = queue
        self.run_id = uuid.uuid4().hex
        self._publisher = ConfirmedPublisher(channel)
        self._held: list[int] = []

    def __enter__(self) -> _Mover:
        _ready(self.channel, self.queue)  # fails early, and clearly, if the queue does not exist
        self._publisher.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._publisher.__exit__(exc_type, *exc)
        held, self._held = self._held, []
        if exc_type is not None:
            return  # the connection is closing: the broker returns what this run held
        for tag in held:
            _nack_requeue(self.channel, tag, multiple=False)

    def publish(self, message: amqp.Message, queue: str) -> str | None:
        """Publish ``message`` to ``queue`` and wait for its confirm; None if confirmed and routed, else why not."""
        return self._publisher.publish(message, queue)

    def next(self) -> amqp.Message | None:
        """The next message not yet seen in this run; None once nothing is ready."""
        while (message := self.channel.basic_get(self.queue)) is not None:
            if _headers(message).get(ROTATION_HEADER) != self.run_id:
                return message
            self._held.append(_tag(message))  # our own copy: seen already, held until the run ends
        return None

    def keep(self, message: amqp.Message) -> None:
        """Leave ``message`` in the dead-letter queue: a confirmed copy at its tail, then ack the original."""
        headers = {k: v for k, v in _headers(message).items() if k not in COUNT_HEADERS}
        headers[ROTATION_HEADER] = self.run_id
        properties = {k: v for k, v in message.properties.items() if k != "application_headers"}
        why = self.publish(amqp.Message(message.body, application_headers=headers, **properties), self.queue)
        if why is not None:
            raise RuntimeError(f"could not keep a message in {self.queue!r}: {why}")
        self.channel.basic_ack(_tag(message))


REASON_MAX_CHARS: Final = 1000
"""A reason is cut to this in its header (``app.intake`` and ``app.failures`` keep theirs shorter)."""


def refused_copy(
    body: bytes | str,
    properties: Mapping[str, Any],
    reason: str,
    queue: str,
    now: datetime,
    *,
    outcome: Outcome = Outcome.REFUSED,
) -> amqp.Message:
    """What the worker puts into the dead-letter queue for a delivery it refused or that failed for
    good: the same body and properties, the original headers (whatever they were; not a table:
    dropped) without the broker's delivery counters, and the worker's stamps (reason, queue,
    time, outcome, the delivery count it had), persistent."""
    original = properties.get("application_headers")
    headers = dict(original) if isinstance(original, Mapping) else {}
    count = delivery_count(headers)
    # The broker counts a published copy afresh; its count is kept in our own header instead.
    for name in COUNT_HEADERS:
        headers.pop(name, None)
    headers[REASON_HEADER] = reason[:REASON_MAX_CHARS]
    headers[QUEUE_HEADER] = queue
    headers[REFUSED_AT_HEADER] = now.replace(tzinfo=None)
    headers[OUTCOME_HEADER] = str(outcome)
    headers[DELIVERY_COUNT_HEADER] = count
    kept = {k: v for k, v in properties.items() if k != "application_headers"}
    kept["delivery_mode"] = 2
    return amqp.Message(body, application_headers=headers, **kept)


class Refuser:
    """The worker's way into the dead-letter queue: :meth:`put` returns once the broker confirmed
    the copy, or raises.

    Its own connection, not the consumer's: waiting for a confirm on the consumer's connection
    would read that connection's next deliveries and hand them to Celery from inside this one.
    Opened at the first refusal, without heartbeats (it idles between refusals; a dead one is
    found by the next publish, which then reconnects once). Each wait blocks the worker's main
    loop, so it is bounded by ``confirm_timeout``.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        queue: str = DEAD_LETTER_QUEUE,
        confirm_timeout: float = float(timing.BROKER_HEARTBEAT_S),
    ) -> None:
        self._connect = connect
        self.queue = queue
        self.confirm_timeout = confirm_timeout
        self._connection: Any = None
        self._publisher: ConfirmedPublisher | None = None

    def put(self, message: amqp.Message) -> None:
        """Publish ``message`` to the dead-letter queue and wait for the confirm (one reconnect on a
        connection error); raises if it is not confirmed and routed."""
        for attempt in (1, 2):
            try:
                why = self._open().publish(message, self.queue)
            except Exception:
                self.close()
                if attempt == 2:
                    raise
                continue
            if why is not None:
                raise RuntimeError(f"{self.queue} did not take the worker's copy: {why}")
            return

    def _open(self) -> ConfirmedPublisher:
        if self._publisher is None:
            connection = self._connect()
            # Every node of the failover list once, no sleeping between them: this blocks the main loop.
            connection.ensure_connection(max_retries=len(getattr(connection, "alt", ())) or 1, interval_start=0)
            channel = connection.connection.channel()
            self._connection = connection
            self._publisher = ConfirmedPublisher(channel, self.confirm_timeout).__enter__()
        return self._publisher

    def close(self) -> None:
        """Drop the connection (the next :meth:`put` opens a new one)."""
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            # Already broken: nothing to close cleanly, and nothing was acked on it.
            with suppress(Exception):
                connection.release()


def list_dead(channel: amqp.Channel, queue: str = DEAD_LETTER_QUEUE, limit: int | None = None) -> list[DeadTask]:
    """The messages in ``queue`` (up to ``limit``), oldest first, all left in the queue (see module doc)."""
    found: list[DeadTask] = []
    with _Mover(channel, queue) as mover:
        while limit is None or len(found) < limit:
            message = mover.next()
            if message is None:
                break
            found.append(describe(message.properties))
            mover.keep(message)
    return found


@dataclass(frozen=True)
class ReplayResult:
    replayed: tuple[DeadTask, ...]
    skipped: int
    """Messages left in the queue: of other tasks (``--task``), or replayed in this run already."""
    failed: tuple[tuple[DeadTask, str], ...]
    """Messages not replayed (no x-death, unroutable, nacked), with why; left in the queue."""


def replay(
    channel: amqp.Channel,
    *,
    queue: str = DEAD_LETTER_QUEUE,
    limit: int | None = None,
    task_name: str | None = None,
    on_replayed: Callable[[DeadTask], None] = lambda _task: None,
) -> ReplayResult:
    """Move up to ``limit`` dead-lettered tasks (of ``task_name``, if given) back to their queues.

    ``channel`` is put in confirm mode. See the module doc for the order of publish, confirm
    and ack that makes a killed replay lose nothing.
    """
    replayed: list[DeadTask] = []
    failed: list[tuple[DeadTask, str]] = []
    skipped = 0
    done: set[str | None] = set()
    with _Mover(channel, queue) as mover:
        while limit is None or len(replayed) < limit:
            message = mover.next()
            if message is None:
                break
            task = describe(message.properties)
            if (task_name is not None and task.task_name != task_name) or task.task_id in done:
                # Another task, or one replayed in this run that died again at once: next run.
                skipped += 1
                mover.keep(message)
                continue
            target = task.queue
            why = "no x-death or refusal header: the original queue is unknown" if not target else None
            why = why or mover.publish(replay_copy(message), target or "")
            if why is not None:
                failed.append((task, why))
                mover.keep(message)
                continue
            # Confirmed: the copy is in its queue (a majority has it). Only now drop the original.
            channel.basic_ack(_tag(message))
            done.add(task.task_id)
            replayed.append(task)
            on_replayed(task)
    return ReplayResult(tuple(replayed), skipped, tuple(failed))


# --- CLI -------------------------------------------------------------------------------------------


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.dlq", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help=f"show the tasks in {DEAD_LETTER_QUEUE} (leaves them there)")
    listing.add_argument("--limit", type=_positive, default=None, help="show at most N (default: all)")
    again = commands.add_parser("replay", help="move dead-lettered tasks back to the queue they died in")
    again.add_argument("--limit", type=_positive, default=None, help="replay at most N (default: all)")
    again.add_argument("--task", default=None, metavar="NAME", help="only tasks of this name, e.g. app.tasks.count")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        # As the worker and the scheduler: a missing or unreadable CA file fails here, by name.
        config = check_files(from_env(os.environ if environ is None else environ))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, config.broker_urls, ssl_options(config))
    except (OSError, AMQPError, OperationalError, RuntimeError) as exc:
        # Unreachable broker, missing queue, confirm timeout, a copy the broker would not take:
        # nothing acked without its confirm (the message goes back when the connection closes).
        print(f"broker error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, broker_urls: Sequence[str], tls: dict[str, object] | bool = False) -> int:
    with dead_letter_channel(broker_urls, tls) as channel:
        if args.command == "list":
            tasks = list_dead(channel, limit=args.limit)
            now = datetime.now(UTC).replace(tzinfo=None)
            print(f"{'task':<32} {'task id':<36} {'reason x count':<18} {'queue':<12} age")
            for task in tasks:
                print(format_row(task, now))
            print(f"{len(tasks)} dead-lettered task(s) shown from {DEAD_LETTER_QUEUE}", flush=True)
            return 0

        def progress(task: DeadTask) -> None:
            print(f"replayed {task.task_id} {task.task_name} -> {task.queue or '?'}", flush=True)

        result = replay(channel, limit=args.limit, task_name=args.task, on_replayed=progress)
    for task, why in result.failed:
        print(f"NOT replayed {task.task_id} {task.task_name}: {why}", file=sys.stderr)
    print(
        f"replayed {len(result.replayed)}, skipped {result.skipped}, {len(result.failed)} failed",
        flush=True,
    )
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
