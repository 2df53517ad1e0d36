"""Worker bootsteps: the heartbeat and ready files behind ``python -m app.health``, and the
consumer whose delayed-delivery step declares on its own live connection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from celery import bootsteps, signals
from celery.worker.consumer import Consumer as StockConsumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from kombu import Consumer as KombuConsumer
from kombu.message import Message
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)
from vine import promise

from app import health, intake
from app.certs import CertificateWatch
from app.dlq import Outcome, Refuser, refused_copy
from app.failover import BrokerRotation
from app.failures import Keeper, KeepingRequest
from app.metrics import MetricsConfigError, WorkerMetrics
from contract import metrics, timing
from contract.wire import DEAD_LETTER_QUEUE as DLQ
from contract.wire import DELIVERY_LIMIT

logger = logging.getLogger(__name__)


class HealthStep(bootsteps.StartStopStep):
    """Consumer bootstep: heartbeat + ready file while the task consumer runs.

    Celery starts consumer steps after (re)connecting and stops them when the
    connection is lost, so the ready file exists exactly while tasks are being
    consumed. The heartbeat is driven by the worker's own timer on the main
    event loop, so a wedged loop stops it even if the process is alive.
    """

    # After the task consumer: "started" must mean "consuming", not just "connected". And after
    # remote control, whose exclusive queue can still be locked by a dead node's connection right
    # after a failover (RabbitMQ 4.3: several consumer restarts within seconds): required, not left
    # to the order the blueprint's sort happens to pick.
    requires = ("celery.worker.consumer.tasks:Tasks", "celery.worker.consumer.control:Control")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        conf = parent.app.conf
        self.heartbeat_file = Path(conf.ha_heartbeat_file)
        self.ready_file = Path(conf.ha_ready_file)
        self._timer_entry: Any = None
        # Files left by a previous container in the same pod (emptyDir /tmp survives
        # container restarts) must not vouch for this process before it connects. Removed here,
        # once the consumer is built, seconds after the container started: until then the
        # readiness probe refuses the old ready file by its owner (app.health.owner_alive).
        health.remove(self.ready_file)
        health.remove(self.heartbeat_file)
        self.disconnected = health.disconnected_marker(self.heartbeat_file)
        # Not consuming yet: live while it reaches a broker (see app.health).
        self._mark(self.disconnected)

    def start(self, parent: Any) -> None:
        self._beat()
        health.claim(self.ready_file)
        health.remove(self.disconnected)
        self._timer_entry = parent.timer.call_repeatedly(timing.HEALTH_HEARTBEAT_INTERVAL_S, self._beat)
        logger.info("health: consuming; heartbeat %s, ready %s", self.heartbeat_file, self.ready_file)

    def stop(self, parent: Any) -> None:
        del parent  # the step's state is its own files and timer entry
        # Connection lost: reconnecting from now on, for up to timing.OUTAGE_BUDGET_S. Celery
        # stops every step on each consumer restart, started or not: only the first stop of an
        # outage marks it, so a worker that reconnects but never consumes still runs out of budget.
        if not self.disconnected.exists():
            self._mark(self.disconnected)
        self._halt()

    def shutdown(self, parent: Any) -> None:
        del parent
        self._halt()

    def _halt(self) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        health.remove(self.ready_file)

    def _beat(self) -> None:
        self._mark(self.heartbeat_file)

    @staticmethod
    def _mark(path: Path) -> None:
        try:
            health.touch(path)
        except OSError:
            # A full or read-only /tmp must not crash the consumer; a stale or missing
            # file then fails the liveness probe, which is the right outcome.
            logger.exception("health: cannot touch %s", path)


class MetricsStep(bootsteps.StartStopStep):
    """Consumer bootstep: the worker's ``/metrics`` (``app.metrics``) for the worker's whole life.

    Built once per worker, in the main process and before the pool forks (the consumer's steps are
    created before any worker step starts), so the children inherit the counters; the server
    starts at once, so a worker that never reaches a broker still answers, with
    ``broker_connected 0``. ``start``/``stop`` are the consumer's: consuming, or not.

    After :class:`HealthStep`, so "connected" and a reconnect mean what the ready file means:
    consuming. A restart that fails before that (on 4.3, the remote-control queue still locked
    by the dead node's connection: five restarts within four seconds of one failover, seen in the
    kill-broker drill) is not counted.
    """

    requires = (HealthStep,)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        conf = parent.app.conf
        self.metrics: WorkerMetrics | None = None
        self._server: Any = None
        port = int(conf.ha_metrics_port or 0)
        if port == 0:
            return
        directory = Path(conf.ha_metrics_dir) if conf.ha_metrics_dir else None
        pool = getattr(getattr(parent, "controller", None), "pool_cls", None)
        if directory is None and _forks(pool):
            raise MetricsConfigError(
                f"{metrics.ENV_METRICS_PORT}={port} with a prefork pool needs {metrics.ENV_MULTIPROC_DIR} (an "
                f"absolute, writable directory such as {metrics.DEFAULT_MULTIPROC_DIR}): task outcomes are "
                f"counted in the pool's processes; or set {metrics.ENV_METRICS_PORT}=0 for no exporter"
            )
        urls = conf.broker_url if isinstance(conf.broker_url, list | tuple) else str(conf.broker_url or "").split(";")
        certificates = CertificateWatch.from_ssl(urls, conf.broker_use_ssl)
        self.metrics = WorkerMetrics(parent.app, Path(conf.ha_heartbeat_file), directory, certificates)
        if certificates is not None:
            certificates.start()
        self._server = self.metrics.serve(port)
        logger.info("metrics: serving /metrics on port %d (multiprocess dir %s)", port, directory)

    def start(self, parent: Any) -> None:
        if self.metrics is not None:
            connection = getattr(parent, "connection", None)
            broker = None if connection is None else f"{connection.hostname}:{connection.port}"
            self.metrics.consuming(broker)

    def stop(self, parent: Any) -> None:
        del parent
        if self.metrics is not None:
            self.metrics.disconnected()

    def shutdown(self, parent: Any) -> None:
        del parent
        if self.metrics is not None:
            self.metrics.disconnected()
            self.metrics.close()
            if self.metrics.certificates is not None:
                self.metrics.certificates.stop()
            self.metrics = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _forks(pool_cls: Any) -> bool:
    """Whether tasks run in other processes than the consumer's (Celery's prefork pool)."""
    from celery.concurrency.prefork import TaskPool as PreforkPool  # billiard: only a worker needs it

    return isinstance(pool_cls, type) and issubclass(pool_cls, PreforkPool)


class LiveDelayedDelivery(DelayedDelivery):
    """Celery's delayed-delivery setup, on the consumer's own (live) connection only.

    The stock step runs after every reconnect and declares the topology once per URL of the
    failover list, retrying each unreachable one (1 + 3 + 5 s): a worker that had just failed
    over away from a dead node consumed nothing for ~15 s, ≥ 30 s if that node was frozen.
    One declaration on the connection that is up is enough (the broker definitions carry the
    same topology, so even a failure here loses nothing); it is logged, not fatal.
    """

    def start(self, c: Any) -> None:
        app = c.app
        try:
            declare_native_delayed_delivery_exchanges_and_queues(
                c.connection, app.conf.broker_native_delayed_delivery_queue_type
            )
            for queue in app.amqp.queues.values():
                bind_queue_to_native_delayed_delivery_exchange(c.connection, queue)
        except Exception:
            logger.exception("delayed delivery: declaring on the live connection failed; the broker's definitions hold")


class Consumer(StockConsumer):
    """Celery's consumer (``worker_consumer``) with :class:`LiveDelayedDelivery` in place of the
    stock step, and an intake: every delivery is checked (``app.intake``) before Celery sees it.

    A delivery the check refuses, one Celery cannot decode (the stock consumer acks those away)
    and one that makes Celery's handler raise (which would kill the worker, and the next one it
    is redelivered to) is *refused*: a copy with the reason goes to the dead-letter queue
    (``app.dlq.Refuser``, publisher confirms), and only once the broker confirmed it is the
    delivery acked. If that copy cannot be published the delivery is rejected without requeue,
    so the broker's dead-letter policy keeps it (reason ``rejected``; the worker's reason is in
    its log). Never acked away, never a crash.

    The same way in takes a task that failed for good (``app.failures``): the consumer hands every
    request it runs a :class:`app.failures.Keeper` (:meth:`keep_failed` and the delivery limit).
    Handed over in ``on_task_request``, where every request goes to the pool (at once, after its
    ETA or its rate limit), so the requests reach this consumer's ``Refuser`` without a global.
    """

    # celery-types declares the stock Blueprint as an attribute, not as the class it is.
    class Blueprint(StockConsumer.Blueprint):  # type: ignore[misc,valid-type]
        default_steps = tuple(
            "app.bootsteps:LiveDelayedDelivery" if step.endswith(":DelayedDelivery") else step
            for step in StockConsumer.Blueprint.default_steps
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refuser = Refuser(self.app.connection_for_write)
        self.rotation = BrokerRotation.of(self.app.conf)
        self.keeper = Keeper(self.keep_failed, int(self.app.conf.get("ha_delivery_limit") or DELIVERY_LIMIT))
        state = cast(Any, self)
        # Celery's strategies read this attribute when they are built (update_strategies, after __init__).
        stock_request = state.on_task_request
        keeper = self.keeper

        def on_task_request(request: Any) -> None:
            if isinstance(request, KeepingRequest):
                request.keeper = keeper
            stock_request(request)

        state.on_task_request = on_task_request

    def connection_for_read(self, heartbeat: float | None = None) -> Any:
        """The consumer's connection, its failover list starting where :class:`BrokerRotation` says
        (Celery's own starts every restart at the configured list's first URL)."""
        connection = cast(Any, self).ensure_connected(
            cast(Any, self.app).connection_for_read(url=self.rotation.order(), heartbeat=heartbeat)
        )
        self.rotation.connected(connection.hostname, connection.port)
        return connection

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        # A channel error (a queue leader moving) keeps the broker; a lost connection moves past it.
        state = cast(Any, self)
        if state.connection is not None and isinstance(exc, tuple(state.connection_errors)):
            self.rotation.lost(state.connection.hostname, state.connection.port)
        super().on_connection_error_after_connected(exc)

    def create_task_handler(self, promise: Any = promise) -> Callable[..., Any]:
        stock = super().create_task_handler(promise)
        state = cast(Any, self)  # attributes celery-types does not declare
        # Connection and channel errors must reach Celery's consumer: it reconnects on them.
        passing = (*state.connection_errors, *state.channel_errors)

        def on_task_received(message: Any) -> None:
            verdict = intake.check(_delivery(message), state.strategies)
            if isinstance(verdict, intake.Refused):
                self.refuse(message, verdict.reason)
                return
            try:
                stock(message)
            except passing:
                raise
            except Exception as exc:
                logger.exception("intake: Celery failed on an accepted delivery (task id %s)", verdict.task_id)
                self.refuse(message, f"the worker failed on it: {type(exc).__name__}: {exc}")

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # The stock consumer logs and acks: the message would be gone.
        self.refuse(message, f"cannot be decoded: {type(exc).__name__}: {exc}")

    def refuse(self, message: Any, reason: str) -> None:
        """Put ``message`` into the dead-letter queue with ``reason``, then ack it (see the class doc)."""
        state = cast(Any, self)
        headers = message.headers if isinstance(message.headers, dict) else {}
        logger.error(
            "intake: refused task %.200r id %.200r into %s: %s", headers.get("task"), headers.get("id"), DLQ, reason
        )
        # Refused without a run, as Celery signals an unknown message: the worker's rejected counter
        # (app.metrics) counts it, whichever way the message then leaves.
        signals.task_rejected.send(sender=self, message=message, exc=None)
        if not self._put_copy(message, reason, Outcome.REFUSED):
            message.reject_log_error(logger, state.connection_errors, requeue=False)
            return
        message.ack_log_error(logger, state.connection_errors)

    def keep_failed(self, message: Any, reason: str) -> bool:
        """Put the delivery of a task that failed for good into the dead-letter queue with ``reason``
        (``app.failures``); True once confirmed. The request acks or rejects; Celery counted the failure."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        logger.warning(
            "failed for good: task %.200r id %.200r into %s: %.200s",
            headers.get("task"),
            headers.get("id"),
            DLQ,
            reason.partition("\n")[0],
        )
        return self._put_copy(message, reason, Outcome.FAILED)

    def _put_copy(self, message: Any, reason: str, outcome: Outcome) -> bool:
        """A confirmed copy of ``message`` with ``reason`` in the dead-letter queue; False if not confirmed."""
        try:
            self.refuser.put(
                # As received: a compressed body stays compressed, with its header (UndecompressedConsumer).
                refused_copy(
                    message.body,
                    dict(message.properties),
                    reason,
                    self._queue_of(message),
                    datetime.now(UTC),
                    outcome=outcome,
                )
            )
        except Exception:
            logger.exception(
                "%s did not confirm the %s copy; rejecting the delivery as before (the dead-letter policy keeps it)",
                DLQ,
                outcome,
            )
            return False
        return True

    def _queue_of(self, message: Any) -> str:
        """The queue ``message`` was consumed from (by its consumer tag), else the default queue."""
        tag = (message.delivery_info or {}).get("consumer_tag")
        tags = getattr(cast(Any, self).task_consumer, "_active_tags", {})
        for queue, active in tags.items():
            if active == tag:
                return str(queue)
        return str(self.app.conf.task_default_queue)

    def shutdown(self) -> None:
        self.refuser.close()
        super().shutdown()


class UndecompressedConsumer(KombuConsumer):
    """The task consumer (``app.amqp.Consumer``): a delivery with a ``compression`` header reaches
    the intake as it came, never decompressed.

    kombu decompresses a body while it wraps the delivery (``kombu.message.Message.__init__``),
    before any consumer callback: a 100 KB zlib body of zeros becomes 100 MB in the worker's
    main process before the intake could refuse it for its compression header (a zip bomb). Here
    such a delivery is wrapped without that step (its ``properties`` keep the header, which
    the intake refuses by name) and handed to the consumer's ``on_message``: Celery's task
    handler, whose intake sends it to the dead-letter queue still compressed. Consumers
    without ``on_message`` (kombu's callbacks: events, remote control) are left to kombu.
    """

    def _receive_callback(self, message: Any) -> Any:
        on_message = self.on_message
        headers = getattr(message, "properties", {}).get("application_headers")
        if on_message is None or not isinstance(headers, dict) or "compression" not in headers:
            return super()._receive_callback(message)
        return on_message(_undecompressed(message, self.channel))


def _undecompressed(raw: Any, channel: Any) -> Message:
    """``raw`` (a py-amqp message) as kombu wraps it, minus the decompression."""
    properties = raw.properties
    headers = properties["application_headers"]
    wrapped = Message(
        body=raw.body,
        channel=channel,
        delivery_tag=raw.delivery_tag,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        delivery_info=raw.delivery_info,
        properties=properties,
        # kombu decompresses when its headers name a compression: given without it ...
        headers={k: v for k, v in headers.items() if k != "compression"},
    )
    wrapped.headers = headers  # ... and told the truth afterwards.
    return wrapped


def _delivery(message: Any) -> intake.Delivery:
    return intake.Delivery(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=message.properties.get("application_headers"),
    )
