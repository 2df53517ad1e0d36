"""The tasks. Registered on whichever app is built (``shared_task``), so this
module can be imported without broker configuration (tests, the scheduler).

Names are explicit so publishers can ``send_task`` by name without importing
this module, and a file move does not strand queued messages.

Every task here is safe to run twice (delivery is at-least-once, see
``app.idempotency``): ``count``, ``noop`` and ``sleep_ms`` have no effects,
``record`` exists to *count* duplicates, ``record_once`` to suppress them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Final

from celery import Task, current_app, shared_task

from app import records
from app.idempotency import FileDoneStore, idempotent

logger = logging.getLogger(__name__)

COUNT: Final = "app.tasks.count"
NOOP: Final = "app.tasks.noop"
SLEEP_MS: Final = "app.tasks.sleep_ms"
RECORD: Final = "app.tasks.record"
RECORD_ONCE: Final = "app.tasks.record_once"

COUNT_TO: Final = 10
"""The seed's task counts to ten, one number per second."""


@shared_task(name=COUNT)
def count() -> None:
    """The seed's task: print 0..9, one per second (~10 s), so a kill lands mid-task."""
    for i in range(COUNT_TO):
        print(i)
        time.sleep(1)


@shared_task(name=NOOP)
def noop() -> None:
    """Does nothing: measures pure messaging overhead in benchmarks."""


@shared_task(name=SLEEP_MS)
def sleep_ms(ms: int = 10) -> None:
    """Sleeps ``ms`` milliseconds (default 10): a short task for throughput benchmarks."""
    time.sleep(ms / 1000)


def _results_dir(task: Task[Any, Any]) -> Path | None:
    raw = task.app.conf.get("ha_drill_results_dir")
    return None if raw is None else Path(raw)


def _record(task: Task[Any, Any], n: int, pause_ms: int) -> None:
    if pause_ms:
        time.sleep(pause_ms / 1000)
    request = task.request
    directory = _results_dir(task)
    if directory is None:
        # Outside a drill there is nowhere to count; the log line still shows the run.
        logger.info("record(%d) done (DRILL_RESULTS_DIR not set, nothing written)", n)
        return
    redelivered = bool((request.delivery_info or {}).get("redelivered", False))
    records.append(directory, records.make_record(str(request.id), n, redelivered=redelivered))


@shared_task(name=RECORD, bind=True)
def record(self: Task[Any, Any], n: int, sleep_ms: int = 0) -> None:
    """Drill task: optionally sleep, then append an execution record (``app.records``).

    Deliberately *not* idempotent: the drill counts duplicates from these lines.
    """
    _record(self, n, sleep_ms)


def _done_store() -> FileDoneStore:
    # Resolved in the worker at execution time, where the app's config is loaded.
    raw = current_app.conf.get("ha_drill_results_dir")
    if raw is None:
        raise RuntimeError("record_once needs DRILL_RESULTS_DIR for its done-markers")
    return FileDoneStore(Path(raw) / "done")


@shared_task(name=RECORD_ONCE, bind=True)
def record_once(self: Task[Any, Any], n: int, sleep_ms: int = 0) -> None:
    """``record`` behind the idempotency helper: a redelivered task id records nothing."""
    _record_once(self, n, sleep_ms)


@idempotent(store=_done_store)
def _record_once(task: Task[Any, Any], n: int, pause_ms: int) -> None:
    _record(task, n, pause_ms)
