"""workerLanes: each lane's queue, Deployment and timing, every bad combination refused by its key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract import lanes, timing
from settings import PROJECT
from tests.unit.settings.test_front_door import DEV, PROD, parse, refused

KEY = f"{PROJECT}:workerLanes"


def with_lanes(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


def test_a_new_stack_gets_a_default_and_a_long_lane() -> None:
    default, long = parse(DEV).workers.lanes
    assert (default.name, default.queue, default.deployment) == ("default", "celery", "celery-worker")
    assert (long.name, long.queue, long.deployment) == ("long", "celery.long", "celery-worker-long")
    # The default lane is the single queue a stack had before lanes, with the same timing.
    assert default.timing == lanes.LaneTiming(1, timing.TASK_SOFT_TIME_LIMIT_S, timing.TASK_TIME_LIMIT_S, 1800)
    assert default.timing.termination_grace_s == timing.MIN_TERMINATION_GRACE_S
    assert long.timing == lanes.LaneTiming(1, 3540, 3600, 2 * 3600 + 60)
    assert long.timing.termination_grace_s == 3600 + timing.SHUTDOWN_MARGIN_S
    assert long.replicas == 2


def test_the_default_lanes_size_is_the_worker_keys() -> None:
    s = parse(DEV, workerReplicas="4", workerConcurrency="3", workerCpuMillis="300", workerMemoryMiB="384")
    default = s.workers.lanes[0]
    assert (default.replicas, default.concurrency, default.cpu_millis, default.memory_mib) == (4, 3, 300, 384)


def test_a_lane_of_its_own_with_routes_and_timing() -> None:
    s = parse(
        DEV,
        workerLanes=with_lanes(
            {"name": "reports", "replicas": 1, "timeLimitS": 600, "tasks": ["reports.*", "app.tasks.export"]},
            {"name": "default", "prefetch": 4},
        ),
    )
    default, reports = s.workers.lanes
    assert default.name == "default", "the default lane comes first, wherever the list puts it"
    assert default.timing.prefetch_multiplier == 4
    assert reports.timing == lanes.LaneTiming(1, 540, 600, 2 * 600 + 60)
    assert reports.tasks == ("reports.*", "app.tasks.export")


@pytest.mark.parametrize(
    ("entries", "key", "allowed"),
    [
        ([{"name": "long"}], KEY, "exactly one named 'default'"),
        ([{"name": "default"}, {"name": "default"}], KEY, "exactly one named 'default'"),
        ([{"name": "default"}, {"name": "Long"}], f"{KEY}[1].name", "lower-case letters"),
        ([{"name": "default"}, {"name": "dlq"}], f"{KEY}[1].name", "dead-letter topology"),
        ([{"name": "default"}, {"name": "a"}, {"name": "a"}], KEY, "distinct names"),
        ([{"name": "default", "replicas": 3}], f"{KEY}[0].replicas", f"{PROJECT}:workerReplicas"),
        ([{"name": "default", "memoryMiB": 512}], f"{KEY}[0].memoryMiB", f"{PROJECT}:workerMemoryMiB"),
        ([{"name": "default"}, {"name": "x", "timeout": 3}], f"{KEY}[1].timeout", "a lane field"),
        ([{"name": "default"}, {"name": "x", "prefetch": 17}], f"{KEY}[1].prefetch", "1..16"),
        ([{"name": "default"}, {"name": "x", "prefetch": True}], f"{KEY}[1].prefetch", "a whole number"),
        ([{"name": "default"}, {"name": "x", "timeLimitS": 86401}], f"{KEY}[1].timeLimitS", "1..86400"),
        (
            [{"name": "default"}, {"name": "x", "timeLimitS": 30, "softTimeLimitS": 30}],
            f"{KEY}[1].softTimeLimitS",
            "below timeLimitS (30)",
        ),
        (
            [{"name": "default"}, {"name": "x", "prefetch": 4, "timeLimitS": 600, "consumerTimeoutS": 3000}],
            f"{KEY}[1].consumerTimeoutS",
            ">= 3060: with prefetch 4",
        ),
        ([{"name": "default"}, {"name": "x", "concurrency": 65}], f"{KEY}[1].concurrency", "1..64"),
        ([{"name": "default"}, {"name": "x", "memoryMiB": 128, "concurrency": 8}], f"{KEY}[1].memoryMiB", "MiB"),
        ([{"name": "default"}, {"name": "x", "tasks": "a.*"}], f"{KEY}[1].tasks", "a list of task names"),
        ([{"name": "default", "tasks": ["a.*"]}], f"{KEY}[0].tasks", "no routes on 'default'"),
        ([{"name": "default"}, {"name": "x", "tasks": ["a.?"]}], f"{KEY}[1].tasks", "*-glob"),
        (
            [{"name": "default"}, {"name": "x", "tasks": ["a.*"]}, {"name": "y", "tasks": ["a.*"]}],
            f"{KEY}[2].tasks",
            "it is 'x''s already",
        ),
        ([{"name": "default"}] * 9, KEY, "1-8 lanes"),
        ([{"name": "default", "deliveryLimit": 0}], f"{KEY}[0].deliveryLimit", "1..100"),
        ([{"name": "default"}, {"name": "x", "deliveryLimit": 101}], f"{KEY}[1].deliveryLimit", "1..100"),
    ],
)
def test_a_bad_lane_is_refused_by_its_key(entries: list[dict[str, Any]], key: str, allowed: str) -> None:
    problems = refused(DEV, workerLanes=json.dumps(entries))
    mine = [p for p in problems if p.startswith(f"{key}: ")]
    assert mine, problems
    assert allowed in mine[0], mine[0]


@pytest.mark.parametrize("raw", ['{"name": "default"}', '["default", "long"]', "default,long"])
def test_lanes_are_a_list_of_objects(raw: str) -> None:
    [problem] = refused(DEV, workerLanes=raw)
    assert problem.startswith(f"{KEY}: got "), problem
    assert "a list of lane objects" in problem


def test_prod_wants_two_pods_in_every_lane() -> None:
    assert parse(PROD).workers.lanes[1].replicas == 2
    [problem] = refused(PROD, workerLanes=with_lanes({"name": "default"}, {"name": "long", "replicas": 1}))
    assert problem.startswith(f"{KEY}[1].replicas: got 1; allowed: >= 2 in prod"), problem


def test_every_lanes_pods_must_fit_the_nodes() -> None:
    problems = refused(DEV, workerLanes=with_lanes({"name": "default"}, {"name": "long", "replicas": 30}))
    assert any(p.startswith(f"{KEY}[1].replicas: got 30; allowed: fewer pods") for p in problems), problems
    problems = refused(DEV, workerLanes=with_lanes({"name": "default"}, {"name": "long", "cpuMillis": 4000}))
    assert any(p.startswith(f"{KEY}[1].cpuMillis: got 4000; allowed: <= ") for p in problems), problems


def test_another_lane_autoscales_only_within_its_own_bound() -> None:
    s = parse(DEV, autoscaling="hpa", autoscalingMaxReplicas="6")
    default, long = s.workers.lanes
    assert default.max_replicas == 6
    assert long.max_replicas == long.replicas, "the workers' bound is sized for the default lane"
    [problem] = refused(
        DEV, autoscaling="keda", workerLanes=with_lanes({"name": "default"}, {"name": "long", "maxReplicas": 1})
    )
    assert problem.startswith(f"{KEY}[1].maxReplicas: got 1; allowed: >= the lane's replicas (2)"), problem


def test_a_number_stored_as_digits_is_a_number() -> None:
    """`pulumi config set --path` may store a lane's number as its text."""
    lanes = parse(DEV, workerLanes=with_lanes({"name": "default"}, {"name": "x", "timeLimitS": "600"})).workers.lanes
    assert lanes[1].timing.time_limit_s == 600
    [problem] = refused(DEV, workerLanes=with_lanes({"name": "default"}, {"name": "x", "timeLimitS": "6e2"}))
    assert problem.startswith(f"{KEY}[1].timeLimitS: got '6e2'"), problem
