"""What a task delivery must be before Celery touches it: the worker's intake check.

Celery 5.7's consumer trusts the broker. A message with valid headers and the body
``"just a string"`` raises in the main process (``celery/worker/request.py`` unpacks the body
into three without a check), which kills the worker; the broker hands it to the next worker,
which dies the same way. A body that is not JSON, or not UTF-8, is acked and gone
(``Consumer.on_decode_error``). So :class:`app.bootsteps.Consumer` runs :func:`check` on every
delivery first and sends what it refuses to the dead-letter queue with the reason
(:data:`REASON_HEADER`); only accepted deliveries reach Celery.

:func:`check` is pure: the same input gives the same verdict, it never raises and it is bounded
by the size limits below. It accepts exactly Celery's task protocol 2 as this project sends it:

- headers: an AMQP table of at most :data:`MAX_HEADER_BYTES`, nested at most
  :data:`MAX_HEADER_DEPTH` deep, with ``task`` and ``id`` non-empty strings, and every other
  header Celery reads in the worker's main process of the type Celery gives it;
- content type ``application/json`` (the app's only ``accept_content``; kombu lets
  ``application/data`` and ``application/text`` past ``accept`` undecoded), content encoding
  ``utf-8``, no ``compression`` header;
- a body of 1 byte to :data:`MAX_BODY_BYTES`, valid UTF-8, valid JSON as kombu decodes it, of
  the shape ``[args (list), kwargs (object), embed (object)]``;
- a task name this worker registers (an unknown one is refused too, by name).
"""

from __future__ import annotations

import reprlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from celery.utils.time import maybe_iso8601
from kombu.utils.json import loads as kombu_loads

REASON_HEADER: Final = "x-ha-celery-reason"
"""On a message the worker put into the dead-letter queue itself (refused here, or failed for good,
``app.failures``): why (``python -m app.dlq list`` shows it)."""
QUEUE_HEADER: Final = "x-ha-celery-queue"
"""On such a message: the queue it came from (where ``replay`` sends it back)."""
REFUSED_AT_HEADER: Final = "x-ha-celery-refused-at"
"""On such a message: when the worker put it there (an AMQP timestamp, UTC)."""
OUTCOME_HEADER: Final = "x-ha-celery-outcome"
"""On such a message: ``refused`` (this check refused it, it never ran) or ``failed`` (it ran and
failed for good, ``app.failures``). Copies made before the header existed are refusals."""
DELIVERY_COUNT_HEADER: Final = "x-ha-celery-delivery-count"
"""On such a message: the ``x-delivery-count`` the delivery carried, the broker's count of its
earlier failed deliveries (0 when it had none). The copy drops the broker's own counters."""

CONTENT_TYPE: Final = "application/json"
CONTENT_ENCODING: Final = "utf-8"

MAX_BODY_BYTES: Final = 1024 * 1024
"""1 MiB. The consumer's main process decodes every body (here, then Celery again) and a JSON
body becomes up to ~20 times its size in Python objects (``[{},{},...]``: a 64-byte dict per 3
bytes); 1 MiB is then ~25 MB at worst, safe in the smallest worker pod the settings allow
(``workerMemoryMiB`` >= 128) beside the pool processes. Celery's guidance is the same: pass
large data by reference, not in the message."""
MAX_HEADER_BYTES: Final = 32 * 1024
"""32 KiB of headers as AMQP encodes them (:func:`headers_problem`: keys, values, type tags and
lengths). Celery's own headers stay under ~3 KiB (``argsrepr`` and ``kwargsrepr`` are cut at
1,024 characters each); every header is copied into each request and written into the worker's
error logs. The same limit holds at the publisher (``app.outgoing``), where it also keeps the
message's header frame inside the broker's ``frame_max`` (``contract.wire.AMQP_FRAME_MAX``,
128 KiB): 32 KiB of headers plus at most ~2.6 KiB of the other properties (ten short strings of
at most 255 bytes, a few numbers) is a quarter of it. A header frame over ``frame_max`` is a
connection error to RabbitMQ: it closes the publisher's connection, never a worker's."""
MAX_HEADER_DEPTH: Final = 8
"""Tables and arrays in headers nest at most this deep (Celery's nest 2: ``stamps``, ``timelimit``)."""
MAX_NAME_CHARS: Final = 256
"""Longest task name or task id accepted (Celery's are ~40 characters)."""
_SHOWN_CHARS: Final = 80


@dataclass(frozen=True)
class Delivery:
    """The parts of one AMQP delivery the check reads (as py-amqp hands them to kombu)."""

    body: bytes | str
    """Bytes, or text when py-amqp already decoded it by its ``content_encoding``."""
    content_type: str | None
    content_encoding: str | None
    headers: Any
    """The ``application_headers`` table (a dict); anything else is refused."""


@dataclass(frozen=True)
class Accepted:
    """A well-formed protocol-2 task message of a task this worker knows."""

    task: str
    task_id: str


@dataclass(frozen=True)
class Refused:
    """A delivery Celery must not see, and why (one sentence naming the part and what is allowed)."""

    reason: str


Verdict = Accepted | Refused


def check(delivery: Delivery, known_tasks: Container[str]) -> Verdict:
    """Accept ``delivery`` as a task of ``known_tasks``, or refuse it with the reason (never raises)."""
    headers = delivery.headers
    if not isinstance(headers, Mapping):
        return Refused("no headers: not a Celery protocol-2 task message (needs the task and id headers)")
    why = _headers_problem(headers) or _content_problem(delivery)
    if why is not None:
        return Refused(why)
    task, task_id = headers["task"], headers["id"]
    decoded = _decode(delivery.body)
    if isinstance(decoded, Refused):
        return decoded
    why = _shape_problem(decoded)
    if why is not None:
        return Refused(why)
    if task not in known_tasks:
        return Refused(f"unknown task {_shown(task)}: this worker does not register it (task id {task_id})")
    return Accepted(task=task, task_id=task_id)


_REPR: Final = reprlib.Repr()
# Bounded work as well as bounded output: a megabyte body is neither walked whole nor echoed.
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = _SHOWN_CHARS


def _shown(value: object) -> str:
    """A short repr for a reason."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that raises must not turn a refusal into a crash
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."


def _headers_problem(headers: Mapping[Any, Any]) -> str | None:
    why = headers_problem(headers)
    if why is not None:
        return why
    for name in ("task", "id"):
        value = headers.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"header {name!r} is {_shown(value)}; allowed: a non-empty string (Celery protocol 2)"
        if len(value) > MAX_NAME_CHARS or not value.isprintable():
            return f"header {name!r} is {_shown(value)}; allowed: up to {MAX_NAME_CHARS} printable characters"
    for name, (allowed, wanted) in _OPTIONAL_HEADERS.items():
        value = headers.get(name)
        if value is not None and not allowed(value):
            return f"header {name!r} is {_shown(value)}; allowed: {wanted} or null"
    return None


def headers_problem(headers: Mapping[Any, Any], *, whole: bool = False) -> str | None:
    """Too big (:data:`MAX_HEADER_BYTES`) or too deep (:data:`MAX_HEADER_DEPTH`): the one size check
    of the worker's intake and of the publisher (``app.outgoing``).

    The size counted is at least what py-amqp writes for the table (exact for strings, tables and
    arrays; 8 bytes for every number), so an array of empty strings is not free. Walked without
    recursion; it stops at the first limit passed unless ``whole`` (the publisher's own message:
    the refusal then says its whole size).
    """
    total = 0
    stack: list[tuple[object, int]] = [(headers, 1)]
    while stack and (whole or total <= MAX_HEADER_BYTES):
        value, depth = stack.pop()
        # Plain types before the ABC: the publisher runs this on every message it sends.
        kind = type(value)
        if kind in _PLAIN_SCALARS:
            total += _SCALAR
            continue
        if kind is str or isinstance(value, _STRINGS):
            total += _TABLE_LENGTH + _payload(value)
            continue
        if kind is dict or isinstance(value, Mapping):
            items: Iterable[tuple[object, object]] = value.items()  # type: ignore[attr-defined]
        elif isinstance(value, list | tuple):
            items = ((None, item) for item in value)
        else:
            total += _SCALAR
            continue
        if depth > MAX_HEADER_DEPTH:
            return f"headers nest deeper than {MAX_HEADER_DEPTH} levels; allowed: at most {MAX_HEADER_DEPTH}"
        total += _TABLE_LENGTH
        for key, item in items:
            total += _TYPE_TAG if key is None else _TYPE_TAG + _KEY_LENGTH + _payload(key)
            stack.append((item, depth + 1))
    if total <= MAX_HEADER_BYTES:
        return None
    measured = f" ({total} bytes as AMQP encodes them)" if whole else ""
    return f"headers exceed {MAX_HEADER_BYTES // 1024} KiB{measured}; allowed: at most {MAX_HEADER_BYTES} bytes"


_STRINGS: Final = (str, bytes, bytearray, memoryview)
_PLAIN_SCALARS: Final = frozenset({type(None), bool, int, float})
_TABLE_LENGTH: Final = 4
"""A table, an array and a long string start with a 4-byte length (AMQP 0-9-1 field tables)."""
_KEY_LENGTH: Final = 1
"""A table's key is a short string: a 1-byte length, then its bytes."""
_TYPE_TAG: Final = 1
"""Every value in a table or an array starts with a 1-byte type tag."""
_SCALAR: Final = 8
"""What a number, a time, a bool or null takes after its type tag, at most (py-amqp: 0 to 8 bytes)."""


def _payload(value: object) -> int:
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return _SCALAR


def body_size_problem(size: int) -> str | None:
    """A body of ``size`` bytes is empty or over :data:`MAX_BODY_BYTES` (the intake's and the publisher's check)."""
    if size == 0:
        return "empty body; allowed: a JSON array [args, kwargs, embed]"
    if size > MAX_BODY_BYTES:
        return f"body of {size} bytes; allowed: at most {MAX_BODY_BYTES} ({MAX_BODY_BYTES // 1024 // 1024} MiB)"
    return None


def _content_problem(delivery: Delivery) -> str | None:
    if delivery.content_type != CONTENT_TYPE:
        return f"content type {_shown(delivery.content_type)}; allowed: {CONTENT_TYPE!r}"
    encoding = delivery.content_encoding
    if not isinstance(encoding, str) or encoding.lower() != CONTENT_ENCODING:
        return f"content encoding {_shown(encoding)}; allowed: {CONTENT_ENCODING!r}"
    if "compression" in delivery.headers:
        compression = _shown(delivery.headers["compression"])
        return f"header 'compression' is {compression}; allowed: none (uncompressed bodies only)"
    return body_size_problem(_payload(delivery.body))


def _decode(body: bytes | str) -> object:
    """The body as the worker's kombu decodes it, or why it cannot."""
    if not isinstance(body, str):
        try:
            body = bytes(body).decode(CONTENT_ENCODING)
        except UnicodeDecodeError as exc:
            return Refused(f"body is not UTF-8 ({exc.reason} at byte {exc.start}); allowed: UTF-8 JSON")
    try:
        # kombu's decoder, with its type hooks ({"__type__": ..., "__value__": ...}): what Celery runs.
        return kombu_loads(body)
    except RecursionError:
        return Refused("body is JSON nested too deep to decode; allowed: a JSON array [args, kwargs, embed]")
    except Exception as exc:  # json's ValueError, a kombu type hook's error: whatever decoding raises
        return Refused(f"body is not JSON ({type(exc).__name__}: {_shown(str(exc))}); allowed: UTF-8 JSON")


def _shape_problem(payload: object) -> str | None:
    if not isinstance(payload, list) or len(payload) != 3:
        return (
            f"body is {_shown(payload)}; allowed: a JSON array [args (array), kwargs (object), embed (object)]"
            " (Celery protocol 2)"
        )
    args, kwargs, embed = payload
    if not isinstance(args, list):
        return f"body's args are {_shown(args)}; allowed: a JSON array"
    if not isinstance(kwargs, dict):
        return f"body's kwargs are {_shown(kwargs)}; allowed: a JSON object"
    if not isinstance(embed, dict):
        return f"body's embed is {_shown(embed)}; allowed: a JSON object (callbacks, errbacks, chain, chord)"
    for name in ("callbacks", "errbacks", "chain"):
        if embed.get(name) is not None and not isinstance(embed[name], list):
            return f"body's embed {name!r} is {_shown(embed[name])}; allowed: a JSON array or null"
    if embed.get("chord") is not None and not isinstance(embed["chord"], dict):
        return f"body's embed 'chord' is {_shown(embed['chord'])}; allowed: a JSON object or null"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_limit(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9)


def _is_timelimit(value: object) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(_is_limit(v) for v in value)


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        when = maybe_iso8601(value)
        if when is not None:
            when.timestamp()  # Celery converts it later; an out-of-range one must fail here
    except Exception:  # dateutil's parser and datetime raise several kinds; any means "not a time"
        return False
    return True


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_OPTIONAL_HEADERS: Final[dict[str, tuple[Any, str]]] = {
    # Read by Celery in the worker's main process (celery/worker/request.py, strategy.py).
    "shadow": (_is_str, "a string"),
    "root_id": (_is_str, "a string"),
    "parent_id": (_is_str, "a string"),
    "group": (_is_str, "a string"),
    "group_index": (_is_count, "an integer >= 0"),
    "retries": (_is_count, "an integer >= 0"),
    "timelimit": (_is_timelimit, "[hard, soft] seconds (numbers >= 0 or null)"),
    "eta": (_is_time, "an ISO 8601 time"),
    "expires": (_is_time, "an ISO 8601 time"),
    "ignore_result": (lambda v: isinstance(v, bool), "true or false"),
    "replaced_task_nesting": (_is_count, "an integer >= 0"),
    "stamped_headers": (_is_str_list, "an array of strings"),
    "stamps": (lambda v: isinstance(v, Mapping), "a table"),
}
"""Celery protocol-2 headers besides task and id: a check and what is allowed, in words."""
