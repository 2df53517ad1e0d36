"""The worker's Prometheus metrics, counted inside the worker (no task events, no per-task labels).

Names are ``contract.metrics``'s. Where each number comes from:

* task outcomes (succeeded, failed, retried) and run times: Celery's ``task_success``,
  ``task_failure``, ``task_retry``, ``task_prerun``/``task_postrun`` signals. With the prefork pool
  they fire in the *child* processes that run the tasks (a hard time limit's failure in the main
  one), so the counters use prometheus-client's multiprocess mode: each process writes its samples
  to ``PROMETHEUS_MULTIPROC_DIR``, and the main process serves the sum over all of them (a
  replaced child's counts included). A prefork worker without that directory refuses to start
  rather than export counters that silently miss every task outcome;
* received and rejected: ``task_received``, ``task_unknown`` and ``task_rejected``, in the main
  process (the consumer);
* broker connected, which broker, reconnects: the consumer's own start/stop (``app.bootsteps.MetricsStep``);
* reserved and active tasks: the main process's own request sets, read at each scrape;
* last heartbeat: the mtime of the heartbeat file ``app.bootsteps.HealthStep`` touches (before
  the first beat, the worker's start);
* with TLS, the broker certificates' earliest expiry: ``app.certs.CertificateWatch``'s last reading.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from celery import Celery, signals
from celery.worker import state as worker_state
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.certs import CertificateWatch
from contract import metrics, timing

RUNTIME_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, timing.TASK_TIME_LIMIT_S)
"""Seconds: from millisecond tasks up to the hard time limit (nothing runs longer)."""


class MetricsConfigError(RuntimeError):
    """The exporter cannot count honestly with this configuration; the message says what to set."""


def multiprocess_mode() -> bool:
    """Whether prometheus-client writes samples to files (``PROMETHEUS_MULTIPROC_DIR`` set at its import)."""
    return bool(values.ValueClass._multiprocess)


class WorkerMetrics:
    """The counters of one worker, fed by Celery's signals, and the collector of its live state.

    Built in the worker's main process before the pool forks: the children inherit the signal
    receivers and the counters, and write to files of their own pid (prometheus-client reopens
    them after a fork).
    """

    def __init__(
        self,
        app: Celery,
        heartbeat_file: Path,
        multiproc_dir: Path | None,
        certificates: CertificateWatch | None = None,
    ) -> None:
        self.app = app
        self.heartbeat_file = heartbeat_file
        self.multiproc_dir = multiproc_dir
        self.certificates = certificates
        self.started_at = time.time()
        self.connected = False
        self.broker: str | None = None
        """``host:port`` of the broker the consumer consumes from, None while it does not."""
        self.reconnects = 0
        self._consumed_before = False
        self._started: dict[str, float] = {}
        """Task id -> monotonic start, per process (a child sees only its own tasks)."""
        self.registry = CollectorRegistry()
        if multiproc_dir is not None:
            if not multiprocess_mode():
                raise MetricsConfigError(
                    f"{metrics.ENV_MULTIPROC_DIR} must be set in the worker's environment before it starts "
                    "(prometheus-client reads it at import); it was not"
                )
            _empty(multiproc_dir)
            MultiProcessCollector(self.registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
            own: CollectorRegistry | None = None  # the files are the record; the collector sums them
        else:
            own = self.registry
        self.received = Counter(metrics.TASKS_RECEIVED, "Task messages taken from the broker.", registry=own)
        self.succeeded = Counter(metrics.TASKS_SUCCEEDED, "Task runs that returned.", registry=own)
        self.failed = Counter(metrics.TASKS_FAILED, "Task runs that raised or hit the hard time limit.", registry=own)
        self.retried = Counter(metrics.TASKS_RETRIED, "Task runs that asked for a retry.", registry=own)
        self.rejected = Counter(
            metrics.TASKS_REJECTED, "Task messages refused without a run (unknown task, undecodable).", registry=own
        )
        self.runtime = Histogram(
            metrics.TASK_RUNTIME, "Task run time in the pool process, seconds.", buckets=RUNTIME_BUCKETS, registry=own
        )
        self.registry.register(_LiveCollector(self))
        self._receivers: list[tuple[Any, Any]] = [
            (signals.task_received, self._on_received),
            (signals.task_unknown, self._on_rejected),
            (signals.task_rejected, self._on_rejected),
            (signals.task_prerun, self._on_prerun),
            (signals.task_postrun, self._on_postrun),
            (signals.task_success, self._on_success),
            (signals.task_failure, self._on_failure),
            (signals.task_retry, self._on_retry),
        ]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def close(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    # ------------------------------------------------------------------ the consumer's state
    def consuming(self, broker: str | None = None) -> None:
        """The consumer (re)connected and consumes (from ``broker``, ``host:port``); every start after
        the first is a reconnect."""
        if self._consumed_before:
            self.reconnects += 1
        self._consumed_before = True
        self.connected = True
        self.broker = broker

    def disconnected(self) -> None:
        self.connected = False
        self.broker = None

    # ------------------------------------------------------------------ signal receivers
    def _ours(self, sender: Any) -> bool:
        # Signals are process-wide; another app in the same process (tests, a publisher) is not counted.
        return getattr(sender, "app", None) is self.app

    def _on_received(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.received.inc()

    def _on_rejected(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.rejected.inc()

    def _on_prerun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if self._ours(sender) and task_id is not None:
            self._started[task_id] = time.monotonic()

    def _on_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if not self._ours(sender) or task_id is None:
            return
        started = self._started.pop(task_id, None)
        if started is not None:
            self.runtime.observe(time.monotonic() - started)

    def _on_success(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.succeeded.inc()

    def _on_failure(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.failed.inc()

    def _on_retry(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self.retried.inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Serve ``/metrics`` on ``port`` from a daemon thread of this (the main) process; returns the server."""
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise MetricsConfigError(
                f"{metrics.ENV_METRICS_PORT}={port}: cannot serve /metrics on {addr}:{port} ({exc.strerror});"
                f" allowed: a free port 1..65535, or 0 for no exporter"
            ) from None
        return server


class _LiveCollector(Collector):
    """What the main process knows at scrape time: connection, reconnects, requests, heartbeat."""

    def __init__(self, owner: WorkerMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        yield GaugeMetricFamily(
            metrics.BROKER_CONNECTED, "1 while the consumer holds a broker connection.", value=int(owner.connected)
        )
        info = GaugeMetricFamily(
            metrics.BROKER_INFO, "1 for the broker the consumer consumes from (host:port).", labels=["broker"]
        )
        broker = owner.broker
        if owner.connected and broker is not None:
            info.add_metric([broker], 1)
        yield info
        yield CounterMetricFamily(
            metrics.BROKER_RECONNECTS, "Consumer restarts after a lost connection.", value=owner.reconnects
        )
        # Copies first: the main thread changes these sets while this (the HTTP) thread reads them.
        reserved, active = set(worker_state.reserved_requests), set(worker_state.active_requests)
        yield GaugeMetricFamily(
            metrics.RESERVED_TASKS, "Tasks prefetched and not started.", value=len(reserved - active)
        )
        yield GaugeMetricFamily(metrics.ACTIVE_TASKS, "Tasks running in the pool now.", value=len(active))
        try:
            beat = owner.heartbeat_file.stat().st_mtime
        except OSError:
            # Not consuming yet (the health step beats once consuming): as fresh as the worker, so a
            # start is no missing heartbeat, and one that never gets to consume ages from its start.
            beat = owner.started_at
        yield GaugeMetricFamily(metrics.LAST_HEARTBEAT, "Unix time of the last health heartbeat.", value=beat)
        expiry = None if owner.certificates is None else owner.certificates.expiry
        if expiry is not None:
            yield GaugeMetricFamily(
                metrics.BROKER_CERTIFICATE_EXPIRY,
                "Unix time at which the earliest broker node certificate expires.",
                value=expiry,
            )


def _empty(directory: Path) -> None:
    """Remove the sample files a previous container of this pod left (the /tmp emptyDir outlives it)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.glob("*.db"):
        entry.unlink(missing_ok=True)
