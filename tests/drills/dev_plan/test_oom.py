"""The ``oom`` scenario on the dev plan booted for real, under the pod runner's memory limits
(issue 24, item 4): a task that allocates past the worker pod's limit OOM-kills the worker
container (``OOMKilled``, exit 137, restarted by its kubelet), the poison task is redelivered,
every good task published around it completes, and the broker dead-letters the poison task
past the queue's delivery limit.

On the dev_plan package's cluster; starts from empty queues and leaves them empty (the workers
scaled to zero, the task queue purged, the workers back).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.dlq import dead_letter_channel
from contract.wire import QUEUE_NAME, BrokerRole
from drill import failing, pod_scenarios, records
from drill.pod_scenarios import WORKERS
from drill.targets import PlanTarget, broker_urls
from drill.tasks import RECORD
from harness.kube.limits import OOM_EXIT_CODE, OOM_REASON
from harness.runtime.poll import PollTimeout, poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

GOOD_TASKS = 60
DEAD_LETTER_WAIT_S = 600.0
"""21 attempts at the plan's delivery limit of 20, each costing a worker container whose restarts
back off per pod (0, 10, 20, 40, 80, 160 s): about 7 kills per pod of 3, measured 327 s."""


def publish_good(target: PlanTarget, first: int, count: int) -> list[str]:
    app, _ = target.publisher()
    try:
        return [app.send_task(RECORD, args=(n,)).id for n in range(first, first + count)]
    finally:
        app.close()


def hog_runs(results: Path, good: list[str]) -> int:
    attempts = records.tally(results / failing.ATTEMPTS_DIR).per_task
    return sum(n for task, n in attempts.items() if task not in good)


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


@pytest.mark.timeout(1200)
def test_a_task_past_the_worker_memory_limit_is_oom_killed_redelivered_then_dead_lettered(fresh: Booted) -> None:
    target, results = fresh.target, fresh.results
    since = time.time()
    marks: list[tuple[float, str]] = []

    def mark(label: str) -> float:
        marks.append((time.time() - since, label))
        print(f"  +{marks[-1][0]:6.1f}s {label}")
        return time.time()

    good = publish_good(target, 0, GOOD_TASKS // 2)
    dead = False
    try:
        try:
            pod_scenarios.oom(target.cluster, mark, timeout=DEAD_LETTER_WAIT_S, wait_ready=False)
            dead = True
        except PollTimeout as exc:
            mark(f"not dead-lettered: {exc}")
        if dead:
            # Late acks: a good task running on a pod scaled away is redelivered, never lost.
            fresh_workers(target)
            mark("fresh worker pods Ready")
        good += publish_good(target, len(good), GOOD_TASKS - len(good))
        poll(lambda: records.tally(results).distinct == len(good), 180, f"{len(good)} good tasks to complete")
        assert set(records.tally(results).per_task) == set(good), "the hog never completed; every good task did"

        killed = pod_scenarios.oom_kills(target.cluster, since)
        prefix = WORKERS.split("/", 1)[1]
        oom_events = [e for e in target.cluster.events_of() if e.at >= since and e.reason == OOM_REASON]
        runs = hog_runs(results, good)
        print(f"\noom: {len(killed)} OOM kill(s) of {sorted(set(killed))}, the hog ran {runs} time(s)")
        assert killed, "no worker container was OOM-killed"
        assert all(e.pod.startswith(prefix) for e in oom_events), "only worker pods hit their limits"
        assert all(f"exit code {OOM_EXIT_CODE}" in e.message for e in oom_events), oom_events
        assert runs >= 2, "the task of an OOM-killed container is redelivered"
        assert dead, f"the hog was not dead-lettered in {DEAD_LETTER_WAIT_S:.0f}s: {len(killed)} OOM kills, {runs} runs"
    finally:
        if not dead:
            fresh_workers(target, purge=True)
