"""Publishing many tasks, every one confirmed by the broker, without one round trip per task.

The plan/result types every publisher shares live in ``app.batch``.

``publish_pipelined`` keeps a *window* of up to ``window`` publishes in flight on one
confirm-mode channel (RabbitMQ publisher confirms) and counts a task as scheduled only
when the broker acked its delivery tag - for a quorum queue, once a majority of the
nodes has it. The confirms arrive in batches (``basic.ack`` with ``multiple``), so the
publisher pays a round trip per window rather than per task; measured in
BENCHMARKS.md against the unconfirmed rate.

Messages are Celery's own: ``app.amqp.create_task_message`` (protocol 2) handed to
``app.amqp.send_task_message``, the very function ``app.send_task`` ends in, with the
route ``app.send_task`` computes, so exchange, routing key, delivery mode, headers and
the queue declaration (quorum, ``x-queue-type``) are what a stock worker expects.

Failover (at-least-once, never at-most-once): on a lost connection, a dead silent broker
(no confirm within ``confirm_timeout_s``, or missed heartbeats) or a channel error, the
publisher drops the connection, moves to the next broker URL and republishes every
publish that was not confirmed yet, with the same task id. A publish that was in fact
stored before the connection died is then queued twice: duplicates are possible, loss is
not. A ``basic.nack`` (RabbitMQ nacks at once while a quorum queue has no leader, e.g.
for the seconds of an election after its leader's node died) pauses publishing briefly,
backing off, then republishes the nacked messages; nacks that go on for ``_NACK_REOPEN_S``
count as a failover. When no node answers at all, it keeps reconnecting with backoff and
logs each round. It gives up only when no new confirm arrived for ``outage_budget_s``
(``timing.OUTAGE_BUDGET_S``, 15 min) through all of these alike, or on an error that
retrying cannot fix (an unroutable message, wrong credentials, a queue declared with other
arguments).

A task whose message passes the worker's limits (``app.outgoing``: headers over 32 KiB, a
body over 1 MiB) is refused before a byte of it is written: it is no connection trouble, so
it is neither retried nor failed over. The run records it (``PublishResult.refused``) and
publishes the rest of the plan; past ``MAX_REFUSED`` refusals it stops, the plan being wrong.

Task ids come from the plan (``PublishPlan.task_id``): a rerun of the same plan (same
``run_id``, e.g. a retried scheduler Job) publishes the same ids, which idempotent tasks
recognise.

Every deadline above is read from one injected ``clock`` (``time.monotonic`` by default) and
every back-off goes through one ``sleep``, so tests drive the budgets on fake time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from amqp.exceptions import AccessRefused, NotAllowed, PreconditionFailed
from celery import Celery
from kombu import Connection, Producer, Queue
from kombu.exceptions import OperationalError

from app.batch import MAX_REFUSED, ConfirmedIds, ProgressCallback, PublishPlan, PublishResult, RefusedTask
from app.outgoing import MessageRefused
from contract import timing

logger = logging.getLogger(__name__)

DEFAULT_WINDOW: Final = 2048
"""Publishes in flight (sent, not yet confirmed). Measured on the local 3-node cluster
(BENCHMARKS.md, window sweep): below ~256 the broker idles between batches; above, the rate
is the quorum queue's ingest rate within noise. 2048 leaves headroom for a broker that
confirms faster or farther away (the window must cover rate x confirm latency), is ~1.5 MB
of task messages in flight, and bounds what one failover republishes (each a possible
duplicate, never a loss)."""

_WAIT_SLICE_S: Final = 1.0
"""Longest single blocking read: heartbeats are checked (and sent) between slices."""
_NACK_PAUSE_S: Final = 0.05
"""First pause after a nack; doubles per nack without a confirm in between ..."""
_NACK_PAUSE_MAX_S: Final = 1.0
"""... up to this. A quorum queue elects a new leader within seconds: short pauses resume
quickly, and the cap keeps a long outage from turning into a nack storm."""
_NACK_REOPEN_S: Final = 2.0
"""Nacks without a single ack for this long: fail over to a new connection. Measured on
RabbitMQ 3.10: after the leader's node died, a channel that had seen the leaderless queue
kept nacking every publish for a minute although a new leader was elected within a
second; a new channel is accepted at once."""
_HEARTBEAT_RATE: Final = 2
"""Heartbeat checks per heartbeat interval, as Celery's worker does."""


class PublishError(RuntimeError):
    """Publishing cannot go on: retrying would not help, or the retries are spent."""


class ConfirmWindow:
    """Delivery-tag bookkeeping of one confirm-mode channel; no I/O.

    After ``confirm.select`` the broker numbers a channel's publishes 1, 2, 3, ... and
    later acks or nacks them, one tag at a time or "every tag up to N" (``multiple``).
    The window maps tags back to the plan's indexes. Tags restart at 1 on every new
    channel, so a failover ends a window (:meth:`abandon`) and the next channel gets a
    fresh one.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"window limit must be >= 1, got {limit}")
        self.limit = limit
        self._next_tag = 1
        self._index_of: dict[int, int] = {}
        # Tags in publish order; entries settled one by one stay until they reach the front
        # (cheaper than removing from the middle, and a dict cannot pop its oldest key cheaply).
        self._order: deque[int] = deque()

    def __len__(self) -> int:
        """Publishes in flight."""
        return len(self._index_of)

    @property
    def full(self) -> bool:
        return len(self._index_of) >= self.limit

    @property
    def last_tag(self) -> int:
        """The tag of the latest publish (0 before the first)."""
        return self._next_tag - 1

    def sent(self, index: int) -> int:
        """Record that plan item ``index`` was just published; returns its delivery tag."""
        tag = self._next_tag
        self._next_tag += 1
        self._index_of[tag] = index
        self._order.append(tag)
        return tag

    def settle(self, tag: int, multiple: bool) -> list[int]:
        """Remove what an ack or nack of ``tag`` covers; returns those indexes in publish order.

        Tags already settled are ignored (an ack never un-acks); a tag never sent on this
        channel means the bookkeeping and the broker disagree, which must not go unnoticed.
        """
        if tag > self.last_tag or tag < 0:
            raise ValueError(f"the broker settled delivery tag {tag}, but only 1..{self.last_tag} were published")
        if not multiple:
            index = self._index_of.pop(tag, None)
            self._trim()
            return [] if index is None else [index]
        settled: list[int] = []
        # multiple=True with tag 0 means "everything published so far" (AMQP 0-9-1).
        upto = self.last_tag if tag == 0 else tag
        while self._order and self._order[0] <= upto:
            index = self._index_of.pop(self._order.popleft(), None)
            if index is not None:
                settled.append(index)
        return settled

    def withdraw(self, tag: int) -> int:
        """Take back the latest publish (``tag``): it never left, so the broker never numbered it."""
        if tag != self.last_tag or tag not in self._index_of:
            raise ValueError(f"only the latest publish ({self.last_tag}) can be withdrawn, not {tag}")
        self._order.pop()
        self._next_tag -= 1
        return self._index_of.pop(tag)

    def pending(self) -> list[int]:
        """The indexes in flight (sent, not yet settled), in publish order."""
        return [self._index_of[tag] for tag in self._order if tag in self._index_of]

    def abandon(self) -> list[int]:
        """End this channel's window: the unconfirmed indexes in publish order (to republish)."""
        pending = self.pending()
        self._index_of.clear()
        self._order.clear()
        self._next_tag = 1
        return pending

    def _trim(self) -> None:
        while self._order and self._order[0] not in self._index_of:
            self._order.popleft()


class _ConfirmTimeout(Exception):
    """No confirm for ``confirm_timeout_s``: the broker is treated as gone."""


class _Rejecting(Exception):
    """The channel nacks everything: a new connection is needed (see ``_NACK_REOPEN_S``)."""


class _Unroutable(Exception):
    """The broker returned a message: no queue is bound for its routing key."""


_FATAL: Final = (_Unroutable, PreconditionFailed, AccessRefused, NotAllowed)
"""Errors no failover can fix; anything else from the connection or channel is retried."""

Clock = Callable[[], float]
"""Seconds on a clock that never goes back (``time.monotonic``)."""
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class TaskRoute:
    """Where ``app.send_task`` would send a plan's task, and what it would declare first."""

    options: dict[str, Any]
    """Routing options for ``app.amqp.send_task_message`` (the queue, or exchange and routing key)."""
    declare: tuple[Queue, ...]
    """Entities to declare on a new channel before publishing (the queue, its exchange, binding)."""

    @classmethod
    def of(cls, app: Celery, plan: PublishPlan) -> TaskRoute:
        # Routed once per plan: this project's routes depend on the task name only (one
        # name per plan); a router that looked at the arguments would need a route per task.
        args, kwargs = plan.arguments(0)
        # An explicit queue wins over the routes, as in apply_async (celery.app.routes.Router.route).
        options = app.amqp.router.route(
            {} if plan.queue is None else {"queue": plan.queue}, plan.task_name, args, kwargs
        )
        queue = options.get("queue")
        if queue is None and options.get("exchange") is None:
            queue = app.amqp.default_queue
        if isinstance(queue, str):
            queue = app.amqp.queues[queue]
        return cls(options, (queue,) if isinstance(queue, Queue) else ())


def publisher_connection(app: Celery) -> Connection:
    """A (lazy) connection over ``app``'s failover list for a publisher that handles confirms itself.

    kombu's ``confirm_publish`` would block every publish until its confirm; here the
    caller selects confirm mode per channel (or, for a baseline, does not).
    """
    return app.connection_for_write(
        heartbeat=app.conf.broker_heartbeat,
        # Merged over the app's transport options (socket settings, retry budget kept).
        transport_options={"confirm_publish": False},
    )


class _Pipeline:
    """One run of :func:`publish_pipelined`: a connection, a window, and what is left to do."""

    def __init__(
        self,
        app: Celery,
        plan: PublishPlan,
        on_progress: ProgressCallback,
        *,
        window: int,
        confirm_timeout_s: float,
        outage_budget_s: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.app = app
        self.plan = plan
        self.on_progress = on_progress
        self.confirm_timeout_s = confirm_timeout_s
        self.outage_budget_s = outage_budget_s
        self.clock = clock
        self.sleep = sleep
        # O(window), not O(tasks): ids are derived from the plan when published, and an index
        # is confirmed iff it is below ``fresh`` and neither in the window nor in ``retry``
        # (each index is in at most one of them: see _confirmed). A million-task Job must
        # not hold a million ids.
        self.confirmed = 0
        self.window = ConfirmWindow(window)
        self.route = TaskRoute.of(app, plan)
        self.retry: deque[int] = deque()
        """Indexes to publish (again) before any fresh one: unconfirmed at a failover, or nacked."""
        self.fresh = 0
        """The next index never published."""
        self.republished = 0
        self.failovers = 0
        self.refused: list[RefusedTask] = []
        self._quiet_failovers = 0
        self._last_confirm = self.clock()
        """Last ack or nack: the broker is alive."""
        self._last_progress = self._last_confirm
        """Last confirm of a task not confirmed before: the outage budget counts from here."""
        self._pause_until = 0.0
        self._nack_pauses = 0
        self._nacking_since: float | None = None
        """First nack since the last new confirm on this channel."""
        self._next_beat = 0.0
        self._producer: Producer | None = None
        self._create = app.amqp.create_task_message
        self._send = app.amqp.send_task_message
        self._reply_to = app.thread_oid
        self._sent_event = bool(app.conf.task_send_sent_event)

    # ---------------------------------------------------------------- driving ----

    def run(self) -> None:
        conn = publisher_connection(self.app)
        retriable: tuple[type[BaseException], ...] = (
            _ConfirmTimeout,
            _Rejecting,
            # kombu's ensure_connection gave up for now (its timeout is the remaining budget).
            OperationalError,
            *conn.connection_errors,
            *conn.channel_errors,
        )
        try:
            while not self._finished():
                try:
                    self._open(conn)
                    self._pump(conn)
                except _FATAL as exc:
                    # Wrong credentials, a queue declared with other arguments, no queue for
                    # the routing key: every node would answer the same.
                    raise PublishError(f"{type(exc).__name__}: {exc}") from exc
                except retriable as exc:
                    self._failover(conn, exc)
        finally:
            # A polite close when every publish is confirmed; after an error the socket may
            # hold a half-written frame, so it is dropped instead.
            with contextlib.suppress(Exception):
                if self._finished():
                    conn.release()
                else:
                    conn.collect()

    def result(self, started: float, error: str | None) -> PublishResult:
        unconfirmed = {*self.window.pending(), *self.retry, *(r.index for r in self.refused)}
        return PublishResult(
            self.plan.count,
            ConfirmedIds(self.plan, self.fresh, unconfirmed),
            self.clock() - started,
            error,
            republished=self.republished,
            failovers=self.failovers,
            refused=tuple(self.refused),
        )

    def _finished(self) -> bool:
        """Every task of the plan confirmed or refused."""
        return self.confirmed + len(self.refused) >= self.plan.count

    def _open(self, conn: Connection) -> None:
        """Connect (kombu walks the URL list), then a fresh confirm-mode channel, declared."""
        conn.ensure_connection(
            errback=self._unreachable,
            # Bounded by time, not by attempts: kombu counts every URL as an attempt and only
            # backs off after a full round over the URLs, so 20 "retries" of 3 nodes were spent
            # in 15 s of a 30 s outage. Rounds back off as the app's publish retry policy does.
            max_retries=None,  # type: ignore[arg-type]  # kombu: None = no limit (the stub says int)
            interval_start=max(1, math.ceil(timing.PUBLISH_RETRY_INTERVAL_START_S)),
            interval_step=math.ceil(timing.PUBLISH_RETRY_INTERVAL_STEP_S),
            interval_max=math.ceil(timing.PUBLISH_RETRY_INTERVAL_MAX_S),
            timeout=max(1, math.ceil(self._budget_left())),
        )
        channel = conn.channel()
        # Same declarations as a send_task on a new connection: exchange, queue (with its
        # x-queue-type argument) and binding, before the first publish can be routed.
        for queue in self.route.declare:
            queue.bind(channel).declare()
        confirm_select: Callable[[], object] | None = getattr(channel, "confirm_select", None)
        events: dict[str, set[Callable[..., None]]] | None = getattr(channel, "events", None)
        if confirm_select is None or events is None:
            raise PublishError(f"publisher confirms need the py-amqp transport, got {type(channel).__name__}")
        confirm_select()
        events["basic_ack"].add(self._on_ack)
        events["basic_nack"].add(self._on_nack)
        events["basic_return"].add(self._on_return)
        self._producer = Producer(channel, auto_declare=False)
        self._last_confirm = self.clock()
        self._nacking_since = None
        self._pause_until = 0.0

    def _pump(self, conn: Connection) -> None:
        producer = self._producer
        assert producer is not None
        while not self._finished():
            if self.clock() < self._pause_until:
                # Backing off after a nack; acks keep being read meanwhile.
                self._wait(conn, lambda: self.clock() >= self._pause_until, until=self._pause_until)
                continue
            if self.retry:
                index = self.retry.popleft()
            elif self.fresh < self.plan.count:
                index = self.fresh
                self.fresh += 1
            else:
                if not len(self.window):
                    raise PublishError(
                        f"bookkeeping error: {self.plan.count - self.confirmed} tasks neither confirmed, "
                        "in flight nor queued for a retry"
                    )
                # Everything is out: wait for the last confirms (or for nacks to refill retry).
                self._wait(conn, lambda: len(self.window) == 0 or bool(self.retry))
                continue
            self._publish(producer, index)
            if self.window.full:
                self._wait(conn, lambda: not self.window.full)
            elif self.window.last_tag % 256 == 0:
                self._beat(conn)

    def _publish(self, producer: Producer, index: int) -> None:
        args, kwargs = self.plan.arguments(index)
        message = self._create(
            self.plan.task_id(index),
            self.plan.task_name,
            args,
            kwargs,
            reply_to=self._reply_to,
            create_sent_event=self._sent_event,
            # What send_task passes for a task without an ignore_result option of its own.
            ignore_result=None,
        )
        # Registered before the bytes leave: a confirm can only follow the publish.
        tag = self.window.sent(index)
        try:
            self._send(
                producer,
                self.plan.task_name,
                message,
                retry=False,
                # Declared once per channel in _open(); Celery would re-check a cache per publish.
                declare=[],
                mandatory=True,
                **self.route.options,
            )
        except MessageRefused as exc:
            # Checked before anything was written (app.outgoing): the broker never numbered it.
            self.window.withdraw(tag)
            self._refuse(index, exc)

    def _refuse(self, index: int, exc: MessageRefused) -> None:
        self.refused.append(RefusedTask(index, exc.task_id, exc.reason))
        logger.error("%s", exc)
        if len(self.refused) > MAX_REFUSED:
            raise PublishError(
                f"stopped: {len(self.refused)} tasks refused (more than {MAX_REFUSED}): the plan itself is wrong; "
                f"last: {exc.reason}"
            )

    def _wait(self, conn: Connection, done: Callable[[], bool], until: float | None = None) -> None:
        while not done():
            if self.clock() - self._last_confirm > self.confirm_timeout_s:
                raise _ConfirmTimeout(
                    f"no publisher confirm for {self.confirm_timeout_s:.0f}s with {len(self.window)} in flight"
                )
            self._beat(conn)
            slice_s = _WAIT_SLICE_S if until is None else min(_WAIT_SLICE_S, max(0.001, until - self.clock()))
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=slice_s)

    def _beat(self, conn: Connection) -> None:
        # Sends our heartbeat when due and raises once the broker missed two of its own:
        # a partitioned node is noticed even while we only write.
        now = self.clock()
        if now >= self._next_beat:
            conn.heartbeat_check(rate=_HEARTBEAT_RATE)
            heartbeat = self.app.conf.broker_heartbeat or timing.BROKER_HEARTBEAT_S
            self._next_beat = now + heartbeat / _HEARTBEAT_RATE

    def _budget_left(self) -> float:
        return self.outage_budget_s - (self.clock() - self._last_progress)

    def _unreachable(self, exc: Exception, interval: float) -> None:
        # kombu calls this after every failed connect; a round over the URLs ends with a pause.
        if interval:
            logger.warning(
                "no broker reachable (%s: %s); retrying in %.0fs, %.0fs without a confirm (gives up after %.0fs)",
                type(exc).__name__,
                exc,
                interval,
                self.clock() - self._last_progress,
                self.outage_budget_s,
            )

    def _failover(self, conn: Connection, exc: BaseException) -> None:
        unconfirmed = self.window.abandon()
        # Oldest first, ahead of anything already waiting for a retry.
        self.retry.extendleft(reversed(unconfirmed))
        self.republished += len(unconfirmed)
        self.failovers += 1
        self._quiet_failovers += 1
        self._producer = None
        with contextlib.suppress(Exception):
            conn.collect()
        if self._budget_left() <= 0:
            raise PublishError(
                f"gave up: no new confirm for {self.outage_budget_s:.0f}s over {self._quiet_failovers} failovers; "
                f"last: {type(exc).__name__}: {exc}"
            ) from exc
        logger.warning("failover %d (%s: %s): reconnecting", self.failovers, type(exc).__name__, exc)
        # The first retry is immediate (the next node is usually up); repeated ones back off
        # as the app's publish retry policy does.
        delay = min(
            timing.PUBLISH_RETRY_INTERVAL_START_S + timing.PUBLISH_RETRY_INTERVAL_STEP_S * (self._quiet_failovers - 1),
            timing.PUBLISH_RETRY_INTERVAL_MAX_S,
        )
        self.sleep(delay)
        conn.maybe_switch_next()

    # ------------------------------------------------------------- callbacks ----

    def _confirmed(self, indexes: list[int]) -> None:
        # The window settles a tag once, and an index leaves it (acked, nacked into ``retry``, or
        # abandoned into ``retry`` at a failover) before it can be published again: an acked
        # index is one never confirmed before.
        fresh = len(indexes)
        if self.confirmed + fresh > self.plan.count:
            raise PublishError(f"bookkeeping error: {self.confirmed + fresh} confirms for {self.plan.count} tasks")
        self._last_confirm = self.clock()
        if fresh:
            self.confirmed += fresh
            self._last_progress = self._last_confirm
            self._quiet_failovers = 0
            self._nack_pauses = 0
            self._nacking_since = None
            self.on_progress(self.confirmed)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirmed(self.window.settle(delivery_tag, multiple))

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        indexes = self.window.settle(delivery_tag, multiple)
        now = self._last_confirm = self.clock()
        self.retry.extend(indexes)
        self.republished += len(indexes)
        if self._nacking_since is None:
            self._nacking_since = now
        elif now - self._nacking_since > _NACK_REOPEN_S:
            raise _Rejecting(f"every publish nacked for {now - self._nacking_since:.1f}s")
        if now >= self._pause_until:
            self._pause_until = now + min(_NACK_PAUSE_S * 2**self._nack_pauses, _NACK_PAUSE_MAX_S)
            self._nack_pauses += 1

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: object) -> None:
        # The broker acks a returned message too, right after the return: raising here
        # stops the run before that ack could count a message no queue holds as scheduled.
        del message
        raise _Unroutable(f"unroutable: exchange {exchange!r} routing key {routing_key!r} ({exc})")


def publish_pipelined(
    app: Celery,
    plan: PublishPlan,
    on_progress: ProgressCallback,
    *,
    window: int = DEFAULT_WINDOW,
    confirm_timeout_s: float = timing.PUBLISH_CONFIRM_TIMEOUT_S,
    outage_budget_s: float = timing.OUTAGE_BUDGET_S,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> PublishResult:
    """Publish ``plan`` with up to ``window`` unconfirmed publishes in flight (see the module doc).

    A :data:`Publisher`: drop-in for ``app.scheduler.publish_confirmed``. Never raises for
    broker trouble: the result says how many were confirmed and why it stopped. ``clock`` and
    ``sleep`` are the time it runs on (every deadline, back-off and the result's seconds).
    """
    started = clock()
    pipeline = _Pipeline(
        app,
        plan,
        on_progress,
        window=window,
        confirm_timeout_s=confirm_timeout_s,
        outage_budget_s=outage_budget_s,
        clock=clock,
        sleep=sleep,
    )
    try:
        pipeline.run()
    except Exception as exc:
        # Reported, not raised: the caller (CLI, drill) decides what a partial run means.
        return pipeline.result(started, f"{type(exc).__name__}: {exc}")
    return pipeline.result(started, None)
