"""Worker bootsteps: the heartbeat and ready files behind ``python -m app.health``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import bootsteps

from app import health
from contract import timing

logger = logging.getLogger(__name__)


class HealthStep(bootsteps.StartStopStep):
    """Consumer bootstep: heartbeat + ready file while the task consumer runs.

    Celery starts consumer steps after (re)connecting and stops them when the
    connection is lost, so the ready file exists exactly while tasks are being
    consumed. The heartbeat is driven by the worker's own timer on the main
    event loop, so a wedged loop stops it even if the process is alive.
    """

    # After the task consumer: "started" must mean "consuming", not just "connected".
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        conf = parent.app.conf
        self.heartbeat_file = Path(conf.ha_heartbeat_file)
        self.ready_file = Path(conf.ha_ready_file)
        self._timer_entry: Any = None
        # Files left by a previous container in the same pod (emptyDir /tmp survives
        # container restarts) must not vouch for this process before it connects.
        health.remove(self.ready_file)
        health.remove(self.heartbeat_file)

    def start(self, parent: Any) -> None:
        self._beat()
        health.touch(self.ready_file)
        self._timer_entry = parent.timer.call_repeatedly(timing.HEALTH_HEARTBEAT_INTERVAL_S, self._beat)
        logger.info("health: consuming; heartbeat %s, ready %s", self.heartbeat_file, self.ready_file)

    def stop(self, parent: Any) -> None:
        del parent  # the step's state is its own files and timer entry
        self._halt()

    def shutdown(self, parent: Any) -> None:
        del parent
        self._halt()

    def _halt(self) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        health.remove(self.ready_file)

    def _beat(self) -> None:
        try:
            health.touch(self.heartbeat_file)
        except OSError:
            # A full or read-only /tmp must not crash the consumer; the stale
            # heartbeat then fails the liveness probe, which is the right outcome.
            logger.exception("health: cannot touch heartbeat file %s", self.heartbeat_file)
