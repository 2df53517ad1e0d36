"""A worker leaves a frozen broker node: where its consumer's next connection starts, a remote-control
queue of its own per connection, and a restarted container not Ready on its predecessor's file."""

from __future__ import annotations

import os
import random
import types
from pathlib import Path
from typing import Any, cast

import amqp.exceptions
import pytest
from celery.worker.consumer import Consumer as StockConsumer
from kombu import Connection

from app import health
from app.bootsteps import Consumer, HealthStep
from app.config import from_env
from app.factory import make_app
from app.failover import BrokerRotation, ConnectionMailbox
from broker.users import role_user
from contract.wire import BrokerRole

URLS = ("amqp://u:p@rmq-0:5672/%2F", "amqp://u:p@rmq-1:5672/%2F", "amqp://u:p@rmq-2:5672/%2F")
ENV = {"BROKER_HOSTS": "rmq-0,rmq-1,rmq-2", "BROKER_USER": "u", "BROKER_PASSWORD": "p"}


# ------------------------------------------------------------------ the broker rotation


def test_a_lost_broker_is_dialled_last_and_a_reached_one_first() -> None:
    rotation = BrokerRotation(URLS)
    assert rotation.order() == list(URLS)
    rotation.lost("rmq-0", 5672)  # missed heartbeats on the frozen rmq-0
    assert rotation.order() == [URLS[1], URLS[2], URLS[0]]
    rotation.connected("rmq-2", 5672)  # rmq-1 did not answer either; rmq-2 did
    assert rotation.order() == [URLS[2], URLS[0], URLS[1]]
    rotation.lost("rmq-2", 5672)
    assert rotation.order() == list(URLS), "past the last: back to the first"


def test_a_broker_not_in_the_list_moves_nothing() -> None:
    rotation = BrokerRotation(URLS, start=1)
    rotation.lost("elsewhere", 5672)
    rotation.connected("rmq-0", 5673)  # same host, another port: another broker
    assert rotation.start == 1


def test_missed_heartbeats_are_a_connection_error_for_the_consumer() -> None:
    """What py-amqp raises on a frozen broker must be what moves the rotation past it."""
    errors = Connection(URLS[0]).connection_errors
    assert issubclass(amqp.exceptions.ConnectionForced, errors)
    assert not issubclass(amqp.exceptions.ResourceLocked, errors), "a channel error keeps the broker"


def _consumer(rotation: BrokerRotation, connection: Any) -> Consumer:
    consumer = object.__new__(Consumer)  # the methods under test only read these attributes
    state: Any = consumer
    state.rotation, state.connection = rotation, connection
    state.connection_errors = Connection(URLS[0]).connection_errors
    return consumer


def test_the_consumer_restarts_after_a_lost_broker_on_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(StockConsumer, "on_connection_error_after_connected", lambda _, exc: seen.append(exc))
    rotation = BrokerRotation(URLS)
    lost = types.SimpleNamespace(hostname="rmq-0", port=5672)
    consumer = _consumer(rotation, lost)
    consumer.on_connection_error_after_connected(amqp.exceptions.ResourceLocked("pidbox locked"))
    assert rotation.start == 0, "a channel error: the same broker again"
    consumer.on_connection_error_after_connected(amqp.exceptions.ConnectionForced("Too many heartbeats missed"))
    assert rotation.start == 1
    assert len(seen) == 2, "Celery's own handling still runs"


def test_the_consumer_connects_in_the_rotations_order_and_remembers_where() -> None:
    asked: list[list[str]] = []
    reached = types.SimpleNamespace(hostname="rmq-2", port=5672)

    def connection_for_read(url: list[str], heartbeat: float | None) -> Any:
        assert heartbeat == 10
        asked.append(url)
        return reached

    consumer = _consumer(BrokerRotation(URLS, start=1), None)
    state: Any = consumer
    state.app = types.SimpleNamespace(connection_for_read=connection_for_read)
    state.ensure_connected = lambda conn: conn
    assert consumer.connection_for_read(heartbeat=10) is reached
    assert asked == [[URLS[1], URLS[2], URLS[0]]]
    assert state.rotation.start == 2


def test_the_rotation_starts_from_the_processs_own_shuffled_list() -> None:
    app = make_app(from_env(ENV), random.Random(3))
    rotation = BrokerRotation.of(app.conf)
    assert rotation.order() == list(app.conf.broker_url)
    assert sorted(rotation.urls) == sorted(from_env(ENV).broker_urls)
    assert BrokerRotation.of(types.SimpleNamespace(broker_read_url=None, broker_url=";".join(URLS))).urls == URLS


# ------------------------------------------------------------------ the remote-control queue


def test_each_connection_declares_a_pidbox_queue_of_its_own() -> None:
    app = make_app(from_env(ENV), random.Random(0))
    mailbox = cast(Any, app.control).mailbox  # celery-types does not declare it
    assert isinstance(mailbox, ConnectionMailbox)
    first, second = (mailbox.get_queue("celery@worker-0") for _ in range(2))
    assert first.name != second.name
    for queue in (first, second):
        assert queue.name.startswith("celery@worker-0."), queue.name
        assert queue.name.endswith(".celery.pidbox"), queue.name
        assert queue.exclusive, "still gone with its connection"
        assert queue.exchange.name == "celery.pidbox"
        assert queue.exchange.type == "fanout"
        worker = role_user(BrokerRole.WORKER).permissions
        assert worker.allows("configure", queue.name)
        assert worker.allows("read", queue.name)


# ------------------------------------------------------------------ a restarted container


def _conf(tmp_path: Path) -> types.SimpleNamespace:
    conf = types.SimpleNamespace(ha_heartbeat_file=str(tmp_path / "hb"), ha_ready_file=str(tmp_path / "ready"))
    return types.SimpleNamespace(app=types.SimpleNamespace(conf=conf))


def _fake_proc(root: Path, pid: int, start: int) -> Path:
    (root / str(pid)).mkdir(parents=True)
    fields = ["S", *["0"] * 18, str(start), "0"]
    (root / str(pid) / "stat").write_text(f"{pid} (celery worker) {' '.join(fields)}\n")
    return root


def test_a_ready_file_names_its_worker_process(tmp_path: Path) -> None:
    ready, hb = tmp_path / "ready", tmp_path / "hb"
    health.touch(hb)
    health.claim(ready)
    assert health.owner_alive(ready)
    assert health.check(hb, ready, max_age_s=60, require_ready=True).healthy
    proc = _fake_proc(tmp_path / "proc", os.getpid(), 1)  # the same pid, started at another time
    assert not health.owner_alive(ready, proc)
    ready.write_text("")  # an older worker's empty file
    verdict = health.check(hb, ready, max_age_s=60, require_ready=True)
    assert not verdict.healthy
    assert "not this container's" in verdict.reason


def test_a_restarted_container_is_not_ready_on_its_predecessors_files(tmp_path: Path) -> None:
    """The pod's /tmp outlives the container: the old worker's fresh ready and heartbeat files are
    there when the new container starts, before its consumer is even built."""
    proc = _fake_proc(tmp_path / "proc", 4242, 777)
    ready, hb = tmp_path / "ready", tmp_path / "hb"
    health.touch(hb)
    ready.write_text("4242 777\n")  # what the previous container's worker (pid 4242) claimed
    assert health.check(hb, ready, max_age_s=60, require_ready=True, proc=proc).healthy, "its own container"
    (proc / "4242" / "stat").unlink()  # that container is gone: a new one, nothing built yet
    assert not health.check(hb, ready, max_age_s=60, require_ready=True, proc=proc).healthy
    parent = _conf(tmp_path)
    step = HealthStep(parent)  # the new worker's consumer is built: the old files go
    assert not ready.exists()
    assert not hb.exists()
    parent_timer: Any = types.SimpleNamespace(call_repeatedly=lambda *_: types.SimpleNamespace(cancel=lambda: None))
    step.start(types.SimpleNamespace(timer=parent_timer))
    assert health.check(hb, ready, max_age_s=60, require_ready=True).healthy, "consuming: Ready"
