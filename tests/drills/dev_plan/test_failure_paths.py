"""Failure paths on the dev plan booted for real (RabbitMQ 4.3, the image's worker): a task that
fails is kept in ``celery.dlq`` with the reason the worker gave it (``app.failures``), never
redelivered forever and never dropped, and ``python -m app.dlq`` lists it without consuming it
and replays it without losing it, even when killed mid-replay.

The failing tasks are ``drill.failing``'s; each records every execution when it starts (under
``<results>/attempts``) and every completion (in ``<results>``), so the runs are counted, not
inferred from logs.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from app.config import from_env
from app.dlq import DeadTask, Outcome, dead_letter_channel, list_dead
from app.factory import make_app
from contract import timing
from contract.wire import DEAD_LETTER_QUEUE, QUEUE_NAME, BrokerRole
from drill import failing, records
from drill.targets import PlanTarget, broker_env, broker_urls
from harness.runtime.poll import poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

ROOT = Path(__file__).resolve().parents[3]
DEAD_TIMEOUT_S = 180.0
"""Long enough for delivery-limit + 1 runs of ``overrun`` (2 s hard limit each, plus respawns)."""


def plan_delivery_limit(target: PlanTarget) -> int:
    """The ``delivery-limit`` of the policy that applies to the task queue (of those that match it, the
    one of highest priority: its lane's), from the plan's ConfigMap."""
    for configmap in target.cluster.plan.configmaps:
        raw = configmap.get("definitions.json")
        if raw is None:
            continue
        matching = [p for p in json.loads(raw)["policies"] if re.search(p["pattern"], QUEUE_NAME)]
        policy = max(matching, key=lambda p: int(p["priority"]), default=None)
        if policy is not None and "delivery-limit" in policy["definition"]:
            return int(policy["definition"]["delivery-limit"])
    raise AssertionError("the plan has no policy with a delivery-limit for the task queue")


def publish(target: PlanTarget, task: str, count: int) -> list[str]:
    """``count`` confirmed publishes of ``task(n)``, n = 0..count-1; their task ids."""
    app = make_app(from_env(broker_env(target.cluster)))  # on this thread: by address
    try:
        return [app.send_task(task, args=(n,)).id for n in range(count)]
    finally:
        app.close()


def dead(target: PlanTarget) -> dict[str, DeadTask]:
    """What ``celery.dlq`` holds, by task id (read with app.dlq's non-destructive listing)."""
    with dead_letter_channel(broker_urls(target.cluster, BrokerRole.WORKER)) as channel:
        return {t.task_id: t for t in list_dead(channel) if t.task_id is not None}


def wait_dead(target: PlanTarget, ids: Sequence[str], timeout: float = DEAD_TIMEOUT_S) -> dict[str, DeadTask]:
    poll(lambda: dead(target).keys() >= set(ids), timeout, f"{len(ids)} task(s) in {DEAD_LETTER_QUEUE}", interval=1.0)
    found = dead(target)
    return {task_id: found[task_id] for task_id in ids}


def attempts(results: Path) -> records.Tally:
    return records.tally(results / failing.ATTEMPTS_DIR)


def task_queue_idle(target: PlanTarget) -> bool:
    return target.queue_stat("messages") == 0 and target.queue_stat("messages_unacknowledged") == 0


def dlq_cli(target: PlanTarget, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BROKER_URLS": ",".join(broker_urls(target.cluster, BrokerRole.WORKER))}
    for name in ("BROKER_HOSTS", "BROKER_USER", "BROKER_PASSWORD", "BROKER_PORT", "BROKER_VHOST"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "app.dlq", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(target: PlanTarget, *args: str) -> str:
    proc = dlq_cli(target, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"python -m app.dlq {' '.join(args)}: exit {proc.returncode}\n{out}\n{err}"
    return out


@pytest.fixture
def marker(fresh: Booted) -> Iterator[Path]:
    path = fresh.results / failing.FAIL_MARKER
    path.touch()
    yield path
    path.unlink(missing_ok=True)


def failed(task: DeadTask) -> str:
    """The reason the worker kept ``task`` with (asserting it did, not the broker's dead-lettering)."""
    kept = task.refusal
    assert task.latest is None, f"{task.task_id}: dead-lettered by the broker ({task.latest}), not kept by the worker"
    assert kept is not None, f"{task.task_id}: no reason header"
    assert (kept.outcome, kept.queue) == (Outcome.FAILED, QUEUE_NAME), kept
    return kept.reason


def test_a_task_that_raises_is_kept_at_once_with_its_exception_and_ran_once(fresh: Booted) -> None:
    target = fresh.target
    ids = publish(target, failing.FAIL, 3)
    found = wait_dead(target, ids, timeout=60)
    for n, task in enumerate(found.values()):
        assert task.task_name == failing.FAIL
        reason = failed(task)
        # The exception as Python names it, then the traceback's tail down to the raise.
        assert reason.startswith(f"drill.failing.DrillFailure: fail({n}) fails on purpose\n"), reason
        assert "drill/failing.py" in reason, reason
        assert "raise DrillFailure" in reason, reason
        assert (task.why, task.refusal.delivery_count if task.refusal else None) == ("failed x1", 0), task
    # Dead-lettered, so nothing of it is left to redeliver: the count below is final.
    poll(lambda: task_queue_idle(target), 30, f"queue {QUEUE_NAME!r} idle")
    ran = attempts(fresh.results)
    assert {task_id: ran.per_task[task_id] for task_id in ids} == dict.fromkeys(ids, 1)
    assert ran.executions == len(ids)


REQUEUED = {
    # The pool process exits mid-task: task_reject_on_worker_lost -> basic.reject(requeue=True).
    failing.CRASH: (0.0, f"worker lost: Worker exited prematurely: exitcode {failing.CRASH_EXIT_STATUS} Job: "),
    # The pool process is SIGKILLed mid-task (as by the OOM killer): the same.
    failing.KILL: (0.0, "worker lost: Worker exited prematurely: signal 9 (SIGKILL) Job: "),
    # The hard time limit kills the pool process: task_acks_on_timeout=False -> basic.reject(requeue=True).
    # Each run lasts until the hard limit, so runs are at least that far apart.
    failing.OVERRUN: (
        float(failing.OVERRUN_TIME_LIMIT_S),
        f"hard time limit {failing.OVERRUN_TIME_LIMIT_S} s exceeded",
    ),
}
"""The ways a task is requeued without end: the least time between two of its runs, and how the
worker's reason for keeping it starts."""


def test_a_task_requeued_past_the_delivery_limit_is_kept_with_why(fresh: Booted) -> None:
    """Every way at once (in different pool processes; one wait instead of three), each delivery later
    than the one before by the lane policy's retry backoff (contract.timing.RETRY_DELAY_MIN_MS), up to
    the dev plan's delivery limit (5: its default lane's ``deliveryLimit``)."""
    target = fresh.target
    limit = plan_delivery_limit(target)
    started = time.monotonic()
    ids = {task: publish(target, task, 1)[0] for task in REQUEUED}
    found = wait_dead(target, list(ids.values()))
    seconds = time.monotonic() - started
    poll(lambda: task_queue_idle(target), 30, f"queue {QUEUE_NAME!r} idle")
    runs, _ = records.read(fresh.results / failing.ATTEMPTS_DIR)
    for task, task_id in ids.items():
        min_gap_s, why = REQUEUED[task]
        reason = failed(found[task_id])
        assert reason.startswith(why), f"{task}: {reason!r}"
        # The last delivery carries x-delivery-count = the limit: its requeue would be dead-lettered,
        # so the worker keeps it instead, and says so.
        assert found[task_id].why == f"failed x{limit + 1}", found[task_id]
        starts = sorted(r.finished_at for r in runs if r.task_id == task_id)
        # Measured on 4.3.6: each basic.reject(requeue=True) counts; the delivery that follows the
        # return taking the count past the limit is not made: the message is dead-lettered instead.
        # So the task runs once, then once per counted return up to the limit: limit + 1 times
        # (the worker keeps the last one itself: the same number of runs).
        assert len(starts) == limit + 1, f"{task}: ran {len(starts)} times with delivery-limit {limit}"
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # The k-th failed delivery waits min(RETRY_DELAY_MIN_MS x k, RETRY_DELAY_MAX_MS) before the next.
        backoff = [min(timing.RETRY_DELAY_MIN_MS * k, timing.RETRY_DELAY_MAX_MS) / 1000 for k in range(1, limit + 1)]
        expected = [min_gap_s + pause for pause in backoff]
        short = [(round(gap, 2), want) for gap, want in zip(gaps, expected, strict=True) if gap < want * 0.9]
        assert not short, f"{task}: runs closer than the retry backoff: (gap s, expected s) {short}"
        print(f"\n{task}: runs {', '.join(f'{gap:.1f}' for gap in gaps)} s apart")
        assert not records.tally(fresh.results).per_task[task_id], f"{task} completed, it must not"
    print(f"\ndelivery-limit {limit}: {', '.join(REQUEUED)} kept in {DEAD_LETTER_QUEUE} within {seconds:.1f} s")
    for task_id in ids.values():
        print(f"  {found[task_id].task_name}: {failed(found[task_id])}")


def test_list_leaves_the_tasks_and_replay_runs_them_once_fixed(fresh: Booted, marker: Path) -> None:
    target = fresh.target
    fixed = publish(target, failing.FAIL_WHILE_MARKED, 5)
    (other,) = publish(target, failing.FAIL, 1)
    wait_dead(target, [*fixed, other], timeout=60)

    # Listed twice: the first listing hands every message back (basic.nack, not counted).
    for listed in (run_cli(target, "list"), run_cli(target, "list")):
        for task_id in [*fixed, other]:
            assert task_id in listed, f"{task_id} not listed:\n{listed}"
        assert f"{len(fixed) + 1} dead-lettered task(s)" in listed, listed
        assert listed.count("failed x1") == len(fixed) + 1, listed
        assert listed.count("\n    failed: drill.failing.DrillFailure: ") == len(fixed) + 1, listed
    assert set(dead(target)) == {*fixed, other}, "listing must leave every message in the queue"

    marker.unlink()
    out = run_cli(target, "replay", "--task", failing.FAIL_WHILE_MARKED)
    assert f"replayed {len(fixed)}, skipped 1, 0 failed" in out, out

    poll(lambda: records.tally(fresh.results).distinct == len(fixed), 60, "the replayed tasks to complete")
    poll(lambda: task_queue_idle(target), 30, f"queue {QUEUE_NAME!r} idle")
    completed = records.tally(fresh.results)
    assert set(completed.per_task) == set(fixed)
    assert completed.duplicates == 0
    ran = attempts(fresh.results)
    # Once dead-lettered (marker present), once replayed: same task id, fresh delivery count.
    assert {task_id: ran.per_task[task_id] for task_id in fixed} == dict.fromkeys(fixed, 2)
    assert set(dead(target)) == {other}, "--task must leave the other task's message in the queue"


REPLAY_TASKS = 300
KILL_AFTER = 30


def test_a_replay_killed_mid_way_loses_nothing(fresh: Booted, marker: Path) -> None:
    target = fresh.target
    ids = publish(target, failing.FAIL_WHILE_MARKED, REPLAY_TASKS)
    wait_dead(target, ids, timeout=120)
    marker.unlink()

    proc = dlq_cli(target, "replay")
    assert proc.stdout is not None
    # A small pipe: the replay blocks on its own output ~45 lines ahead of what we read, so the
    # kill always lands mid-replay however fast the broker confirms (300 lines fit in 64 KiB).
    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    confirmed = 0
    while confirmed < KILL_AFTER:
        line = proc.stdout.readline()
        assert line, f"replay ended after {confirmed} confirms: {proc.stderr.read() if proc.stderr else ''}"
        confirmed += line.startswith("replayed ")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the replay finished before the kill: nothing was tested"

    # Every task is either still dead-lettered or back in the queue and run; none is anywhere else.
    def accounted() -> bool:
        return task_queue_idle(target) and set(ids) <= set(dead(target)) | set(records.tally(fresh.results).per_task)

    poll(accounted, 60, "every task either in the dead-letter queue or completed", interval=1.0)
    in_dlq, done = set(dead(target)), set(records.tally(fresh.results).per_task)
    assert in_dlq, "the kill came after the last replay: nothing was left to lose"
    assert len(done) >= KILL_AFTER, f"only {len(done)} replayed tasks ran, {KILL_AFTER} were confirmed"
    assert in_dlq | done == set(ids), "a task id that was never published showed up"

    out = run_cli(target, "replay")
    assert "0 failed" in out, out
    poll(
        lambda: records.tally(fresh.results).distinct == REPLAY_TASKS and task_queue_idle(target),
        120,
        "every task to complete after the second replay",
    )
    final = records.tally(fresh.results)
    assert set(final.per_task) == set(ids)
    # One message at a time sits between its confirm and its ack: at most one runs twice.
    assert final.duplicates <= 1, f"{final.duplicates} duplicate runs: {final.per_task.most_common(3)}"
    assert not dead(target), f"{DEAD_LETTER_QUEUE} not empty after the second replay"
    print(
        f"\nkilled replay: {len(done)} of {REPLAY_TASKS} ran before the second replay, "
        f"{len(in_dlq)} left in {DEAD_LETTER_QUEUE}, {final.duplicates} duplicate run(s)"
    )
