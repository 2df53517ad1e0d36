"""The two configurations a drill can run: this project's (ha) and the 2018 seed's (seed).

Both run the same task (``app.tasks.record``) through the same local cluster, so the only
difference in the report is the configuration: queue type, acks, confirms, failover list.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from celery import Celery

from app import config as app_config
from app.factory import make_app
from app.publish import publish_pipelined
from app.scheduler import ProgressCallback, PublishPlan, PublishResult, publish_confirmed
from drill import seed_app


class Profile(StrEnum):
    HA = "ha"
    """This project: quorum queue, publisher confirms, acks late, shuffled per-node URLs."""
    SEED = "seed"
    """The seed: classic queue mirrored by an ``ha-all`` policy, Celery defaults (early ack,
    no publisher confirms), one ordered URL list so every client starts on node 0."""


SEED_POLICY = ("ha-all", "", '{"ha-mode":"all","ha-sync-mode":"automatic"}')
"""The seed's ``rabbitmqctl set_policy -p $VHOST ha-all "" '{...}'`` (classic mirroring,
still present in 3.10, removed in 4.0)."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker process of a profile."""

    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class ProfileRuntime:
    profile: Profile
    urls: tuple[str, ...]
    results_dir: Path
    concurrency: int
    prefetch_multiplier: int = 1

    def worker(self, name: str, state_dir: Path) -> WorkerSpec:
        base = [sys.executable, "-m", "celery"]
        tail = [
            "worker",
            "-P",
            "prefork",
            "-c",
            str(self.concurrency),
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "WORKER_", "HEALTH_"))}
        env[app_config.ENV_DRILL_RESULTS_DIR] = str(self.results_dir)
        if self.profile is Profile.HA:
            env.update(
                {
                    app_config.ENV_BROKER_URLS: ",".join(self.urls),
                    app_config.ENV_CONCURRENCY: str(self.concurrency),
                    app_config.ENV_PREFETCH_MULTIPLIER: str(self.prefetch_multiplier),
                    app_config.ENV_HEARTBEAT_FILE: str(state_dir / f"{name}.heartbeat"),
                    app_config.ENV_READY_FILE: str(state_dir / f"{name}.ready"),
                }
            )
            return WorkerSpec([*base, "-A", "app.celery_app", *tail], env)
        env[seed_app.ENV_URLS] = ";".join(self.urls)
        return WorkerSpec([*base, "-A", "drill.seed_app", *tail], env)

    def publisher(self) -> tuple[Celery, Callable[[Celery, PublishPlan, ProgressCallback], PublishResult]]:
        """The app the scheduler publishes with, and its publishing loop."""
        if self.profile is Profile.HA:
            environ = {
                app_config.ENV_BROKER_URLS: ",".join(self.urls),
                app_config.ENV_DRILL_RESULTS_DIR: str(self.results_dir),
            }
            # The scheduler's default: a window of confirms in flight, unconfirmed ones republished.
            return make_app(app_config.from_env(environ)), publish_pipelined
        return seed_app.make_seed_app(";".join(self.urls), self.results_dir), publish_confirmed
