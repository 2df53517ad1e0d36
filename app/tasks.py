"""The tasks. Registered on whichever app is built (``shared_task``), so this
module can be imported without broker configuration (tests, the scheduler).

Names are explicit so publishers can ``send_task`` by name without importing
this module, and a file move does not strand queued messages.

Every task here is safe to run twice (delivery is at-least-once, see
``app.idempotency``): ``count``, ``noop`` and ``sleep_ms`` have no effects.
The drills' counting tasks live in ``drill.tasks``, outside the image.
"""

from __future__ import annotations

import time
from typing import Final

from celery import shared_task

COUNT: Final = "app.tasks.count"
NOOP: Final = "app.tasks.noop"
SLEEP_MS: Final = "app.tasks.sleep_ms"

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
