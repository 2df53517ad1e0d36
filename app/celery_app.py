"""The Celery application: ``celery -A app.celery_app worker`` (see ``app.config.WORKER_COMMAND``).

Importing this module reads and validates the environment (``app.config``) and
raises ``ConfigError`` with the offending variable on a bad value; it does not
connect to the broker (Celery connects lazily, on first publish or in the worker).
Code that needs an app for another configuration (tests, the drill harness,
the scheduler) calls ``app.factory.make_app`` instead of importing this module.
"""

from __future__ import annotations

import os

from app.config import check_files, from_env
from app.factory import make_app

app = make_app(check_files(from_env(os.environ)))
