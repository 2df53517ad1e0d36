"""How long a frozen broker held each worker, from looks at the workers' exporters (drill.held)."""

from __future__ import annotations

from contract import metrics, timing
from drill.held import FreezeReport, Look, WorkerHold, broker_of, holds, pod_of

FROZEN, THAWED = 100.0, 160.0
LIMIT = float(timing.FROZEN_BROKER_HOLD_MAX_S)


def looks(*rows: tuple[float, dict[str, str | None]]) -> list[Look]:
    return [Look(at, brokers) for at, brokers in rows]


def test_the_broker_a_worker_consumes_from_is_read_from_its_exporter() -> None:
    text = f'# HELP x\n{metrics.BROKER_INFO}{{broker="10.0.0.7:5672"}} 1.0\n{metrics.BROKER_CONNECTED} 1.0\n'
    assert broker_of(text) == "10.0.0.7:5672"
    assert broker_of(f"{metrics.BROKER_CONNECTED} 0.0\n") is None, "not consuming: no broker"
    pods = {"rabbitmq-0": "10.0.0.5", "rabbitmq-1": "10.0.0.7"}
    assert pod_of("10.0.0.7:5672", pods) == "rabbitmq-1"
    assert pod_of("rabbitmq-0.rabbitmq-headless.ha.svc.cluster.local:5671", pods) == "rabbitmq-0"
    assert pod_of("10.9.9.9:5672", pods) is None
    assert pod_of(None, pods) is None


def test_a_worker_on_the_frozen_node_is_held_until_it_consumes_elsewhere() -> None:
    seen = looks(
        (99.0, {"w-a": "rmq-0", "w-b": "rmq-1"}),
        (110.0, {"w-a": "rmq-0", "w-b": "rmq-1"}),  # still counting itself as consuming: held
        (121.0, {"w-a": None, "w-b": "rmq-1"}),  # its heartbeats told it
        (122.5, {"w-a": "rmq-2", "w-b": "rmq-1"}),
        (150.0, {"w-a": "rmq-2", "w-b": None}),  # a blip on a healthy node counts too
        (151.0, {"w-a": "rmq-2", "w-b": "rmq-1"}),
    )
    a, b = holds(seen, "rmq-0", FROZEN, THAWED)
    assert a == WorkerHold("w-a", on_frozen_node=True, held_s=22.5, left=True)
    assert b == WorkerHold("w-b", on_frozen_node=False, held_s=1.0, left=True)


def test_a_worker_that_never_leaves_is_held_for_the_whole_freeze() -> None:
    seen = looks((99.0, {"w-a": "rmq-0"}), (130.0, {"w-a": None}), (159.0, {"w-a": "rmq-0"}))
    [a] = holds(seen, "rmq-0", FROZEN, THAWED)
    assert (a.left, a.held_s) == (False, THAWED - FROZEN)


def test_a_worker_missing_from_a_look_is_not_consuming() -> None:
    seen = looks((99.0, {"w-a": "rmq-1"}), (105.0, {}), (140.0, {"w-a": "rmq-1"}))
    [a] = holds(seen, "rmq-0", FROZEN, THAWED)
    assert (a.on_frozen_node, a.held_s, a.left) == (False, 35.0, True)


def report(*held: WorkerHold, not_ready_after_s: float | None = 35.0) -> FreezeReport:
    return FreezeReport("rmq-0", "leader", 60.0, holds=list(held), not_ready_after_s=not_ready_after_s)


def test_the_freeze_passes_only_with_every_worker_back_in_time_and_the_pod_not_ready() -> None:
    on = WorkerHold("w-a", on_frozen_node=True, held_s=LIMIT - 1, left=True)
    off = WorkerHold("w-b", on_frozen_node=False, held_s=0.0, left=True)
    assert report(on, off).ok
    assert not report(WorkerHold("w-a", True, LIMIT + 0.5, True), off).ok, "held past the limit"
    assert not report(WorkerHold("w-a", True, 10.0, False), off).ok, "never consumed elsewhere"
    assert not report(off).ok, "no worker on the frozen node: nothing shown"
    assert not report(on, not_ready_after_s=None).ok, "the frozen pod stayed Ready"
    failed = report(on)
    failed.error = "KubeError: no worker could be put on rmq-0"
    assert not failed.ok
    assert report(on).to_json(0.0)["workers"] == [
        {"worker": "w-a", "on_frozen_node": True, "held_s": round(LIMIT - 1, 1), "left": True}
    ]
