"""app.intake: what the worker accepts as a task message, and why it refuses the rest.

Every malformed shape issue 28 found (and the ones Celery 5.7's main process would crash or ack
away on) is refused with a reason naming the part and what is allowed; a message exactly as
Celery 5.7 publishes it is accepted.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from app import intake, tasks
from app.config import AppConfig
from app.factory import make_app
from app.intake import Accepted, Delivery, Refused

KNOWN = frozenset({tasks.NOOP, tasks.COUNT})
TASK_ID = "5d1d7b0e-6c0a-4a43-9f87-0f8f3e0b1c2d"


def celery_message(task: str = tasks.NOOP, **options: Any) -> Delivery:
    """A task message as this project's Celery app builds it (headers and body of protocol 2)."""
    app = make_app(AppConfig(broker_urls=("amqp://u:p@a:5672//",)), random.Random(0))
    message = app.amqp.as_task_v2(TASK_ID, task, **options)
    body = json.dumps(message.body).encode()
    return Delivery(body=body, content_type="application/json", content_encoding="utf-8", headers=message.headers)


def with_(delivery: Delivery, **changes: Any) -> Delivery:
    fields = {**delivery.__dict__, **changes}
    return Delivery(**fields)


def headers_with(delivery: Delivery, **headers: Any) -> Delivery:
    return with_(delivery, headers={**delivery.headers, **headers})


def test_a_message_as_celery_sends_it_is_accepted() -> None:
    good = celery_message(args=(1, "x"), kwargs={"a": [1, 2]}, countdown=None, time_limit=5, soft_time_limit=4)
    assert intake.check(good, KNOWN) == Accepted(task=tasks.NOOP, task_id=TASK_ID)
    eta = celery_message(eta="2026-12-07T10:00:00+00:00", expires="2026-12-08T10:00:00+00:00")
    assert isinstance(intake.check(eta, KNOWN), Accepted)
    as_text = with_(good, body=good.body.decode() if isinstance(good.body, bytes) else good.body)
    assert isinstance(intake.check(as_text, KNOWN), Accepted), "py-amqp hands a UTF-8 body over as text"


GOOD = celery_message()


@pytest.mark.parametrize(
    ("delivery", "reason"),
    [
        (with_(GOOD, body=b'"just a string"'), "body is 'just a string'; allowed: a JSON array [args"),
        (with_(GOOD, body=b"[[], {}]"), "body is [[], {}]; allowed"),
        (with_(GOOD, body=b'{"args": []}'), "allowed: a JSON array [args (array)"),
        (with_(GOOD, body=b"[{}, {}, {}]"), "body's args are {}; allowed: a JSON array"),
        (with_(GOOD, body=b"[[], [], {}]"), "body's kwargs are []; allowed: a JSON object"),
        (with_(GOOD, body=b"[[], {}, null]"), "body's embed is None; allowed: a JSON object"),
        (with_(GOOD, body=b'[[], {}, {"callbacks": "x"}]'), "embed 'callbacks' is 'x'"),
        (with_(GOOD, body=b'[[], {}, {"chord": []}]'), "embed 'chord' is []"),
        (with_(GOOD, body=b"not json at all"), "body is not JSON (JSONDecodeError"),
        (with_(GOOD, body=json.dumps({str(n): [n] * 3 for n in range(30_000)}).encode()), "body is {'0': [0, 0, 0],"),
        (with_(GOOD, body=b"\xff\xfe[[], {}, {}]"), "body is not UTF-8 (invalid start byte at byte 0)"),
        (with_(GOOD, body=b""), "empty body"),
        (with_(GOOD, body=b"[" * 100_000), "nested too deep"),
        (with_(GOOD, body=b'[[{"__type__": "nope", "__value__": 1}], {}, {}]'), "body is not JSON (ValueError"),
        (with_(GOOD, body=b"[[" + b"1," * 600_000 + b"1], {}, {}]"), "body of 1200013 bytes; allowed: at most 1048576"),
        (with_(GOOD, content_type="text/plain"), "content type 'text/plain'; allowed: 'application/json'"),
        (with_(GOOD, content_type="application/data"), "content type 'application/data'"),
        (with_(GOOD, content_type=None), "content type None"),
        (with_(GOOD, content_encoding="binary"), "content encoding 'binary'; allowed: 'utf-8'"),
        (headers_with(GOOD, compression="application/x-gzip"), "header 'compression'"),
        (with_(GOOD, headers=None), "no headers"),
        (with_(GOOD, headers=[("task", tasks.NOOP)]), "no headers"),
        (headers_with(GOOD, task=None), "header 'task' is None; allowed: a non-empty string"),
        (headers_with(GOOD, id=["a"]), "header 'id' is ['a']; allowed: a non-empty string"),
        (headers_with(GOOD, id=" "), "header 'id' is ' '"),
        (headers_with(GOOD, task="x" * 300), "allowed: up to 256 printable characters"),
        (headers_with(GOOD, task="app.tasks.noop\n"), "allowed: up to 256 printable characters"),
        (headers_with(GOOD, big="x" * 40_000), "headers exceed 32 KiB"),
        (headers_with(GOOD, deep=[[[[[[[[["x"]]]]]]]]]), "headers nest deeper than 8 levels"),
        (headers_with(GOOD, timelimit="ab"), "header 'timelimit' is 'ab'; allowed: [hard, soft] seconds"),
        (headers_with(GOOD, timelimit=[1, 2, 3]), "header 'timelimit'"),
        (headers_with(GOOD, timelimit=[True, None]), "header 'timelimit'"),
        (headers_with(GOOD, eta="next tuesday"), "header 'eta' is 'next tuesday'; allowed: an ISO 8601 time"),
        (headers_with(GOOD, expires=5), "header 'expires' is 5"),
        (headers_with(GOOD, retries=-1), "header 'retries' is -1; allowed: an integer >= 0"),
        (headers_with(GOOD, ignore_result="no"), "header 'ignore_result'"),
        (headers_with(GOOD, stamped_headers="abc"), "header 'stamped_headers'"),
        (headers_with(GOOD, shadow=3), "header 'shadow' is 3"),
        (headers_with(GOOD, task="app.tasks.nope"), "unknown task 'app.tasks.nope': this worker does not register"),
    ],
    ids=lambda value: None if isinstance(value, Delivery) else value[:40],
)
def test_every_malformed_shape_is_refused_by_name(delivery: Delivery, reason: str) -> None:
    verdict = intake.check(delivery, KNOWN)
    assert isinstance(verdict, Refused), verdict
    assert reason in verdict.reason, verdict.reason
    assert len(verdict.reason) < 400, "a reason never echoes a large value"


def test_the_first_problem_is_named_and_an_unknown_task_only_when_the_rest_is_well_formed() -> None:
    unknown_and_broken = with_(headers_with(GOOD, task="app.tasks.nope"), body=b"[]")
    verdict = intake.check(unknown_and_broken, KNOWN)
    assert isinstance(verdict, Refused)
    assert verdict.reason.startswith("body is []")


def test_limits_are_inclusive() -> None:
    filler = "1," * ((intake.MAX_BODY_BYTES - 16) // 2)
    body = f"[[{filler}1], {{}}, {{}}]".encode()
    body = body[:-3] + b" " * (intake.MAX_BODY_BYTES - len(body)) + body[-3:]
    assert len(body) == intake.MAX_BODY_BYTES
    assert isinstance(intake.check(with_(GOOD, body=body), KNOWN), Accepted)
    assert isinstance(intake.check(with_(GOOD, body=body + b" "), KNOWN), Refused)
