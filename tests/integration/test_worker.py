"""A real Celery worker (prefork, 2 processes) against a real RabbitMQ node.

Uses the ``rabbit_node`` fixture (tests/integration/conftest.py: a one-node
``harness.seed.cluster.LocalCluster``). Every wait has a deadline and the worker's
process group is killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from celery import Celery

from app import health
from app.config import from_env
from app.factory import make_app
from app.scheduler import publish_confirmed
from contract import timing, wire
from drill import records
from drill.profiles import Profile, ProfileRuntime
from drill.tasks import record_plan
from harness.runtime import processes
from harness.runtime.poll import PollTimeout, poll

if TYPE_CHECKING:
    from harness.seed.cluster import LocalCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Worker:
    """A running worker subprocess and the paths it reports through."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    results: Path
    heartbeat: Path
    ready: Path
    log: Path
    app: Celery
    """A client app with the worker's configuration, for publishing."""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, worker: Worker) -> None:
    def alive() -> None:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode} while waiting for {what}:\n{worker.log_tail()}")

    try:
        poll(condition, timeout, what, interval=0.2, check=alive)
    except PollTimeout as exc:
        pytest.fail(f"{exc}:\n{worker.log_tail()}")


@pytest.fixture
def worker(rabbit_node: LocalCluster, tmp_path: Path) -> Iterator[Worker]:
    with running_worker(rabbit_node, tmp_path) as handle:
        yield handle


@contextlib.contextmanager
def running_worker(rabbit_node: LocalCluster, tmp_path: Path, metrics_port: int = 0) -> Iterator[Worker]:
    """The drill's own worker, ready: the image's command, plus the drill's task module and paths."""
    results = tmp_path / "results"
    results.mkdir()
    name = f"itest-{uuid.uuid4().hex[:8]}"
    runtime = ProfileRuntime(Profile.HA, tuple(rabbit_node.urls()), results, 2, metrics_port=metrics_port)
    spec = runtime.worker(name, tmp_path)
    env = {**spec.env, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "worker.log"
    app = make_app(from_env(env))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            spec.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    heartbeat, ready = Path(env[wire.ENV_HEARTBEAT_FILE]), Path(env[wire.ENV_READY_FILE])
    handle = Worker(proc, env, results, heartbeat, ready, log, app)
    try:
        wait_for(
            lambda: health.check(handle.heartbeat, handle.ready, max_age_s=60, require_ready=True).healthy,
            STARTUP_TIMEOUT_S,
            "the worker to report ready",
            handle,
        )
        yield handle
    finally:
        processes.kill_group(proc, timeout=STOP_TIMEOUT_S)
        app.close()


def test_worker_runs_every_published_task_and_keeps_its_heartbeat_fresh(worker: Worker) -> None:
    first_beat = worker.heartbeat.stat().st_mtime

    result = publish_confirmed(worker.app, record_plan(50, sleep_ms=20), lambda _: None)
    assert result.ok, result.error
    assert result.confirmed == 50

    wait_for(
        lambda: set(result.task_ids) <= set(records.tally(worker.results).per_task),
        DRAIN_TIMEOUT_S,
        "all 50 tasks to complete",
        worker,
    )
    tally = records.tally(worker.results)
    ours = {task_id: n for task_id, n in tally.per_task.items() if task_id in set(result.task_ids)}
    assert len(ours) == 50
    assert all(n == 1 for n in ours.values()), f"duplicate executions without any failure: {ours}"
    assert tally.missing(range(50)) == frozenset()
    assert tally.malformed == 0

    # The bootstep keeps beating from the worker's event loop.
    wait_for(
        lambda: worker.heartbeat.stat().st_mtime > first_beat,
        3 * timing.HEALTH_HEARTBEAT_INTERVAL_S,
        "the heartbeat to advance",
        worker,
    )
    assert health.main(["--ready"], worker.env) == 0


def test_scheduler_cli_publishes_confirmed_tasks(worker: Worker) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "drill.scheduler", "--count", "20", "--task", "record"],
        cwd=ROOT,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok: 20/20 confirmed" in done.stdout
    assert "tasks/s" in done.stdout
    wait_for(
        lambda: records.tally(worker.results).keys >= frozenset(range(20)),
        DRAIN_TIMEOUT_S,
        "the scheduler's 20 tasks to complete",
        worker,
    )


def running_tasks(worker: Worker) -> set[str]:
    """Ids of the tasks the worker's pool is executing now (Celery's ``inspect active``)."""
    replies = worker.app.control.inspect(timeout=1.0).active() or {}
    return {task["id"] for tasks in replies.values() for task in tasks}


def test_sigterm_lets_running_tasks_finish_then_exits_0(worker: Worker) -> None:
    # Two 6 s tasks, one per pool process: SIGTERM arrives while both run.
    result = publish_confirmed(worker.app, record_plan(2, sleep_ms=6000), lambda _: None)
    assert result.ok, result.error
    # Received is not started: a message still on its way to a pool process when SIGTERM lands is
    # requeued, not run. Ask the worker itself which tasks are executing.
    wait_for(lambda: running_tasks(worker) >= set(result.task_ids), DRAIN_TIMEOUT_S, "both tasks to start", worker)
    assert records.tally(worker.results).executions == 0, "the tasks should still be running"

    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        returncode = worker.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # Celery's SIGUSR1 handler logs every thread's stack: say where the shutdown hangs.
        worker.proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        pytest.fail(f"worker still running {STOP_TIMEOUT_S:.0f}s after SIGTERM:\n{worker.log_tail(120)}")
    elapsed = time.monotonic() - started

    assert returncode == 0, worker.log_tail()
    assert elapsed < timing.MIN_TERMINATION_GRACE_S
    tally = records.tally(worker.results)
    assert dict(tally.per_task) == dict.fromkeys(result.task_ids, 1), "each running task must finish exactly once"
    assert not worker.ready.exists(), "a stopping worker must not stay ready"
    assert "Traceback" not in worker.log_text(), worker.log_tail()


def test_worker_reconnects_after_the_broker_drops_its_connection(worker: Worker, rabbit_node: LocalCluster) -> None:
    result = publish_confirmed(worker.app, record_plan(20, sleep_ms=200), lambda _: None)
    assert result.ok, result.error
    wait_for(lambda: records.tally(worker.results).executions > 0, DRAIN_TIMEOUT_S, "the first task to finish", worker)

    # What a broker node restart or a network blip looks like to the worker, without killing the shared node.
    rabbit_node.rabbitmqctl(0, "close_all_connections", "test_worker: simulated connection loss")

    wait_for(
        lambda: worker.log_text().count("health: consuming") >= 2,
        DRAIN_TIMEOUT_S,
        "the consumer to restart after the connection loss",
        worker,
    )
    wait_for(
        lambda: set(result.task_ids) <= set(records.tally(worker.results).per_task),
        DRAIN_TIMEOUT_S,
        "every task to complete despite the connection loss",
        worker,
    )
    # At-least-once: the tasks that were running when the connection dropped may run twice, no more.
    tally = records.tally(worker.results)
    assert tally.missing(range(20)) == frozenset()
    assert tally.duplicates <= 2, f"{tally.duplicates} duplicates; at most the 2 in flight may run again"
    assert "Connection to broker lost" in worker.log_text()
    wait_for(
        lambda: health.check(worker.heartbeat, worker.ready, max_age_s=10, require_ready=True).healthy,
        3 * timing.HEALTH_HEARTBEAT_INTERVAL_S,
        "the worker to be ready and beating again",
        worker,
    )
