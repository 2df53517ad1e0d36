"""The seed's Celery configuration (2018), kept only to show in drills what it loses.

``Celery('tasks', broker=BROKER_URL)`` with every default: a classic queue (made
"highly available" by the seed's ``ha-all`` mirroring policy), early acknowledgement,
no publisher confirms, prefetch multiplier 4, and one ordered failover list. The tasks
are this project's (``app.tasks``), so the drill counts the same records for both, and
the publisher is the same loop too (``app.scheduler.publish_confirmed``): on a channel
that is not in confirm mode, as here, ``send_task`` returns as soon as the bytes are
written, which is exactly the seed's ``.delay()`` loop.

    celery -A drill.seed_app worker      (SEED_BROKER_URLS="amqp://...;amqp://...")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from celery import Celery

from app import tasks

ENV_URLS: Final = "SEED_BROKER_URLS"
"""';'-separated broker URLs, in the seed's order (node 0 first)."""


def make_seed_app(broker_url: str, results_dir: Path | None) -> Celery:
    assert tasks.RECORD  # importing app.tasks registers the shared tasks on this app
    celery = Celery("tasks", broker=broker_url, set_as_current=True)
    # Not a reliability setting: where the drill's record task writes, as in the ha profile.
    celery.conf.ha_drill_results_dir = str(results_dir) if results_dir else None
    return celery


_url = os.environ.get(ENV_URLS)
app = (
    make_seed_app(_url, Path(os.environ["DRILL_RESULTS_DIR"]) if "DRILL_RESULTS_DIR" in os.environ else None)
    if _url
    else None
)
"""The worker's app when started by ``celery -A drill.seed_app`` (None when imported for publishing)."""
