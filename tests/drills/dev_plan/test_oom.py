"""The ``oom`` scenario on the dev plan booted for real, under the pod runner's memory limits
(issue 24, item 4): a task that allocates past the worker pod's limit OOM-kills the worker
container (``OOMKilled``, exit 137, restarted by its kubelet), the poison task is redelivered,
and every good task published around it completes.

Not waited for here: the broker dead-letters the poison task past the queue's delivery limit, but
only after 21 attempts, each costing a worker container whose restarts back off (measured 327 s by
``make demo SCENARIO=oom``, which waits for it; the delivery limit itself is asserted in
``test_failure_paths.py``). Once the task has come back, the test purges it instead.

On the dev_plan package's cluster; starts from empty queues and leaves them empty (the workers
scaled to zero, the task queue purged, the workers back).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.config import from_env
from app.dlq import dead_letter_channel
from app.factory import make_app
from contract.wire import QUEUE_NAME, BrokerRole
from drill import failing, pod_scenarios, records
from drill.pod_scenarios import WORKERS
from drill.targets import PlanTarget, broker_env, broker_urls
from drill.tasks import RECORD
from harness.kube.limits import OOM_EXIT_CODE, OOM_REASON
from harness.runtime.poll import poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

GOOD_TASKS = 60
REDELIVERY_WAIT_S = 180.0
"""The OOM kill, the connection's loss seen by the broker, the task's second run on another pod."""


def publish_good(target: PlanTarget, first: int, count: int) -> list[str]:
    app = make_app(from_env(broker_env(target.cluster)))  # on this thread: by address
    try:
        return [app.send_task(RECORD, args=(n,)).id for n in range(first, first + count)]
    finally:
        app.close()


def hog_runs(results: Path, good: list[str]) -> int:
    attempts = records.tally(results / failing.ATTEMPTS_DIR).per_task
    return sum(n for task, n in attempts.items() if task not in good)


def restarted_after_oom(target: PlanTarget, since: float) -> set[str]:
    """Worker pods whose container started again after an OOM kill (their kubelet's restart)."""
    events = [e for e in target.cluster.events_of() if e.at >= since]
    killed_at = {e.pod: e.at for e in events if e.reason == OOM_REASON}
    return {e.pod for e in events if e.reason == "Started" and e.pod in killed_at and e.at > killed_at[e.pod]}


def fresh_workers(target: PlanTarget, *, purge: bool = False) -> None:
    """New worker pods instead of the ones in their restart back-off (up to 160 s after 6 OOM
    kills); with ``purge``, the task queue emptied while none runs (a poison task still there
    can then kill no further pod)."""
    replicas = target.planned_workers
    target.cluster.scale(WORKERS, 0)
    poll(lambda: target.workers_present() == 0, 120, "the worker pods gone")
    if purge:
        with dead_letter_channel(broker_urls(target.cluster, BrokerRole.WORKER)) as channel:
            channel.queue_purge(QUEUE_NAME)
    target.cluster.scale(WORKERS, replicas)
    target.cluster.wait_ready(300, WORKERS)


@pytest.mark.timeout(900)
def test_a_task_past_the_worker_memory_limit_is_oom_killed_and_redelivered(fresh: Booted) -> None:
    target, results = fresh.target, fresh.results
    since = time.time()
    good = publish_good(target, 0, GOOD_TASKS // 2)
    try:
        ready = [p.name for p in target.cluster.pods_of(WORKERS) if p.ready]
        assert ready, "no ready worker pod to publish from"
        target.cluster.exec(ready[0], "python", "-c", pod_scenarios.PUBLISH_HOG, timeout=60)
        poll(lambda: pod_scenarios.oom_kills(target.cluster, since), 120, "a worker container OOM-killed")
        poll(lambda: hog_runs(results, good) >= 2, REDELIVERY_WAIT_S, "the OOM-killed container's task run again")
        # A first restart backs off 10 s at most.
        poll(lambda: restarted_after_oom(target, since), 60, "an OOM-killed container restarted by its kubelet")
    finally:
        # Late acks: a good task running on a pod scaled away is redelivered, never lost.
        fresh_workers(target, purge=True)
    good += publish_good(target, len(good), GOOD_TASKS - len(good))
    poll(lambda: records.tally(results).distinct == len(good), 180, f"{len(good)} good tasks to complete")
    assert set(records.tally(results).per_task) == set(good), "the hog never completed; every good task did"

    killed = pod_scenarios.oom_kills(target.cluster, since)
    prefix = WORKERS.split("/", 1)[1]
    oom_events = [e for e in target.cluster.events_of() if e.at >= since and e.reason == OOM_REASON]
    print(f"\noom: {len(killed)} OOM kill(s) of {sorted(set(killed))}, the hog ran {hog_runs(results, good)} time(s)")
    assert all(e.pod.startswith(prefix) for e in oom_events), "only worker pods hit their limits"
    assert all(f"exit code {OOM_EXIT_CODE}" in e.message for e in oom_events), oom_events
