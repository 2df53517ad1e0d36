"""The seed's Celery configuration (2018), kept only to show in drills what it loses.

``Celery('tasks', broker=BROKER_URL)`` with every default: a classic queue (made
"highly available" by the seed's ``ha-all`` mirroring policy), early acknowledgement,
no publisher confirms, prefetch multiplier 4, and one ordered failover list. The tasks
are the drill's (``drill.tasks``), so the drill counts the same records for both, and
the publisher is the same loop too (``app.scheduler.publish_confirmed``): on a channel
that is not in confirm mode, as here, ``send_task`` returns as soon as the bytes are
written, which is exactly the seed's ``.delay()`` loop.

    celery -A drill.seed_app worker      (SEED_BROKER_URLS="amqp://...;amqp://...", DRILL_RESULTS_DIR=...)
"""

from __future__ import annotations

import os
from typing import Final

from celery import Celery

import drill.tasks  # noqa: F401  (registers the drill's shared tasks on this app)

ENV_URLS: Final = "SEED_BROKER_URLS"
"""';'-separated broker URLs, in the seed's order (node 0 first)."""


def make_seed_app(broker_url: str) -> Celery:
    return Celery("tasks", broker=broker_url, set_as_current=True)


_url = os.environ.get(ENV_URLS)
app = make_seed_app(_url) if _url else None
"""The worker's app when started by ``celery -A drill.seed_app`` (None when imported for publishing)."""
