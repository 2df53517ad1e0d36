"""How long a frozen broker node held each worker: which broker every worker consumes from, watched
through the freeze.

Each worker says which broker its consumer consumes from (``contract.metrics.BROKER_INFO`` on its
``/metrics``, set when its consumer starts consuming and gone when it stops). :class:`BrokerWatch`
reads every worker pod's exporter from the host every ``INTERVAL_S`` on a thread of its own; from
its :class:`Look` s, :func:`holds` finds, per worker, the longest stretch of the freeze during which
it did not consume from a healthy broker: from the freeze until it consumes elsewhere for a worker
that was on the frozen node, any gap for one that was not. :class:`FreezeReport` is what the
``freeze-broker`` drill reports and judges (``timing.FROZEN_BROKER_HOLD_MAX_S``).

A worker on a frozen node still counts itself as consuming until its heartbeats tell it otherwise:
that is exactly the time the node holds it, and it is counted.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from contract import metrics, timing
from harness.kube.cluster import KubeCluster
from harness.prometheus import ScrapeJob, pod_targets

INTERVAL_S: Final = 0.5
"""How often the watch reads every worker's exporter (a worker's move takes tens of seconds)."""
READ_TIMEOUT_S: Final = 1.0
_BROKER_LABEL = re.compile(rf'^{re.escape(metrics.BROKER_INFO)}{{[^}}]*broker="([^"]*)"[^}}]*}} 1(\.0)?$', re.M)


@dataclass(frozen=True)
class Look:
    """One reading of every worker: the broker pod each consumes from (None: not consuming, or no answer)."""

    at: float
    """Epoch seconds."""
    brokers: dict[str, str | None]


def broker_of(exposition: str) -> str | None:
    """``host:port`` of the broker a worker's ``/metrics`` says it consumes from, None if none."""
    found = _BROKER_LABEL.search(exposition)
    return found.group(1) if found else None


def pod_of(broker: str | None, pods: Mapping[str, str | None]) -> str | None:
    """The broker pod (name -> IP) that ``host:port`` names: by IP or by its DNS name's first label."""
    if broker is None:
        return None
    host = broker.rpartition(":")[0]
    for name, ip in pods.items():
        if host in (ip, name) or host.split(".", 1)[0] == name:
            return name
    return None


class BrokerWatch:
    """Reads which broker each worker consumes from, every ``interval`` s, until stopped."""

    def __init__(self, cluster: KubeCluster, brokers: str, workers: str, interval: float = INTERVAL_S) -> None:
        self.cluster = cluster
        self.brokers = brokers
        self.job = ScrapeJob(metrics.WORKER_JOB, workers, metrics.WORKER_METRICS_PORT_NAME, metrics.WORKER_METRICS_PATH)
        self.interval = interval
        self.looks: list[Look] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def __enter__(self) -> BrokerWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def look(self) -> Look:
        """Every worker pod's broker now."""
        pods = {p.name: p.ip for p in self.cluster.pods_of(self.brokers)}
        brokers: dict[str, str | None] = {}
        for target in pod_targets(self.cluster, self.job):
            try:
                with urllib.request.urlopen(f"http://{target.address}{self.job.path}", timeout=READ_TIMEOUT_S) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            brokers[target.labels["pod"]] = pod_of(broker_of(text), pods)
        return Look(time.time(), brokers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.looks.append(self.look())
            self._stop.wait(self.interval)


@dataclass(frozen=True)
class WorkerHold:
    worker: str
    on_frozen_node: bool
    """It consumed from the frozen node when the freeze began."""
    held_s: float
    """The longest stretch of the freeze it did not consume from a healthy broker."""
    left: bool
    """It consumed from a healthy broker before the freeze ended."""


def holds(looks: Sequence[Look], victim: str, frozen_at: float, thawed_at: float) -> list[WorkerHold]:
    """Per worker, how long the freeze of ``victim`` (from ``frozen_at`` to ``thawed_at``) kept it from a
    healthy broker; see the module docstring. A worker missing from a look counts as not consuming."""
    before = [look for look in looks if look.at <= frozen_at]
    during = [look for look in looks if frozen_at < look.at <= thawed_at]
    workers = sorted({w for look in (*before[-1:], *during) for w in look.brokers})
    found: list[WorkerHold] = []
    for worker in workers:
        at_freeze = before[-1].brokers.get(worker) if before else None
        healthy = at_freeze is not None and at_freeze != victim
        since = None if healthy else frozen_at
        longest = 0.0
        for look in during:
            broker = look.brokers.get(worker)
            ok = broker is not None and broker != victim
            if ok and since is not None:
                longest, since = max(longest, look.at - since), None
            elif not ok and since is None:
                since = look.at
        left = since is None
        if since is not None:
            longest = max(longest, thawed_at - since)
        found.append(WorkerHold(worker, at_freeze == victim, longest, left))
    return found


@dataclass
class FreezeReport:
    """One freeze: the node, its role, how long each worker stayed off a healthy broker, when the
    node stopped being Ready."""

    victim: str
    role: str
    """``leader`` or ``follower`` of the task queue when it froze."""
    seconds: float
    limit_s: float = float(timing.FROZEN_BROKER_HOLD_MAX_S)
    frozen_at: float | None = None
    thawed_at: float | None = None
    holds: list[WorkerHold] = field(default_factory=list)
    not_ready_after_s: float | None = None
    """From the freeze to the frozen pod's NotReady (its readiness probe failing); None: never."""
    placed: list[str] = field(default_factory=list)
    """How a worker was put on the node first (its connection closed elsewhere), if none was there."""
    error: str | None = None

    @property
    def on_frozen_node(self) -> int:
        return sum(h.on_frozen_node for h in self.holds)

    @property
    def ok(self) -> bool:
        """Every worker consumed from a healthy broker within the limit, at least one was on the frozen
        node (otherwise nothing was shown), and the frozen pod stopped being Ready."""
        within = all(h.left and h.held_s <= self.limit_s for h in self.holds)
        return self.error is None and within and self.on_frozen_node > 0 and self.not_ready_after_s is not None

    def to_json(self, started: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - started, 3)

        return {
            "victim": self.victim,
            "role": self.role,
            "seconds": self.seconds,
            "frozen_at": rel(self.frozen_at),
            "thawed_at": rel(self.thawed_at),
            "limit_s": self.limit_s,
            "workers_on_frozen_node": self.on_frozen_node,
            "workers": [
                {"worker": h.worker, "on_frozen_node": h.on_frozen_node, "held_s": round(h.held_s, 1), "left": h.left}
                for h in self.holds
            ],
            "not_ready_after_s": None if self.not_ready_after_s is None else round(self.not_ready_after_s, 1),
            "placed": self.placed,
            "ok": self.ok,
            "error": self.error,
        }
