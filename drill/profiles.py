"""The two configurations a drill can run: this project's (ha) and the 2018 seed's (seed).

Both run the same task (``drill.tasks.record``) through the same local cluster, so the only
difference in the report is the configuration: queue type, acks, confirms, failover list.
The ha worker is the image's own command (``contract.wire.WORKER_COMMAND``); the drill adds only
environment: its task module, where records go, and a per-process node name (a pod has its own
hostname; local workers share one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from celery import Celery

from app.batch import ProgressCallback, PublishPlan, PublishResult
from app.config import from_env
from app.factory import make_app
from app.publish import publish_pipelined
from app.scheduler import publish_confirmed
from contract import metrics, wire
from drill import seed_app
from drill import tasks as drill_tasks


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
    metrics_port: int = 0
    """The ha worker's ``/metrics`` port; 0 (default): none, local workers share the host's ports."""

    def worker(self, name: str, state_dir: Path) -> WorkerSpec:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
        env.update(drill_tasks.worker_env(self.results_dir))
        # celery worker --hostname: the node name, unique per process as a pod's hostname would make it.
        env["CELERY_WORKER_HOSTNAME"] = f"{name}@%h"
        if self.profile is Profile.HA:
            env.update(
                {
                    wire.ENV_BROKER_URLS: ",".join(self.urls),
                    wire.ENV_CONCURRENCY: str(self.concurrency),
                    wire.ENV_PREFETCH_MULTIPLIER: str(self.prefetch_multiplier),
                    wire.ENV_HEARTBEAT_FILE: str(state_dir / f"{name}.heartbeat"),
                    wire.ENV_READY_FILE: str(state_dir / f"{name}.ready"),
                    metrics.ENV_METRICS_PORT: str(self.metrics_port),
                }
            )
            if self.metrics_port:
                env[metrics.ENV_MULTIPROC_DIR] = str(state_dir / f"{name}.metrics")
            return WorkerSpec(worker_argv(), env)
        env[seed_app.ENV_URLS] = ";".join(self.urls)
        seed = ["-A", "drill.seed_app", "worker", "-c", str(self.concurrency), "--loglevel=INFO"]
        return WorkerSpec([sys.executable, "-m", "celery", *seed, "--without-mingle", "--without-gossip"], env)

    def publisher(self) -> tuple[Celery, Callable[[Celery, PublishPlan, ProgressCallback], PublishResult]]:
        """The app the scheduler publishes with, and its publishing loop."""
        if self.profile is Profile.HA:
            # The scheduler's default: a window of confirms in flight, unconfirmed ones republished.
            return make_app(from_env({wire.ENV_BROKER_URLS: ",".join(self.urls)})), publish_pipelined
        return seed_app.make_seed_app(";".join(self.urls)), publish_confirmed


SCRUBBED_ENV_PREFIXES = (
    "BROKER_",
    "WORKER_",
    "HEALTH_",
    "DRILL_",
    "CELERY_",
    wire.ENV_REMAP_SIGTERM,
    metrics.ENV_MULTIPROC_DIR,
)
"""The caller's variables a worker must not inherit: they would override the drill's own."""


def worker_argv() -> list[str]:
    """The image's worker command, with this virtualenv's interpreter for ``celery``."""
    return [sys.executable, "-m", *wire.WORKER_COMMAND]
