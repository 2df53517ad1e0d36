"""Hostile messages on the dev plan booted for real (RabbitMQ 4.3, the image's worker): every
malformed delivery lands in ``celery.dlq`` with the worker's reason, no worker restarts, and the
good tasks published among them all complete (issue 28, items 1 and 2). A task message too large
to send is refused by the publisher itself, at once, on a connection that carries on.

On the dev_plan package's cluster; each test starts from empty queues.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import amqp
import pytest

from app.batch import PublishPlan, TaskArguments
from app.config import from_env
from app.dlq import ConfirmedPublisher, DeadTask, dead_letter_channel, list_dead
from app.factory import make_app
from app.intake import MAX_BODY_BYTES
from app.outgoing import MessageRefused
from app.publish import publish_pipelined
from contract.wire import AMQP_FRAME_MAX, DEAD_LETTER_QUEUE, QUEUE_NAME, BrokerRole
from drill import failing, records
from drill.pod_scenarios import WORKERS
from drill.targets import PlanTarget, broker_env, broker_urls
from drill.tasks import RECORD
from harness.runtime.poll import poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

ROOT = Path(__file__).resolve().parents[3]
GOOD_TASKS = 40
RESTART_EVENTS = frozenset({"Exited", "Error", "BackOff", "Started", "Unhealthy", "Killing", "NotReady"})
"""Pod events that mean a worker container stopped, restarted or left service."""


@pytest.fixture
def fresh_target(fresh: Booted) -> tuple[PlanTarget, Path]:
    """The package's dev-plan cluster (tests/drills/dev_plan/conftest.py), every pod Ready and both
    queues empty: (target, the directory its worker pods record executions in)."""
    return fresh.target, fresh.results


def worker_urls(target: PlanTarget) -> list[str]:
    return broker_urls(target.cluster, BrokerRole.WORKER)


def headers(task: str, task_id: str, **extra: object) -> dict[str, object]:
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0, **extra}


def raw(
    body: bytes,
    task: str = RECORD,
    content_type: str = "application/json",
    **extra: object,
) -> tuple[str, amqp.Message]:
    """A hand-made delivery (task id, message) as a hostile or broken publisher would send it."""
    task_id = str(uuid.uuid4())
    message = amqp.Message(
        body,
        content_type=content_type,
        content_encoding="utf-8",
        correlation_id=task_id,
        delivery_mode=2,
        application_headers=headers(task, task_id, **extra),
    )
    return task_id, message


_LARGE = b"[[" + b"0," * (4 * MAX_BODY_BYTES) + b"0], {}, {}]"
"""8 MiB: the size of the message issue 28's listing missed."""

MALFORMED: dict[str, tuple[str, bytes, dict[str, object]]] = {
    # name: (expected reason fragment, body, raw() options)
    "wrong body shape": ("body is 'just a string'", b'"just a string"', {}),
    "two-part body": ("body is [[0], {}]", b"[[0], {}]", {}),
    "not JSON": ("body is not JSON", b"{not json", {}),
    "not UTF-8": ("body is not UTF-8", b"\xff\xfe[[0], {}, {}]", {}),
    "wrong content type": (
        "content type 'application/x-python-serialize'",
        b"[[0], {}, {}]",
        {"content_type": "application/x-python-serialize"},
    ),
    "empty body": ("empty body", b"", {}),
    "huge header": ("headers exceed 32 KiB", b"[[0], {}, {}]", {"big": "x" * 100_000}),
    "unknown task": ("unknown task 'app.tasks.nope'", b"[[0], {}, {}]", {"task": "app.tasks.nope"}),
    "body too large": (f"body of {len(_LARGE)} bytes; allowed: at most {MAX_BODY_BYTES}", _LARGE, {}),
}


def publish_raw(target: PlanTarget, messages: list[amqp.Message]) -> None:
    with dead_letter_channel(worker_urls(target)) as channel, ConfirmedPublisher(channel) as publisher:
        for message in messages:
            why = publisher.publish(message, QUEUE_NAME)
            assert why is None, why


def dead(target: PlanTarget) -> dict[str, DeadTask]:
    with dead_letter_channel(worker_urls(target)) as channel:
        return {t.task_id: t for t in list_dead(channel) if t.task_id is not None}


def run_cli(target: PlanTarget, *args: str) -> str:
    env = {**os.environ, "BROKER_URLS": ",".join(worker_urls(target))}
    for name in ("BROKER_HOSTS", "BROKER_USER", "BROKER_PASSWORD", "BROKER_PORT", "BROKER_VHOST"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "app.dlq", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    command = " ".join(args)
    assert done.returncode == 0, f"python -m app.dlq {command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def worker_trouble(target: PlanTarget, since: float) -> list[tuple[float, str, str, str]]:
    workers = WORKERS.split("/", 1)[1]
    return [e for e in target.pod_events(since) if e[1].startswith(workers) and e[2] in RESTART_EVENTS]


def test_every_malformed_message_is_dead_lettered_with_its_reason_and_no_worker_restarts(
    fresh_target: tuple[PlanTarget, Path],
) -> None:
    target, results = fresh_target
    since = time.time()
    bad: dict[str, tuple[str, str]] = {}
    app = make_app(from_env(broker_env(target.cluster)))  # on this thread: by address
    try:
        good = [app.send_task(RECORD, args=(n,)).id for n in range(GOOD_TASKS // 2)]
        for name, (reason, body, options) in MALFORMED.items():
            task_id, message = raw(body, **options)  # type: ignore[arg-type]
            bad[task_id] = (name, reason)
            publish_raw(target, [message])
            good.append(app.send_task(RECORD, args=(len(good),)).id)
        good += [app.send_task(RECORD, args=(n,)).id for n in range(len(good), GOOD_TASKS)]
    finally:
        app.close()

    poll(lambda: records.tally(results).distinct == len(good), 120, f"{len(good)} good tasks to complete")
    poll(lambda: set(bad) <= set(dead(target)), 60, f"{len(bad)} malformed messages in {DEAD_LETTER_QUEUE}")
    found = dead(target)
    for task_id, (name, reason) in bad.items():
        refusal = found[task_id].refusal
        assert refusal is not None, f"{name}: no refusal header on {found[task_id]}"
        assert reason in refusal.reason, f"{name}: {refusal.reason!r}"
        assert refusal.queue == QUEUE_NAME
    assert set(records.tally(results).per_task) == set(good)

    listed = run_cli(target, "list")
    for task_id, (name, reason) in bad.items():
        assert task_id in listed, f"{name} ({task_id}) not listed:\n{listed}"
        assert f"refused: {reason}" in listed, f"{name}: reason not listed:\n{listed}"
    assert listed.count("\n    refused: ") == len(bad), listed

    trouble = worker_trouble(target, since)
    assert not trouble, f"worker pods restarted or left service: {trouble}"
    print(f"\npoison: {len(bad)} malformed, {len(good)} good completed, {len(found)} in {DEAD_LETTER_QUEUE}")
    print(listed)


@pytest.mark.timeout(900)
def test_list_and_replay_see_the_same_messages_large_and_delivery_limited_included(
    fresh_target: tuple[PlanTarget, Path],
) -> None:
    target, results = fresh_target
    app = make_app(from_env(broker_env(target.cluster)))  # on this thread: by address
    try:
        # Dead-lettered by the broker: past the delivery limit (the pool process dies each run), or raised once.
        crashed = [app.send_task(failing.CRASH, args=(n,)).id for n in range(2)]
        raised = [app.send_task(failing.FAIL, args=(n,)).id for n in range(3)]
    finally:
        app.close()
    # Refused by the worker: an 8 MiB body (the size), and a wrong shape.
    big_id, big = raw(b"[[" + b"1," * (4 * 1024 * 1024) + b"1], {}, {}]")
    odd_id, odd = raw(b'"just a string"')
    publish_raw(target, [big, odd])
    expected = {*crashed, *raised, big_id, odd_id}
    started = time.monotonic()
    history: list[str] = []

    def all_dead() -> bool:
        listed = set(dead(target))
        with dead_letter_channel(worker_urls(target)) as channel:
            in_dlq = channel.queue_declare(DEAD_LETTER_QUEUE, passive=True)
        runs = records.tally(results / failing.ATTEMPTS_DIR).per_task
        history.append(
            f"{time.monotonic() - started:5.0f}s listed {len(listed & expected)}/{len(expected)} "
            f"(missing {sorted(expected - listed)}), {DEAD_LETTER_QUEUE} holds {in_dlq[1] if in_dlq else '?'}, "
            f"{QUEUE_NAME} ready {target.queue_stat('messages_ready')} unacked "
            f"{target.queue_stat('messages_unacknowledged')}, crash runs {[runs[i] for i in crashed]}"
        )
        return expected <= listed

    try:
        poll(all_dead, 400, f"{len(expected)} messages listed from {DEAD_LETTER_QUEUE}", interval=5.0)
    finally:
        print("\n" + "\n".join(history[-5:]))

    with dead_letter_channel(worker_urls(target)) as channel:
        declared = channel.queue_declare(DEAD_LETTER_QUEUE, passive=True)
    listed = run_cli(target, "list")
    assert f"{declared[1] if declared else '?'} dead-lettered task(s) shown" in listed, "list shows all the queue holds"
    listed_ids = set(re.findall(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", listed))
    assert listed_ids == expected, f"list:\n{listed}"
    replayed = run_cli(target, "replay")
    replayed_ids = set(re.findall(r"^replayed (\S+) \S+ -> ", replayed, flags=re.MULTILINE))
    assert replayed_ids == listed_ids, f"replay:\n{replayed}"
    print(listed)
    print(replayed)


def test_rabbitmq_hands_out_a_later_message_first_when_it_has_no_priority(
    fresh_target: tuple[PlanTarget, Path],
) -> None:
    """Why ``list`` cannot end at its first own copy (app.dlq's module doc): on a RabbitMQ 4.3
    quorum queue a message published later is not always handed out later."""
    target, _ = fresh_target
    order = {"celery-0-first": 0, "no-priority": None, "celery-0-last": 0}
    with dead_letter_channel(worker_urls(target)) as channel:
        with ConfirmedPublisher(channel) as publisher:
            for name, priority in order.items():
                message = amqp.Message(b"[]", correlation_id=name, priority=priority, delivery_mode=2)
                assert publisher.publish(message, DEAD_LETTER_QUEUE) is None
        handed: list[str] = []
        while (got := channel.basic_get(DEAD_LETTER_QUEUE)) is not None:
            handed.append(got.properties["correlation_id"])
        # Not acked: the connection's close returns them (the next test purges the queue).
    print(f"\npublished {list(order)}, handed out {handed}")
    assert handed == ["no-priority", "celery-0-first", "celery-0-last"]


def oversized_at(refused: int, count: int) -> PublishPlan:
    """``count`` record tasks; the ``refused``-th carries a 2 MiB argument."""

    def arguments(index: int) -> TaskArguments:
        return (index + 1000,), ({"pad": "x" * 2 * MAX_BODY_BYTES} if index == refused else {})

    return PublishPlan(RECORD, count, arguments)


def test_a_1_mib_header_is_refused_by_the_publisher_on_a_connection_that_carries_on(
    fresh_target: tuple[PlanTarget, Path],
) -> None:
    """Issue 28's last case: the publisher used to send a 1 MiB header, have its connection closed
    by the broker (frame_max), retry for 63 s and end in "Connection reset by peer"."""
    target, results = fresh_target
    since = time.time()
    app = make_app(from_env(broker_env(target.cluster)))  # on this thread: by address
    try:
        with app.producer_or_acquire() as producer:
            good = [app.send_task(RECORD, args=(n,), producer=producer).id for n in range(5)]
            amqp_connection = producer.connection.connection
            assert amqp_connection.frame_max == AMQP_FRAME_MAX, "the frame size the publisher's limit is measured by"
            started = time.monotonic()
            with pytest.raises(MessageRefused, match=r"headers exceed 32 KiB \(10\d{5} bytes") as refused:
                app.send_task(RECORD, args=(5,), headers={"big": "x" * 1024 * 1024}, producer=producer)
            took = time.monotonic() - started
            good += [app.send_task(RECORD, args=(n,), producer=producer).id for n in range(6, 11)]
            assert producer.connection.connection is amqp_connection, "the same connection carried on"
            assert amqp_connection.connected
        # The scheduler's batch: the one refused, the rest published, no failover.
        batch = publish_pipelined(app, oversized_at(7, 20), lambda _: None)
    finally:
        app.close()
    assert took < 5, f"refused in {took:.1f}s: retried?"
    assert [r.index for r in batch.refused] == [7], batch
    assert batch.refused[0].reason.startswith("body of 20")
    assert (batch.error, batch.confirmed, batch.failovers, batch.republished) == (None, 19, 0, 0)

    # A compressed bomb (64 MiB of JSON as ~64 KB of zlib): refused as it came, never inflated.
    bomb_id, bomb = raw(zlib.compress(b"[[" + b"0," * (32 * 1024 * 1024) + b"0], {}, {}]", 9))
    bomb.properties["application_headers"]["compression"] = "application/x-gzip"
    publish_raw(target, [bomb])

    expected = {*good, *batch.task_ids}
    poll(lambda: expected <= set(records.tally(results).per_task), 120, f"{len(expected)} good tasks to complete")
    poll(lambda: bomb_id in dead(target), 60, f"the compressed message in {DEAD_LETTER_QUEUE}")
    refusal = dead(target)[bomb_id].refusal
    assert refusal is not None
    assert refusal.reason.startswith("header 'compression' is 'application/x-gzip'; allowed: none"), refusal
    assert not set(records.tally(results).per_task) & {refused.value.task_id, batch.refused[0].task_id}
    assert not worker_trouble(target, since), "worker pods restarted or left service"
    print(f"\nrefused in {took * 1000:.0f} ms: {refused.value}\npipelined: {batch.refusals()}")


def test_the_broker_closes_a_connection_whose_header_frame_passes_frame_max(
    fresh_target: tuple[PlanTarget, Path],
) -> None:
    """Why the publisher checks: what RabbitMQ 4.3 does with what it used to send (raw py-amqp)."""
    target, _ = fresh_target
    message = amqp.Message(b"[]", application_headers={"big": "x" * (AMQP_FRAME_MAX + 1)})
    failure: BaseException | None = None
    with contextlib.suppress(Exception), dead_letter_channel(worker_urls(target)) as channel:
        try:
            # To no queue: nothing is stored whatever happens.
            channel.basic_publish(message, exchange="", routing_key=f"nowhere-{uuid.uuid4()}")
            channel.connection.drain_events(timeout=10)
        except Exception as exc:  # whichever way py-amqp reports the broker's close
            failure = exc
    print(f"\nbroker's answer: {type(failure).__name__}: {failure}")
    assert failure is not None, "the broker took a header frame over frame_max"
    assert not isinstance(failure, TimeoutError), f"no answer within 10 s: {failure!r}"
