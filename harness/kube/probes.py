"""Probe bookkeeping as kubelet's prober workers keep it: when to probe, and what a result changes.

Pure: the runner runs the check (exec/tcp/http with the timeout) and feeds the outcome in, with
its own clock. Semantics kept from kubelet: readiness starts as failure and liveness as success;
liveness and readiness wait for the startup probe to succeed; a result flips only after
``successThreshold`` / ``failureThreshold`` identical outcomes in a row; probes run on a
``periodSeconds`` ticker from container start, skipping ticks inside ``initialDelaySeconds``; a
liveness or startup failure means: kill the container (then restartPolicy decides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from harness.kube.objects import Container, Probe


class ProbeKind(Enum):
    """Which of the three probes."""

    STARTUP = "startup"
    READINESS = "readiness"
    LIVENESS = "liveness"


@dataclass
class ProbeWorker:
    """One probe of one container incarnation."""

    probe: Probe
    kind: ProbeKind
    started_at: float
    result: bool = False
    run: int = 0
    last: bool | None = None
    probes_done: int = 0
    last_run: float | None = None
    """When the last probe ran (set by :meth:`record`)."""

    def __post_init__(self) -> None:
        # kubelet's initial results: a live container until proven dead, unready until proven ready.
        self.result = self.kind is ProbeKind.LIVENESS

    def next_due(self) -> float:
        """The time of the next probe: the first ticker tick at or after the initial delay, then one
        period after the last run (the kubelet's ticker drops the ticks a slow probe missed, so
        late probes never fire back to back)."""
        period = self.probe.period_seconds
        first_tick = math.ceil(self.probe.initial_delay_seconds / period) if period else 0
        scheduled = self.started_at + (first_tick + self.probes_done) * period
        return scheduled if self.last_run is None else max(scheduled, self.last_run + period)

    def record(self, ok: bool, at: float | None = None) -> bool | None:
        """Feed one outcome (a timeout is a failure) that ran at ``at``; returns the new result when
        it flips, else None."""
        self.probes_done += 1
        self.last_run = at
        self.run = self.run + 1 if ok == self.last else 1
        self.last = ok
        threshold = self.probe.success_threshold if ok else self.probe.failure_threshold
        if ok == self.result or self.run < threshold:
            return None
        self.result = ok
        return ok

    @property
    def kills(self) -> bool:
        """Whether the current result means the kubelet kills the container."""
        failing = self.last is False and self.run >= self.probe.failure_threshold
        return self.kind is not ProbeKind.READINESS and failing


@dataclass
class ContainerProbes:
    """The probes of one container incarnation, gated as the kubelet gates them."""

    startup: ProbeWorker | None
    readiness: ProbeWorker | None
    liveness: ProbeWorker | None

    @classmethod
    def for_container(cls, c: Container, started_at: float) -> ContainerProbes:
        """Workers for ``c``'s probes; ``started_at`` is when the process started (postStart done)."""

        def make(p: Probe | None, kind: ProbeKind) -> ProbeWorker | None:
            return None if p is None else ProbeWorker(p, kind, started_at)

        return cls(
            make(c.startup_probe, ProbeKind.STARTUP),
            make(c.readiness_probe, ProbeKind.READINESS),
            make(c.liveness_probe, ProbeKind.LIVENESS),
        )

    @property
    def started(self) -> bool:
        """No startup probe, or it has succeeded: the other probes may run."""
        return self.startup is None or self.startup.result

    def active(self) -> list[ProbeWorker]:
        """The workers that probe now: startup alone until it succeeds, then readiness and liveness."""
        if not self.started:
            return [self.startup] if self.startup is not None else []
        return [w for w in (self.readiness, self.liveness) if w is not None]

    @property
    def ready(self) -> bool:
        """Container readiness: started, and its readiness probe (if any) currently succeeds."""
        return self.started and (self.readiness is None or self.readiness.result)

    @property
    def must_restart(self) -> bool:
        """A startup or liveness probe has reached its failure threshold."""
        return any(w is not None and w.kills for w in (self.startup, self.liveness))
