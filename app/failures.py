"""A task that fails for good goes into the dead-letter queue with the reason, not without a word.

The app acks late and never acks a failure away (``app.config``): a task that raised is rejected
without requeue, one whose pool process died (``task_reject_on_worker_lost``) or that hit its hard
time limit (``task_acks_on_timeout=False``) is rejected with requeue, and the broker dead-letters
the message after the delivery limit. Left to the broker, the dead-letter copy only says
``rejected`` or ``delivery_limit``; the exception and its traceback are in one worker's log.

So the worker's requests (:class:`KeepingRequest`, every task's ``Request`` through the app's
task class, :class:`KeepingTask`) put the copy there themselves when a failure is *final*: a
rejection without requeue (a raise), or a requeue the broker would answer by dead-lettering (the
delivery's ``x-delivery-count`` has reached the delivery limit, :func:`is_final`). The copy
carries the reason (:func:`failure_reason`), the queue and the delivery count, through the
consumer's own way into the dead-letter queue (``app.bootsteps.Consumer``: ``app.dlq.Refuser``,
confirmed); only once the broker confirmed it is the delivery acked. If it is not confirmed, the
request rejects as Celery would have (the broker's dead-letter policy then keeps the message, as
before). A failure that is not final is requeued as before, for the next delivery to try again.

Metrics are untouched (``app.metrics``): Celery still sends ``task_failure`` exactly where it did
(in the pool process for a raise, once per hard time limit in the main process; a lost pool
process is no ``task_failure``), and the copy is no ``task_rejected``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]  # not in billiard-stubs
from celery import Task
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.serialization import get_pickled_exception
from celery.worker.request import Request

from app.dlq import REASON_MAX_CHARS, delivery_count

MESSAGE_MAX_CHARS: Final = 400
"""The exception's type and message are cut to this; the traceback's tail gets what is left of
``app.dlq.REASON_MAX_CHARS``."""


def is_final(requeue: bool, count: int, limit: int) -> bool:
    """Whether a rejection ends the message's deliveries: one without requeue, or a requeue that
    would take the broker's count of failed deliveries (``count``, the delivery's
    ``x-delivery-count``) past ``limit``, which RabbitMQ 4.3 answers by dead-lettering it."""
    return not requeue or count + 1 > limit


def failure_reason(exc: BaseException, formatted_traceback: str | None) -> str:
    """Why a task failed, for the dead-letter copy's reason header.

    A lost pool process: ``worker lost: `` and Celery's words (``Worker exited prematurely: signal
    9 (SIGKILL) Job: 3.``). The hard time limit: ``hard time limit <N> s exceeded``. Anything else
    the task raised: the exception as Python prints its last line, then the end of the traceback,
    the whole at most ``REASON_MAX_CHARS``.
    """
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    if isinstance(exc, WorkerLostError):
        return f"worker lost: {exc}"[:REASON_MAX_CHARS]
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        # Celery treats these as a lost pool process too (requeued, not a task failure).
        return f"worker lost: the pool process exited ({type(exc).__name__}: {exc})"[:REASON_MAX_CHARS]
    if isinstance(exc, TimeLimitExceeded):
        return time_limit_reason(exc.args[0] if exc.args else None)
    # A pool process sends an exception it cannot pickle as a wrapper; this restores it if it can.
    shown = get_pickled_exception(exc) if isinstance(exc, Exception) else exc
    head = "".join(traceback.format_exception_only(type(shown), shown)).strip()[:MESSAGE_MAX_CHARS]
    tail = traceback_tail(formatted_traceback or "", REASON_MAX_CHARS - len(head) - 1)
    return f"{head}\n{tail}" if tail else head


def time_limit_reason(seconds: object) -> str:
    """``hard time limit 60 s exceeded``."""
    shown = f"{seconds:g}" if isinstance(seconds, int | float) else "?"
    return f"hard time limit {shown} s exceeded"


def traceback_tail(formatted: str, budget: int) -> str:
    """The last frames of a formatted traceback that fit in ``budget`` characters, whole frames only.

    The exception's own lines at its end are left out (the reason starts with them).
    """
    lines = formatted.rstrip().splitlines()
    # Python indents a traceback's frames; the exception's message lines at the end are not.
    while lines and not lines[-1].startswith(" "):
        lines.pop()
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = len(line) + (1 if kept else 0)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    kept.reverse()
    # From the first whole frame on: a frame's code line without its "File" line says little.
    first = next((i for i, line in enumerate(kept) if line.startswith(_FRAME)), len(kept))
    return "\n".join(kept[first:])


_FRAME: Final = "  File "
"""How Python starts a traceback's frame line."""


@dataclass(frozen=True)
class Keeper:
    """The consumer's way into the dead-letter queue, as each request gets it (``app.bootsteps.Consumer``)."""

    put: Callable[[Any, str], bool]
    """Copy the delivery (a kombu message) there with the reason; True once the broker confirmed it."""
    delivery_limit: int
    """The broker policy's delivery limit (``WORKER_DELIVERY_LIMIT``)."""


class KeepingRequest(Request):
    """Celery's request, whose final failures go into the dead-letter queue with their reason.

    Celery's ``on_failure`` (a raise, a lost pool process, the hard time limit: billiard reports
    the limit through it before ``on_timeout``) ends in ``reject``: here the reason is noted on the
    way in, and ``reject`` decides. The consumer hands each request its :class:`Keeper` before it
    runs; a request without one (failed before it was scheduled) rejects as Celery does.
    """

    keeper: Keeper | None = None
    failure: str | None = None
    """Why the task failed, once it did."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        self.failure = failure_reason(exc_info.exception, getattr(exc_info, "traceback", None))
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and self.failure is None:
            self.failure = time_limit_reason(timeout)
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        keeper, why = self.keeper, self.failure
        if self.acknowledged or keeper is None or why is None or not self._final(requeue, keeper.delivery_limit):
            super().reject(requeue)
            return
        if keeper.put(self.message, why):
            self.acknowledge()
            return
        # Not confirmed: exactly what Celery does without this class, so the broker's policy keeps it.
        super().reject(requeue)

    def _final(self, requeue: bool, limit: int) -> bool:
        headers = self.message.headers
        return is_final(requeue, delivery_count(headers if isinstance(headers, Mapping) else None), limit)


class KeepingTask(Task[Any, Any]):
    """The app's task class (``app.factory``): every task's requests are :class:`KeepingRequest`."""

    Request = "app.failures:KeepingRequest"
