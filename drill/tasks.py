"""The drills' own tasks, loaded into the image's worker without a second app.

The drills run the worker image's command unchanged (``contract.wire.WORKER_COMMAND``) and add
this module (and ``drill.failing``, the failure-path tasks) through Celery's own CLI environment,
``CELERY_WORKER_INCLUDE=drill.tasks,drill.failing`` (the ``--include`` option of ``celery worker``),
so the worker image ships none of it.

``record`` is deliberately *not* idempotent: the drill counts duplicate executions from its
lines (``drill.records``). ``record_once`` is ``record`` behind ``app.idempotency`` (claimed).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Final

from celery import Task, shared_task

from app.batch import PublishPlan, TaskArguments
from app.idempotency import FileDoneStore, idempotent
from drill import records

logger = logging.getLogger(__name__)

RECORD: Final = "drill.tasks.record"
RECORD_ONCE: Final = "drill.tasks.record_once"
ENV_RESULTS_DIR: Final = "DRILL_RESULTS_DIR"
"""Absolute directory where ``record`` appends one line per execution (see ``drill.records``)."""
ENV_INCLUDE: Final = "CELERY_WORKER_INCLUDE"
"""``celery worker --include`` as an environment variable (Celery's CLI reads ``CELERY_WORKER_*``)."""


def worker_env(results_dir: Path) -> dict[str, str]:
    """What a drill adds to a worker's environment: this module and where it writes."""
    return {ENV_INCLUDE: f"{__name__},drill.failing", ENV_RESULTS_DIR: str(results_dir)}


def record_plan(count: int, sleep_ms: int = 0, task_name: str = RECORD, queue: str | None = None) -> PublishPlan:
    """``count`` record tasks (to ``queue``: a lane's; None: where the routes send them); the publish
    index is each one's record key."""

    def arguments(index: int) -> TaskArguments:
        return (index,), {"sleep_ms": sleep_ms}

    return PublishPlan(task_name, count, arguments, queue=queue)


_GOLDEN: Final = 0.6180339887498949


def task_seconds(index: int, low: float, high: float) -> float:
    """The ``index``-th long task's duration: spread evenly over [low, high] for any prefix of indexes."""
    return round(low + ((index * _GOLDEN) % 1.0) * (high - low), 3)


def long_plan(
    count: int, low_s: float, high_s: float, task_name: str = RECORD, queue: str | None = None
) -> PublishPlan:
    """``count`` record tasks that each sleep between ``low_s`` and ``high_s`` seconds (the ``long`` workload)."""
    if not 0 <= low_s <= high_s:
        raise ValueError(f"long task durations: need 0 <= low <= high, got {low_s}-{high_s}")

    def arguments(index: int) -> TaskArguments:
        return (index,), {"sleep_ms": int(task_seconds(index, low_s, high_s) * 1000)}

    return PublishPlan(task_name, count, arguments, queue=queue)


def _results_dir() -> Path | None:
    raw = os.environ.get(ENV_RESULTS_DIR, "").strip()
    return Path(raw) if raw else None


def _record(task: Task[Any, Any], n: int, pause_ms: int) -> None:
    # First thing in the body: the drill compares it with the task's ETA.
    started_at = time.time()
    if pause_ms:
        time.sleep(pause_ms / 1000)
    request = task.request
    directory = _results_dir()
    if directory is None:
        # Outside a drill there is nowhere to count; the log line still shows the run.
        logger.info("record(%d) done (%s not set, nothing written)", n, ENV_RESULTS_DIR)
        return
    redelivered = bool((request.delivery_info or {}).get("redelivered", False))
    # Celery hands the ETA to the task as an ISO 8601 string (None for a task due at once).
    eta = None if request.eta is None else str(request.eta)
    records.append(
        directory,
        records.make_record(str(request.id), n, redelivered=redelivered, started_at=started_at, eta=eta),
    )


@shared_task(name=RECORD, bind=True)
def record(self: Task[Any, Any], n: int, sleep_ms: int = 0) -> None:
    """Optionally sleep, then append an execution record (with the task's ETA and start time)."""
    _record(self, n, sleep_ms)


def _done_store() -> FileDoneStore:
    directory = _results_dir()
    if directory is None:
        raise RuntimeError(f"record_once needs {ENV_RESULTS_DIR} for its done-markers")
    return FileDoneStore(directory / "done")


@shared_task(name=RECORD_ONCE, bind=True)
def record_once(self: Task[Any, Any], n: int, sleep_ms: int = 0) -> None:
    """``record`` behind the idempotency helper: a redelivered task id records nothing."""
    _record_once(self, n, sleep_ms)


# Claimed before running: the copies of one task id a rerun or a lost confirm republishes never
# run side by side (the later one is retried after the lease), so each key records exactly once.
@idempotent(store=_done_store, claim=True)
def _record_once(task: Task[Any, Any], n: int, pause_ms: int) -> None:
    _record(task, n, pause_ms)
