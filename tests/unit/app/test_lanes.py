"""The worker's lane from its environment: queues, routes and time limits, and where Celery sends a task."""

from __future__ import annotations

import json
import random

import pytest

from app.config import ConfigError, from_env
from app.factory import make_app
from contract import timing
from tests.unit.app.test_config import HOSTS_ENV

LANES_ENV = {
    **HOSTS_ENV,
    "TASK_QUEUES": "celery,celery.long",
    "TASK_ROUTES": json.dumps({"reports.*": "celery.long", "app.tasks.count": "celery.long"}),
    "TASK_SOFT_TIME_LIMIT_S": "3540",
    "TASK_TIME_LIMIT_S": "3600",
}


def test_without_lanes_the_worker_is_the_single_queue_worker_it_was() -> None:
    config = from_env(HOSTS_ENV)
    assert config.queues == ("celery",)
    assert config.routes == ()
    assert (config.soft_time_limit_s, config.time_limit_s) == (timing.TASK_SOFT_TIME_LIMIT_S, timing.TASK_TIME_LIMIT_S)


def test_a_lane_worker_declares_every_queue_and_takes_its_time_limits() -> None:
    app = make_app(from_env(LANES_ENV), random.Random(0))
    assert [q.name for q in app.conf.task_queues] == ["celery", "celery.long"]
    for queue in app.conf.task_queues:
        assert queue.exchange.name == queue.name
        assert queue.exchange.type == "topic", "native delayed delivery routes through topic exchanges"
        assert queue.routing_key == queue.name
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (3540, 3600)


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("reports.daily", "celery.long"),
        ("app.tasks.count", "celery.long"),
        ("app.tasks.noop", "celery"),
        ("reportsx", "celery"),
    ],
)
def test_celery_routes_a_task_to_its_lane(task: str, queue: str) -> None:
    app = make_app(from_env(LANES_ENV), random.Random(0))
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue
    assert route["queue"].exchange.name == queue


def test_an_explicit_queue_beats_the_routes() -> None:
    """Routing by option: a caller (or a task's own ``queue``) that names a lane's queue wins."""
    app = make_app(from_env(LANES_ENV), random.Random(0))
    assert app.amqp.router.route({"queue": "celery"}, "reports.daily")["queue"].name == "celery"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TASK_QUEUES": "celery.long,celery"}, "celery first"),
        ({"TASK_QUEUES": "celery,Celery.Long"}, "celery first"),
        ({"TASK_QUEUES": "celery,celery.long,celery.long"}, "lists an entry twice"),
        ({"TASK_ROUTES": "{"}, "is not JSON"),
        ({"TASK_ROUTES": '["a.*"]'}, "a JSON object of task name"),
        ({"TASK_ROUTES": '{"a.*": "celery.other"}'}, "a JSON object of task name"),
        ({"TASK_ROUTES": '{"a.?": "celery.long"}'}, "a JSON object of task name"),
        ({"TASK_TIME_LIMIT_S": "0"}, "TASK_TIME_LIMIT_S='0' is out of range"),
        ({"TASK_TIME_LIMIT_S": "60", "TASK_SOFT_TIME_LIMIT_S": "60"}, "is not below TASK_TIME_LIMIT_S=60"),
    ],
)
def test_a_bad_lane_environment_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        from_env({**LANES_ENV, **env})


def test_only_a_hard_limit_gives_a_soft_one_before_it() -> None:
    env = {k: v for k, v in LANES_ENV.items() if k != "TASK_SOFT_TIME_LIMIT_S"}
    config = from_env({**env, "TASK_TIME_LIMIT_S": "600"})
    assert (config.soft_time_limit_s, config.time_limit_s) == (540, 600)
