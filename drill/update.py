"""The ``update`` scenario's inputs and report: a second plan applied under load, step by step.

``make demo SCENARIO=update UPDATE="brokerMemoryMiB=1536"`` boots the stack's plan, starts the load,
then applies the plan of the same stack with UPDATE's settings (``make plan --set``) following
plan-diff's steps (``harness.kube.apply``). What the drill must show besides no task lost: how
few broker pods were Ready at any moment of the update (a majority must stay, or the quorum
queues stop), and which steps were applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.kube.apply import Applied, Step
from harness.kube.fields import Delta

SAMPLE_S = 0.1
"""How often the Ready brokers are counted during an update (a pod is unready for seconds at least)."""


@dataclass(frozen=True)
class UpdateSpec:
    """What the ``update`` scenario applies."""

    plan: Path
    """The second plan (``python -m plan --out build/plan-update --set ...``)."""
    steps: Path
    """plan-diff's steps from the running plan to that one (``build/plan-diff/steps.json``)."""
    settings: tuple[str, ...] = ()
    """UPDATE's ``key=value`` settings, for the report."""


@dataclass
class UpdateReport:
    """What applying the update did."""

    spec: UpdateSpec
    brokers_before: int
    steps: list[Step] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    min_ready_brokers: int | None = None
    min_ready_at: float | None = None
    differences: list[Delta] = field(default_factory=list)
    brokers_after: int | None = None
    quorum_members_after: int | None = None
    """Live replicas of the task queue once the update is done (measured, e.g. grown onto new nodes)."""
    stale: dict[str, list[str]] = field(default_factory=dict)
    """Pods that still run with old data of a ConfigMap or Secret the update changed (not rolled)."""
    error: str | None = None

    @property
    def majority(self) -> int:
        """Of the larger cluster, before or after: growing 3 -> 5, three must stay Ready."""
        return max(self.brokers_before, self.brokers_after or 0) // 2 + 1

    @property
    def ok(self) -> bool:
        """Every step applied, no pod left with old data, and never fewer Ready brokers than a majority."""
        ready = self.min_ready_brokers is not None and self.min_ready_brokers >= self.majority
        return self.error is None and not self.stale and ready

    def to_json(self, started_at: float) -> dict[str, Any]:
        return {
            "settings": list(self.spec.settings),
            "plan": str(self.spec.plan),
            "steps_file": str(self.spec.steps),
            "steps": [
                {
                    "t": round(a.started - started_at, 3),
                    "seconds": round(a.seconds, 3),
                    "type": a.step.type,
                    "name": a.step.name,
                    "step": a.step.step,
                    "reasons": list(a.step.reasons),
                    "object": a.step.object,
                    "action": a.action,
                }
                for a in self.applied
            ],
            "steps_not_applied": [s.label for s in self.steps[len(self.applied) :]],
            "brokers_before": self.brokers_before,
            "brokers_after": self.brokers_after,
            "quorum_members_after": self.quorum_members_after,
            "stale_pods": self.stale,
            "majority": self.majority,
            "min_ready_brokers": self.min_ready_brokers,
            "min_ready_at": None if self.min_ready_at is None else round(self.min_ready_at - started_at, 3),
            "differences": [
                {"object": d.obj, "path": d.path, "planned": d.planned, "local": d.local, "why": d.why}
                for d in self.differences
            ],
            "ok": self.ok,
            "error": self.error,
        }


class ReadyWatch:
    """Counts Ready pods every :data:`SAMPLE_S` in a thread, keeping the lowest count and when it was first seen."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self.lowest: int | None = None
        self.lowest_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def __enter__(self) -> ReadyWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def sample(self) -> None:
        now = self._count()
        if self.lowest is None or now < self.lowest:
            self.lowest, self.lowest_at = now, time.time()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()
