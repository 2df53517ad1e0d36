"""The one poll-until-deadline helper of the harness, the drills, the benchmarks and the tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

NOT_YET: tuple[type[BaseException], ...] = (subprocess.SubprocessError, OSError, ValueError)
"""Errors that mean "not yet" while polling a node that may be mid-restart."""


class PollTimeout(TimeoutError):
    """``poll`` ran out of time; the message says what it waited for and the last error seen."""


def poll(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.5,
    not_yet: tuple[type[BaseException], ...] = NOT_YET,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Exceptions of the ``not_yet`` types count as a falsy answer (the last one is named in the
    timeout message); ``check`` runs before each try and raises to give up early (a process
    that died will never become ready). Raises :class:`PollTimeout` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if check is not None:
            check()
        try:
            value = predicate()
            if value:
                return value
        except not_yet as exc:
            last = exc
        if time.monotonic() >= deadline:
            suffix = f"; last error: {last}" if last is not None else ""
            raise PollTimeout(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")
        time.sleep(interval)
