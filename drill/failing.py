"""Tasks that fail on purpose, for the failure-path drills (``tests/drills/dev_plan/test_failure_paths.py``).

Loaded into the image's worker beside ``drill.tasks`` (``drill.tasks.worker_env`` lists both in
``CELERY_WORKER_INCLUDE``). Every execution appends a record to ``<DRILL_RESULTS_DIR>/attempts/``
*when it starts*, so a test counts how often the broker handed a task out even when the run then
raises, dies or is killed; a run that completes also appends one to ``<DRILL_RESULTS_DIR>``
itself (what ``drill.records.tally`` of the results directory counts as completed).

``fail``
    Raises: Celery rejects the message without requeue (``task_acks_on_failure=False``).
``crash``
    The pool process exits mid-task (``os._exit``): Celery's ``task_reject_on_worker_lost``
    rejects the message with requeue.
``kill``
    The pool process kills itself with SIGKILL mid-task (what the OOM killer does): the same
    requeue; Celery says ``signal 9 (SIGKILL)``.
``overrun``
    Ignores its soft time limit and sleeps past its hard one (``OVERRUN_TIME_LIMIT_S``), like a
    task stuck in a call the soft limit's exception cannot interrupt: the pool process is killed
    and Celery rejects the message with requeue (``task_acks_on_timeout=False``).
``fail_while_marked``
    Raises while ``<DRILL_RESULTS_DIR>/FAIL_MARKER`` exists, completes once it is gone: a task
    that is dead-lettered, then fixed, then replayed from the dead-letter queue.
``retry_once``
    Asks for a retry (``Task.retry``, one second later) on its first run, completes on the second.
``hog``
    Allocates memory 16 MiB at a time, every page touched, up to ``HOG_MAX_MIB``: far past any
    worker pod's memory limit, so the OOM killer ends it (the ``oom`` scenario). Where nothing
    limits it, it completes, and the scenario sees no OOM kill and fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Final

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from drill import records
from drill.tasks import ENV_RESULTS_DIR

FAIL: Final = "drill.failing.fail"
CRASH: Final = "drill.failing.crash"
KILL: Final = "drill.failing.kill"
OVERRUN: Final = "drill.failing.overrun"
FAIL_WHILE_MARKED: Final = "drill.failing.fail_while_marked"
HOG: Final = "drill.failing.hog"
HOG_STEP_MIB: Final = 16
HOG_MAX_MIB: Final = 4096
RETRY_ONCE: Final = "drill.failing.retry_once"

ATTEMPTS_DIR: Final = "attempts"
"""Subdirectory of the results directory with one record per started execution."""
FAIL_MARKER: Final = "fail-marker"
"""File in the results directory that makes ``fail_while_marked`` raise while it exists."""
OVERRUN_TIME_LIMIT_S: Final = 2
"""``overrun``'s hard time limit, seconds: short, so the drill's ~20 attempts take seconds each."""
OVERRUN_SOFT_TIME_LIMIT_S: Final = 1
"""``overrun``'s soft time limit, seconds. It must be set below the hard one: Celery's prefork pool
arms the hard limit only when the soft one fires (``hard - soft`` later), so with the app's
``task_soft_time_limit`` (50 s) a per-task ``time_limit`` of 2 s alone would act after 50 s."""
OVERRUN_SLEEP_S: Final = 30
"""How long ``overrun`` sleeps: far past its time limit."""
CRASH_EXIT_STATUS: Final = 70


class DrillFailure(RuntimeError):
    """The exception the failing tasks raise on purpose."""


def _results_dir() -> Path:
    raw = os.environ.get(ENV_RESULTS_DIR, "").strip()
    if not raw:
        raise RuntimeError(f"drill.failing needs {ENV_RESULTS_DIR}: its tests count executions")
    return Path(raw)


def _redelivered(task: Task[Any, Any]) -> bool:
    return bool((task.request.delivery_info or {}).get("redelivered", False))


def _attempt(task: Task[Any, Any], n: int) -> Path:
    """Record that this execution started; return the results directory."""
    directory = _results_dir()
    attempts = directory / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    records.append(attempts, records.make_record(str(task.request.id), n, redelivered=_redelivered(task)))
    return directory


def _completed(task: Task[Any, Any], n: int, directory: Path) -> None:
    records.append(directory, records.make_record(str(task.request.id), n, redelivered=_redelivered(task)))


@shared_task(name=FAIL, bind=True)
def fail(self: Task[Any, Any], n: int) -> None:
    """Record the attempt, then raise."""
    _attempt(self, n)
    raise DrillFailure(f"fail({n}) fails on purpose")


@shared_task(name=CRASH, bind=True)
def crash(self: Task[Any, Any], n: int) -> None:
    """Record the attempt, then end the pool process without any cleanup."""
    _attempt(self, n)
    os._exit(CRASH_EXIT_STATUS)


@shared_task(name=KILL, bind=True)
def kill(self: Task[Any, Any], n: int) -> None:
    """Record the attempt, then SIGKILL the pool process running it."""
    _attempt(self, n)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name=OVERRUN, bind=True, soft_time_limit=OVERRUN_SOFT_TIME_LIMIT_S, time_limit=OVERRUN_TIME_LIMIT_S)
def overrun(self: Task[Any, Any], n: int) -> None:
    """Record the attempt, then sleep through the soft limit until the hard limit kills the process."""
    _attempt(self, n)
    deadline = time.monotonic() + OVERRUN_SLEEP_S
    while time.monotonic() < deadline:
        try:
            time.sleep(deadline - time.monotonic())
        except SoftTimeLimitExceeded:
            continue


@shared_task(name=FAIL_WHILE_MARKED, bind=True)
def fail_while_marked(self: Task[Any, Any], n: int) -> None:
    """Record the attempt; raise while the marker file exists, else record a completion."""
    directory = _attempt(self, n)
    if (directory / FAIL_MARKER).exists():
        raise DrillFailure(f"fail_while_marked({n}): {FAIL_MARKER} exists")
    _completed(self, n, directory)


@shared_task(name=RETRY_ONCE, bind=True, max_retries=1)
def retry_once(self: Task[Any, Any], n: int) -> None:
    """Record the attempt; retry once (one second later, through delayed delivery), then complete."""
    directory = _attempt(self, n)
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    _completed(self, n, directory)


@shared_task(name=HOG, bind=True)
def hog(self: Task[Any, Any], n: int) -> None:
    """Record the attempt, then hold ever more memory (a leak, a huge input read whole) until killed."""
    directory = _attempt(self, n)
    held = [bytearray(HOG_STEP_MIB << 20) for _ in range(HOG_MAX_MIB // HOG_STEP_MIB)]
    del held
    _completed(self, n, directory)
