"""The ``oom`` scenario on the dev plan booted for real, under the pod runner's memory limits
(issue 24, item 4): a task that allocates past the worker pod's limit OOM-kills the worker
container (``OOMKilled``, exit 137, restarted by its kubelet), the poison task ends in
``celery.dlq`` and every good task published around it completes.

On the dev_plan package's cluster; starts from empty queues.
"""

from __future__ import annotations

import time

import pytest

from drill import failing, pod_scenarios, records
from drill.pod_scenarios import WORKERS
from drill.targets import PlanTarget
from drill.tasks import RECORD
from harness.kube.limits import OOM_EXIT_CODE, OOM_REASON
from harness.runtime.poll import poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

GOOD_TASKS = 60


def publish_good(target: PlanTarget, first: int, count: int) -> list[str]:
    app, _ = target.publisher()
    try:
        return [app.send_task(RECORD, args=(n,)).id for n in range(first, first + count)]
    finally:
        app.close()


@pytest.mark.timeout(1200)
def test_a_task_past_the_worker_memory_limit_is_oom_killed_then_dead_lettered(fresh: Booted) -> None:
    target, results = fresh.target, fresh.results
    since = time.time()
    marks: list[tuple[float, str]] = []

    def mark(label: str) -> float:
        marks.append((time.time() - since, label))
        print(f"  +{marks[-1][0]:6.1f}s {label}")
        return time.time()

    good = publish_good(target, 0, GOOD_TASKS // 2)
    pod_scenarios.oom(target.cluster, mark)
    good += publish_good(target, len(good), GOOD_TASKS - len(good))
    poll(lambda: records.tally(results).distinct == len(good), 180, f"{len(good)} good tasks to complete")
    assert set(records.tally(results).per_task) == set(good), "the hog never completed; every good task did"

    killed = pod_scenarios.oom_kills(target.cluster, since)
    prefix = WORKERS.split("/", 1)[1]
    oom_events = [e for e in target.cluster.events_of() if e.at >= since and e.reason == OOM_REASON]
    assert killed, "no worker container was OOM-killed"
    assert all(e.pod.startswith(prefix) for e in oom_events), "only worker pods hit their limits"
    assert all(f"exit code {OOM_EXIT_CODE}" in e.message for e in oom_events), oom_events
    attempts = records.tally(results / failing.ATTEMPTS_DIR).per_task
    hog_runs = sum(attempts.values()) - sum(attempts.get(t, 0) for t in good)
    print(f"\noom: {len(killed)} OOM kill(s) of {sorted(set(killed))}, hog ran {hog_runs} time(s), {marks[-1][0]:.0f}s")
