"""The pipelined publisher against real RabbitMQ and a stock Celery worker.

* ``rabbit_node`` (one node, shared by the session): what the pipelined publisher sends is
  run by an unmodified ``celery worker`` of this app, every task exactly once.
* ``rabbit_cluster`` (three nodes, shared with test_local_cluster.py): SIGKILL of the node holding the
  publisher's connection and the queue leader, in the middle of publishing, loses no task
  (duplicates allowed: at-least-once).

Workers are ``harness.seed.workers.WorkerPool`` processes (the drills' launcher); every wait has
a deadline and every process started here is stopped in a ``finally``.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator, MutableSequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from app.config import from_env
from app.factory import make_app
from app.publish import publish_pipelined
from contract.wire import ENV_BROKER_URLS, QUEUE_NAME
from drill import records
from drill.profiles import Profile, ProfileRuntime
from drill.tasks import record_plan
from harness.runtime.poll import PollTimeout, poll
from harness.seed.workers import WorkerPool

if TYPE_CHECKING:
    from harness.seed.cluster import LocalCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 180.0


class InOrder(random.Random):
    """An rng whose shuffle keeps the failover list as given: the test picks the first node."""

    def shuffle(self, x: MutableSequence[Any]) -> None:
        del x


def wait_for(condition: Callable[[], bool], timeout: float, what: str, pool: WorkerPool) -> None:
    try:
        poll(condition, timeout, what, interval=0.25)
    except PollTimeout as exc:
        logs = "\n".join(f"--- {name} ---\n{pool.log_tail(name)}" for name in pool.alive())
        pytest.fail(f"{exc}\n{logs}")


@contextmanager
def running_worker(urls: list[str], work: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WorkerPool, Path]]:
    """One stock worker (prefork, 2 processes) of the ha profile; yields it and its results dir."""
    # ProfileRuntime passes our environment on: make `-A app.celery_app` importable from anywhere.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    results, state = work / "results", work / "state"
    results.mkdir()
    state.mkdir()
    pool = WorkerPool(ProfileRuntime(Profile.HA, tuple(urls), results, concurrency=2), state)
    try:
        [name] = pool.start(1)
        wait_for((state / f"{name}.ready").exists, READY_TIMEOUT_S, "the worker to consume", pool)
        yield pool, results
    finally:
        pool.stop()


def vhost_urls(cluster: LocalCluster, vhost: str) -> list[str]:
    cluster.rabbitmqctl(0, "add_vhost", vhost)
    cluster.rabbitmqctl(0, "set_permissions", "-p", vhost, cluster.user, ".*", ".*", ".*")
    return [url.rsplit("/", 1)[0] + "/" + quote(vhost, safe="") for url in cluster.urls()]


def test_a_stock_worker_runs_what_the_pipelined_publisher_sends(
    rabbit_node: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A vhost of our own: the session's node is shared with other modules' workers and queues.
    vhost = f"publish-{uuid.uuid4().hex[:8]}"
    urls = vhost_urls(rabbit_node, vhost)
    count = 300
    with running_worker(urls, tmp_path, monkeypatch) as (pool, results):
        app = make_app(from_env({ENV_BROKER_URLS: ",".join(urls)}))
        try:
            # A window smaller than the plan: the publisher must wait for confirms to go on.
            result = publish_pipelined(app, record_plan(count), lambda _: None, window=64)
        finally:
            app.close()
        assert result.ok, result.error
        assert result.confirmed == count
        assert result.failovers == 0
        wait_for(
            lambda: records.tally(results).keys >= frozenset(range(count)),
            DRAIN_TIMEOUT_S,
            f"{count} tasks to run",
            pool,
        )
    tally = records.tally(results)
    assert tally.malformed == 0
    assert set(tally.per_task) == set(result.task_ids)
    assert all(n == 1 for n in tally.per_task.values()), "duplicates without any failure"
    queues = rabbit_node.rabbitmqctl(0, "-q", "list_queues", "-p", vhost, "name", "type", "--no-table-headers")
    assert f"{QUEUE_NAME}\tquorum" in queues.splitlines(), queues


def test_killing_the_publishers_broker_node_mid_publish_loses_no_task(
    rabbit_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = rabbit_cluster
    count, kill_at = 4000, 1000
    with running_worker(cluster.urls(), tmp_path, monkeypatch) as (pool, results):
        # The worker declared the quorum queue; put the publisher on the node that leads it,
        # so the kill takes both its connection and the queue's leader.
        victim = cluster.queue_leader(QUEUE_NAME)
        urls = [cluster.url(victim), *(cluster.url(i) for i in range(cluster.nodes) if i != victim)]
        app = make_app(from_env({ENV_BROKER_URLS: ",".join(urls)}), InOrder())
        killed = threading.Event()

        def kill_mid_publish(confirmed: int) -> None:
            # Runs in the publisher's own loop: the kill lands with publishes in flight.
            if confirmed >= kill_at and not killed.is_set():
                killed.set()
                cluster.kill(victim)

        try:
            result = publish_pipelined(app, record_plan(count), kill_mid_publish)
            assert killed.is_set(), "the node was never killed: the test proved nothing"
            assert result.ok, result.error
            assert result.confirmed == count
            assert result.failovers >= 1
            wait_for(
                lambda: records.tally(results).keys >= frozenset(range(count)),
                DRAIN_TIMEOUT_S,
                f"all {count} tasks to run after the failover",
                pool,
            )
        finally:
            app.close()
            if not cluster.is_alive(victim):
                cluster.start_node(victim, timeout=120)
    tally = records.tally(results)
    assert tally.missing(range(count)) == frozenset(), "a confirmed task was lost"
    assert tally.malformed == 0
    # At-least-once: republished publishes and redelivered unacked tasks may run twice.
    assert tally.executions >= count
