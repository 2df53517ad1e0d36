"""The pipelined publisher without a broker: delivery-tag bookkeeping, message fidelity with
``app.send_task``, and failover/nack handling against a scripted fake connection.

The publisher runs on a fake clock that moves only when it waits (a read that times out, a
back-off, a confirm's latency): its budgets are checked at their real values, exactly, and
never flake on a loaded machine.

The real broker side (a stock worker runs the messages, a node killed mid-publish loses
nothing) is in tests/integration/test_publish.py.
"""

from __future__ import annotations

import random
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from app import batch, publish, tasks
from app.batch import PublishPlan
from app.config import from_env
from app.factory import make_app
from app.publish import ConfirmWindow, publish_pipelined
from app.scheduler import PUBLISHERS, publish_confirmed
from app.scheduler import main as scheduler_main
from contract import timing

URLS_ENV = {"BROKER_URLS": "amqp://u:pw@node-a:5672/,amqp://u:pw@node-b:5672/,amqp://u:pw@node-c:5672/"}


def build_app() -> Celery:
    return make_app(from_env(URLS_ENV), random.Random(0))


def with_fake_connection(app: Celery, conn: FakeConnection) -> None:
    # Celery builds its task sender (and an idle event dispatcher, with a lazy connection of
    # its own) on first use: do that first, then hand only the publisher the fake connection.
    assert app.amqp.send_task_message is not None

    def connection_for_write(*_: Any, **__: Any) -> Any:
        return conn

    app.connection_for_write = connection_for_write  # type: ignore[method-assign]


# ------------------------------------------------------------------ ConfirmWindow ----


def test_tags_count_from_one_and_map_back_to_indexes() -> None:
    window = ConfirmWindow(limit=4)
    assert [window.sent(i) for i in (10, 11, 12)] == [1, 2, 3]
    assert len(window) == 3
    assert window.settle(2, multiple=False) == [11]
    assert window.settle(3, multiple=True) == [10, 12]
    assert len(window) == 0


def test_window_is_full_at_its_limit_and_frees_on_acks() -> None:
    window = ConfirmWindow(limit=3)
    for i in range(3):
        assert not window.full
        window.sent(i)
    assert window.full
    window.settle(1, multiple=False)
    assert not window.full


def test_multiple_ack_settles_every_older_tag_once() -> None:
    window = ConfirmWindow(limit=100)
    for i in range(10):
        window.sent(i)
    assert window.settle(4, multiple=False) == [3]
    assert window.settle(6, multiple=True) == [0, 1, 2, 4, 5]
    # Already settled tags are ignored, single or multiple.
    assert window.settle(6, multiple=True) == []
    assert window.settle(2, multiple=False) == []
    assert window.settle(10, multiple=True) == [6, 7, 8, 9]


def test_multiple_with_tag_zero_means_everything_so_far() -> None:
    window = ConfirmWindow(limit=10)
    for i in range(5):
        window.sent(i)
    assert window.settle(0, multiple=True) == [0, 1, 2, 3, 4]


def test_a_tag_never_published_is_an_error() -> None:
    window = ConfirmWindow(limit=10)
    window.sent(0)
    with pytest.raises(ValueError, match=r"only 1\.\.1 were published"):
        window.settle(2, multiple=False)


def test_abandon_returns_the_unconfirmed_in_publish_order_and_restarts_tags() -> None:
    window = ConfirmWindow(limit=10)
    for i in range(6):
        window.sent(i)
    window.settle(2, multiple=False)
    window.settle(5, multiple=False)
    assert window.abandon() == [0, 2, 3, 5]
    assert len(window) == 0
    # A new channel numbers its publishes from 1 again.
    assert window.sent(0) == 1


def test_window_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        ConfirmWindow(limit=0)


def test_the_bookkeeping_stays_linear_for_many_single_acks() -> None:
    # Single acks in order leave nothing behind in the tag queue.
    window = ConfirmWindow(limit=100_000)
    for i in range(50_000):
        window.sent(i)
    for tag in range(1, 50_001):
        window.settle(tag, multiple=False)
    assert len(window) == 0
    assert window.abandon() == []


# ------------------------------------------------------------ message fidelity ----


@dataclass
class CapturingProducer:
    """Stands in for kombu's Producer: records what Celery hands to ``publish``."""

    connection: Connection = field(default_factory=lambda: Connection("memory://"))
    calls: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    def publish(self, body: Any, **kwargs: Any) -> None:
        self.calls.append((body, kwargs))


def test_messages_are_what_send_task_publishes() -> None:
    app = build_app()
    plan = PublishPlan(tasks.SLEEP_MS, 2, lambda index: ((), {"ms": 7 + index}))
    pipeline = publish._Pipeline(app, plan, lambda _: None, window=8, confirm_timeout_s=1, outage_budget_s=1)
    ours = CapturingProducer()
    pipeline._publish(ours, 1)  # type: ignore[arg-type]
    theirs = CapturingProducer()
    args, kwargs = plan.arguments(1)
    app.send_task(plan.task_name, args, kwargs, task_id=plan.task_id(1), producer=theirs)  # type: ignore[arg-type]

    [(our_body, our_kw)] = ours.calls
    [(their_body, their_kw)] = theirs.calls
    assert our_body == their_body
    # Only the delivery mechanics differ: no retry inside Celery (the pipeline retries),
    # the declaration done once per channel, and mandatory so an unroutable publish fails.
    assert our_kw.pop("retry") is False
    assert their_kw.pop("retry") is True
    assert our_kw.pop("declare") == []
    assert their_kw.pop("declare") == list(pipeline.route.declare)
    assert our_kw.pop("mandatory") is True
    # The pipeline reads its confirms itself; the app's send_task bounds its wait.
    assert our_kw.pop("confirm_timeout") is None
    assert their_kw.pop("confirm_timeout") == timing.PUBLISH_CONFIRM_TIMEOUT_S
    assert our_kw == their_kw
    assert our_kw["exchange"] == "celery"
    assert our_kw["routing_key"] == "celery"
    assert our_kw["headers"]["task"] == tasks.SLEEP_MS
    assert our_kw["headers"]["id"] == plan.task_id(1)
    [queue] = pipeline.route.declare
    assert queue.queue_arguments == {"x-queue-type": "quorum"}


# ------------------------------------------------------- pipeline with a fake broker ----


class Dropped(ConnectionError):
    """The fake connection died."""


@dataclass
class FakeClock:
    """The publisher's ``clock`` and ``sleep``: time passes only when something waits, by what it waits."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"asked to sleep {seconds}s"
        self.now += seconds


@dataclass
class FakeBroker:
    """Scripted broker behind every FakeConnection: what arrived, and what goes wrong when.

    ``drop_on``: (connection number, nth publish on it) pairs at which the socket dies; the
    publish that hit it counts as stored or not per ``stored_when_dropped``.
    ``nack_once``: task ids whose first publish is nacked.
    ``confirm_latency_s``: how long a read waits for confirms that are on their way.
    """

    drop_on: set[tuple[int, int]] = field(default_factory=set)
    stored_when_dropped: bool = True
    nack_once: set[str] = field(default_factory=set)
    silent_connections: set[int] = field(default_factory=set)
    nacking_connections: set[int] = field(default_factory=set)
    stored: list[str] = field(default_factory=list)
    connections: int = 0
    hosts: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    confirm_latency_s: float = 0.0
    clock: FakeClock = field(default_factory=FakeClock)


class FakeChannel:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.confirming = False
        self.tag = 0
        self.unsettled: list[tuple[int, str]] = []
        self.declared: list[str] = []

    def exchange_declare(self, exchange: str, **_: Any) -> None:
        self.declared.append(f"exchange:{exchange}")

    def prepare_queue_arguments(self, arguments: dict[str, Any], **_: Any) -> dict[str, Any]:
        return arguments

    def queue_declare(self, queue: str, **_: Any) -> tuple[str, int, int]:
        self.declared.append(f"queue:{queue}")
        return queue, 0, 0

    def queue_bind(self, queue: str, **_: Any) -> None:
        self.declared.append(f"bind:{queue}")

    def confirm_select(self) -> None:
        self.confirming = True

    def prepare_message(self, body: bytes, *args: Any) -> dict[str, Any]:
        return {"body": body, "headers": args[3]}

    def basic_publish(self, message: dict[str, Any], **kwargs: Any) -> None:
        assert self.confirming, "published before confirm.select"
        assert kwargs["mandatory"] is True
        broker = self.conn.broker
        self.tag += 1
        task_id = message["headers"]["id"]
        if (self.conn.number, self.tag) in broker.drop_on:
            if broker.stored_when_dropped:
                broker.stored.append(task_id)
            self.conn.alive = False
            raise Dropped(f"connection {self.conn.number} reset")
        broker.stored.append(task_id)
        self.unsettled.append((self.tag, task_id))
        broker.max_in_flight = max(broker.max_in_flight, len(self.unsettled))

    def deliver(self) -> None:
        """Settle everything outstanding: nacks one by one, then one ``multiple`` ack."""
        acks: list[int] = []
        for tag, task_id in self.unsettled:
            if self.conn.number in self.conn.broker.nacking_connections:
                self.conn.broker.stored.remove(task_id)
                for callback in list(self.events["basic_nack"]):
                    callback(tag, False)
            elif task_id in self.conn.broker.nack_once:
                self.conn.broker.nack_once.discard(task_id)
                self.conn.broker.stored.remove(task_id)
                for callback in list(self.events["basic_nack"]):
                    callback(tag, False)
            else:
                acks.append(tag)
        self.unsettled.clear()
        # Acks with multiple=True cover nacked tags too only if they are higher: send the
        # highest one singly and the rest as one batch, as RabbitMQ may.
        if acks:
            for callback in list(self.events["basic_ack"]):
                callback(acks[-1], False)
                if len(acks) > 1:
                    callback(acks[-2], True)


class FakeConnection:
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError, OSError)
    channel_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.host = 0
        self.number = 0
        self.alive = False
        self.current: FakeChannel | None = None
        self.released = False

    def ensure_connection(self, **_: Any) -> FakeConnection:
        self.broker.connections += 1
        self.number = self.broker.connections
        self.broker.hosts.append(self.host)
        self.alive = True
        return self

    def channel(self) -> FakeChannel:
        self.current = FakeChannel(self)
        return self.current

    def drain_events(self, timeout: float) -> None:
        if not self.alive:
            raise Dropped("connection is closed")
        if self.number in self.broker.silent_connections or self.current is None or not self.current.unsettled:
            # A socket read with nothing to read blocks for its whole timeout.
            self.broker.clock.sleep(timeout)
            raise TimeoutError("nothing to read")
        self.broker.clock.sleep(self.broker.confirm_latency_s)
        self.current.deliver()

    def heartbeat_check(self, rate: int) -> None:
        del rate

    def collect(self) -> None:
        self.alive = False

    def release(self) -> None:
        self.released = True

    def maybe_switch_next(self) -> None:
        self.host += 1


def run_fake(
    broker: FakeBroker, count: int, window: int = 4, **kwargs: Any
) -> tuple[batch.PublishResult, FakeConnection, list[int]]:
    app = build_app()
    conn = FakeConnection(broker)
    with_fake_connection(app, conn)
    progress: list[int] = []
    result = publish_pipelined(
        app,
        PublishPlan(tasks.NOOP, count),
        progress.append,
        window=window,
        clock=broker.clock,
        sleep=broker.clock.sleep,
        **kwargs,
    )
    return result, conn, progress


def test_every_publish_is_confirmed_with_at_most_window_in_flight() -> None:
    broker = FakeBroker()
    result, conn, progress = run_fake(broker, count=50, window=4)
    assert result.ok, result.error
    assert result.confirmed == 50
    assert broker.max_in_flight == 4
    assert sorted(broker.stored) == sorted(result.task_ids)
    assert len(set(result.task_ids)) == 50
    assert progress == sorted(progress)
    assert progress[-1] == 50
    assert (result.failovers, result.republished) == (0, 0)
    assert conn.released
    assert conn.current is not None
    assert conn.current.declared == ["exchange:celery", "queue:celery", "bind:celery"]


def test_a_dropped_connection_republishes_the_unconfirmed_on_the_next_node() -> None:
    # The 3rd publish on the first connection kills it: 1-2 are in flight, 3 was half sent.
    broker = FakeBroker(drop_on={(1, 3)}, stored_when_dropped=True)
    result, conn, _ = run_fake(broker, count=20, window=4)
    assert result.ok, result.error
    assert result.failovers == 1
    assert result.republished == 3
    assert broker.hosts == [0, 1], "the failover must move to the next broker URL"
    # Nothing lost; the publishes that had reached the broker before the drop are stored twice.
    assert set(broker.stored) == set(result.task_ids)
    assert len(broker.stored) - len(set(broker.stored)) <= 3
    assert conn.current is not None
    assert conn.current.declared[:2] == ["exchange:celery", "queue:celery"], "redeclared on the new channel"


def test_the_publish_that_hit_the_dead_socket_is_republished_too() -> None:
    broker = FakeBroker(drop_on={(1, 1), (2, 3)}, stored_when_dropped=False)
    result, _, _ = run_fake(broker, count=10, window=2)
    assert result.ok, result.error
    assert result.failovers == 2
    assert set(broker.stored) == set(result.task_ids)


def test_nacked_publishes_are_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app()
    plan = PublishPlan(tasks.NOOP, 12)
    # Task ids are generated inside the run: pick the first two published for a nack.
    broker = FakeBroker()
    conn = FakeConnection(broker)
    with_fake_connection(app, conn)
    original = FakeChannel.basic_publish
    publishes = [0]

    def nack_first_two(self: FakeChannel, message: dict[str, Any], **kwargs: Any) -> None:
        publishes[0] += 1
        if publishes[0] <= 2:
            broker.nack_once.add(message["headers"]["id"])
        original(self, message, **kwargs)

    monkeypatch.setattr(FakeChannel, "basic_publish", nack_first_two)
    result = publish_pipelined(app, plan, lambda _: None, window=3, clock=broker.clock, sleep=broker.clock.sleep)
    assert result.ok, result.error
    assert result.republished == 2
    assert result.failovers == 0
    assert sorted(broker.stored) == sorted(result.task_ids)


def test_a_channel_that_only_nacks_is_replaced() -> None:
    # RabbitMQ 3.10 keeps nacking on a channel that saw its quorum queue leaderless; a new
    # connection is accepted (see app.publish._NACK_REOPEN_S).
    broker = FakeBroker(nacking_connections={1})
    result, _, _ = run_fake(broker, count=10, window=4)
    assert result.ok, result.error
    assert result.failovers == 1
    assert broker.hosts == [0, 1]
    # It backed off and retried on the nacking channel for _NACK_REOPEN_S, no longer than one more pause.
    assert publish._NACK_REOPEN_S < result.seconds <= publish._NACK_REOPEN_S + publish._NACK_PAUSE_MAX_S
    # Publishes the old channel had not settled yet when it was dropped may be stored twice.
    assert set(broker.stored) == set(result.task_ids)


def test_a_silent_broker_times_out_and_fails_over() -> None:
    # The first connection accepts publishes but never confirms: after confirm_timeout_s
    # the publisher must treat it as dead rather than wait forever.
    broker = FakeBroker(silent_connections={1})
    result, _, _ = run_fake(broker, count=10, window=4)
    assert result.ok, result.error
    assert result.failovers == 1
    assert result.republished == 4
    assert broker.hosts == [0, 1]
    # Given up on within one read slice after the timeout; the next node confirms at once.
    timeout = timing.PUBLISH_CONFIRM_TIMEOUT_S
    assert timeout < result.seconds <= timeout + publish._WAIT_SLICE_S


def test_gives_up_once_the_outage_budget_passes_without_a_confirm() -> None:
    # Every connection dies on its first publish, for longer than the production budget (15 min).
    broker = FakeBroker(drop_on={(n, 1) for n in range(1, 10_000)}, stored_when_dropped=False)
    result, _, _ = run_fake(broker, count=5, window=2)
    assert not result.ok
    assert result.error is not None
    assert f"gave up: no new confirm for {timing.OUTAGE_BUDGET_S:.0f}s" in result.error
    assert result.confirmed == 0
    assert result.failovers > 3, "it keeps failing over until the budget is spent"
    # Not before the budget, and at the first failover after it (backing off at most the policy's maximum).
    budget = timing.OUTAGE_BUDGET_S
    assert budget <= result.seconds < budget + timing.PUBLISH_RETRY_INTERVAL_MAX_S


def test_failovers_that_confirm_something_never_spend_the_budget() -> None:
    # Every connection dies on its 3rd publish, after confirming 2 (a second each): progress
    # resets the budget, so a run far longer than the budget never gives up.
    broker = FakeBroker(drop_on={(n, 3) for n in range(1, 100)}, stored_when_dropped=False, confirm_latency_s=1.0)
    budget = 5.0
    result, _, _ = run_fake(broker, count=30, window=1, outage_budget_s=budget)
    assert result.ok, result.error
    assert result.failovers >= 10
    assert result.seconds > 5 * budget


def test_an_empty_plan_confirms_nothing_and_succeeds() -> None:
    result, _, _ = run_fake(FakeBroker(), count=0)
    assert result.ok
    assert result.confirmed == 0


# ------------------------------------------------------------------- scheduler CLI ----


def test_the_scheduler_defaults_to_the_pipelined_publisher() -> None:
    assert PUBLISHERS["pipelined"] is publish_pipelined
    assert PUBLISHERS["simple"] is publish_confirmed


@pytest.mark.parametrize("choice", ["pipelined", "simple"])
def test_the_scheduler_cli_picks_the_publisher(
    choice: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    used: list[str] = []

    def fake(name: str) -> batch.Publisher:
        def run(app: Celery, plan: PublishPlan, on_progress: batch.ProgressCallback) -> batch.PublishResult:
            del app
            used.append(name)
            on_progress(plan.count)
            return batch.PublishResult(plan.count, tuple(f"id-{i}" for i in range(plan.count)), 0.1)

        return run

    monkeypatch.setattr("app.scheduler.PUBLISHERS", {"pipelined": fake("pipelined"), "simple": fake("simple")})
    argv = ["--count", "2", "--task", "noop"] + ([] if choice == "pipelined" else ["--publisher", "simple"])
    assert scheduler_main(argv, URLS_ENV) == 0
    assert used == [choice]
    assert f"({choice} publisher, run " in capsys.readouterr().out


def test_the_same_run_id_gives_the_same_task_ids_and_another_run_new_ones() -> None:
    plan = PublishPlan(tasks.NOOP, 3, run_id="job-uid-1")
    again = PublishPlan(tasks.NOOP, 3, run_id="job-uid-1")
    assert [plan.task_id(i) for i in range(3)] == [again.task_id(i) for i in range(3)]
    assert len({plan.task_id(i) for i in range(3)}) == 3
    assert plan.task_id(0) != PublishPlan(tasks.NOOP, 3, run_id="job-uid-2").task_id(0)
    assert plan.task_id(0) != PublishPlan(tasks.COUNT, 3, run_id="job-uid-1").task_id(0)
    assert PublishPlan(tasks.NOOP, 1).task_id(0) != PublishPlan(tasks.NOOP, 1).task_id(0), "no run id: a new run"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_the_scheduler_takes_its_run_id_from_the_flag_or_the_job(via: str) -> None:
    seen: list[PublishPlan] = []

    def capture(_app: Celery, plan: PublishPlan, on_progress: batch.ProgressCallback) -> batch.PublishResult:
        seen.append(plan)
        on_progress(plan.count)
        return batch.PublishResult(plan.count, tuple(plan.task_id(i) for i in range(plan.count)), 0.1)

    argv = ["--count", "2", "--task", "noop"] + (["--run-id", "r-7"] if via == "flag" else [])
    env = {**URLS_ENV, **({"SCHEDULER_RUN_ID": "r-7"} if via == "env" else {})}
    assert scheduler_main(argv, env, publisher=capture) == 0
    assert seen[0].run_id == "r-7"


# ------------------------------------------------------------- memory: O(window) ----


class _Tally:
    """Stands in for ``FakeBroker.stored`` where only the count matters: a list of every id would
    itself grow with the run and hide the publisher's own memory."""

    def __init__(self) -> None:
        self.count = 0

    def append(self, _task_id: str) -> None:
        self.count += 1

    def remove(self, _task_id: str) -> None:
        self.count -= 1


def _publish_peak_bytes(count: int) -> tuple[int, batch.PublishResult]:
    """Peak memory allocated while publishing ``count`` tasks (result kept), above what was there before."""
    app = build_app()
    broker = FakeBroker()
    tally = _Tally()
    broker.stored = tally  # type: ignore[assignment]
    conn = FakeConnection(broker)
    with_fake_connection(app, conn)
    plan = PublishPlan(tasks.NOOP, count, run_id="memory")
    # Celery builds its message machinery on first use: not the publisher's bookkeeping.
    clock = broker.clock
    warm_up = PublishPlan(tasks.NOOP, 64, run_id="warm-up")
    publish_pipelined(app, warm_up, lambda _: None, window=64, clock=clock, sleep=clock.sleep)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = publish_pipelined(app, plan, lambda _: None, window=64, clock=clock, sleep=clock.sleep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok, result.error
    assert tally.count == 64 + count
    return peak - before, result


def test_the_publishers_memory_does_not_grow_with_the_number_of_tasks() -> None:
    # Bookkeeping per task (an id string, a flag, a tuple slot: ~100 bytes) would add ~900 kB
    # between these two runs; O(window) bookkeeping adds nothing that depends on N.
    small, _ = _publish_peak_bytes(1_000)
    large, result = _publish_peak_bytes(10_000)
    assert large - small < 64 * 1024, f"peak {small} B at 1,000 tasks, {large} B at 10,000"
    assert len(result.task_ids) == 10_000
    assert result.task_ids[9_999] == PublishPlan(tasks.NOOP, 1, run_id="memory").task_id(9_999)


def test_confirmed_ids_are_the_plan_ids_below_upto_minus_the_unconfirmed() -> None:
    plan = PublishPlan(tasks.NOOP, 50, run_id="ids")
    rng = random.Random(7)
    for _ in range(200):
        upto = rng.randrange(0, 50)
        unconfirmed = set(rng.sample(range(upto), rng.randrange(0, upto + 1))) if upto else set()
        expected = [plan.task_id(i) for i in range(upto) if i not in unconfirmed]
        ids = batch.ConfirmedIds(plan, upto, unconfirmed)
        assert len(ids) == len(expected)
        assert list(ids) == expected
        assert [ids[i] for i in range(len(ids))] == expected
        assert list(ids[1::2]) == expected[1::2]
        if expected:
            assert ids[-1] == expected[-1]
        with pytest.raises(IndexError):
            ids[len(expected)]


def test_confirmed_ids_refuse_an_unconfirmed_index_past_the_published_ones() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        batch.ConfirmedIds(PublishPlan(tasks.NOOP, 5), 3, {3})
