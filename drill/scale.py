"""The ``scale-in`` drill: a lane's workers scaled out under load, then in while their tasks run.

What an autoscaler (HPA, KEDA) does to a worker Deployment: one more pod while the queue is deep,
then one fewer. Kubernetes picks the pod to delete (the ReplicaSet controller's ranking, modelled
by the pod runner: ``harness.kube.rollout``), not the autoscaler, and nothing tells it which pods
are busy. The chosen pod gets SIGTERM: Celery's warm shutdown stops consuming, hands back the
messages it reserved but had not started, and waits for its running tasks, within the pod's grace
period (the lane's hard time limit plus a margin, ``contract.lanes``). Every task must complete,
on the pod being deleted or after a redelivery; none may be lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.kube.cluster import KubeCluster
from harness.runtime.poll import poll

SCALE_OUT_TIMEOUT_S = 180.0
"""For the extra pod to be Ready (a worker boots in seconds; a loaded machine, more)."""
TAKE_TASKS_S = 10.0
"""Scaled out this long before scaling in: the new pod takes its share of the backlog first."""
GONE_SLACK_S = 30.0
"""Beyond the grace period, for the pod runner to report the pod gone."""

Mark = Callable[[str], float]


@dataclass
class ScaleReport:
    """One scale-out and scale-in of ``owner``: which pod went, and how long its warm shutdown took."""

    owner: str
    replicas: int
    """The Deployment's pods before the drill (and after it)."""
    grace_s: int
    victim: str | None = None
    deleting_at: float | None = None
    gone_at: float | None = None
    finished_after_deletion: int | None = None
    """Tasks that finished on the victim after its deletion began (its warm shutdown); the runner
    counts them from the drill's records."""
    error: str | None = None

    @property
    def shutdown_s(self) -> float | None:
        if self.deleting_at is None or self.gone_at is None:
            return None
        return self.gone_at - self.deleting_at

    @property
    def ok(self) -> bool:
        """A pod was deleted and gone within its grace period (so nothing was SIGKILLed mid-task)."""
        return self.error is None and self.shutdown_s is not None and self.shutdown_s <= self.grace_s

    def to_json(self, since: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "replicas": self.replicas,
            "grace_s": self.grace_s,
            "victim": self.victim,
            "deleting_t": None if self.deleting_at is None else round(self.deleting_at - since, 3),
            "shutdown_s": None if self.shutdown_s is None else round(self.shutdown_s, 3),
            "finished_after_deletion": self.finished_after_deletion,
            "ok": self.ok,
            "error": self.error,
        }


def scale_in(cluster: KubeCluster, mark: Mark, owner: str) -> ScaleReport:
    """Scale ``owner`` out by one, let the new pod take tasks, scale it back in and wait for the
    pod the controller deleted to finish its warm shutdown."""
    before = {p.name for p in cluster.pods_of(owner)}
    name = owner.split("/", 1)[1]
    deployment = next(d for d in cluster.plan.deployments if d.name == name)
    report = ScaleReport(owner, len(before), deployment.template.spec.termination_grace_period_seconds)
    cluster.scale(owner, len(before) + 1)
    mark(f"{owner} scaled out to {len(before) + 1} (an autoscaler under load)")
    cluster.wait_ready(SCALE_OUT_TIMEOUT_S, owner)
    added = sorted({p.name for p in cluster.pods_of(owner)} - before)
    mark(f"{', '.join(added)} Ready, taking tasks")
    time.sleep(TAKE_TASKS_S)
    cluster.scale(owner, len(before))
    victims = poll(
        lambda: [p.name for p in cluster.pods_of(owner) if p.terminating],
        SCALE_OUT_TIMEOUT_S,
        f"{owner}'s ReplicaSet to delete a pod",
        interval=0.2,
    )
    report.victim, report.deleting_at = victims[0], time.time()
    grace = f"warm shutdown, grace {report.grace_s} s"
    mark(f"{owner} scaled in to {len(before)}: its ReplicaSet deletes {report.victim} ({grace})")
    poll(
        lambda: report.victim not in {p.name for p in cluster.pods_of(owner)},
        report.grace_s + GONE_SLACK_S,
        f"{report.victim} to finish its running tasks and exit",
        interval=0.5,
    )
    report.gone_at = time.time()
    mark(f"{report.victim} gone {report.gone_at - report.deleting_at:.0f} s after its deletion began")
    return report
