"""Build a configured Celery app without reading the process environment."""

from __future__ import annotations

import random
from typing import Final

from celery import Celery

from app import tasks
from app.bootsteps import HealthStep
from app.config import AppConfig, celery_settings

APP_NAME: Final = "ha-celery"


def make_app(config: AppConfig, rng: random.Random | None = None) -> Celery:
    """A Celery app for ``config`` with this project's tasks and the health bootstep.

    ``rng`` orders the broker failover list; by default a fresh, OS-seeded one so
    every process picks its own first node. Nothing connects here.
    """
    # Importing app.tasks registers the shared tasks on every app; the reference
    # keeps that import from looking unused.
    assert tasks.COUNT
    celery = Celery(APP_NAME, set_as_current=True)
    celery.conf.update(celery_settings(config, rng or random.Random()))
    celery.steps["consumer"].add(HealthStep)
    return celery
