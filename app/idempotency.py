"""Idempotent task bodies: skip work that was already done.

Why tasks need this: delivery is *at least once*. With ``task_acks_late`` a
message is acked after the task ran; if the worker, its connection or the
broker node dies in between, the broker redelivers and the task runs again.
A publisher that lost a confirm republishes too. Both duplicates carry the
same task id, so the task id is the default idempotency key. A caller that
may itself re-send a task (new id, same intent) should pass an explicit key
(``kwarg_key``).

Usage::

    @shared_task(name="app.tasks.charge")
    @idempotent(store=lambda: FileDoneStore(Path("/shared/done")))
    def charge(order_id: int) -> None: ...

Semantics: the key is checked before the body runs and marked done *after* it
returns. Claiming before running would lose the work when the worker dies
mid-task; marking after means a crash between the body's side effect and the
mark still repeats the effect. So the body's effect should itself be
idempotent or written in the same transaction as the mark (e.g. a row with a
unique key in the same database) - this helper narrows the window, it cannot
close it on its own. Two concurrent deliveries of the same message do not
happen (the broker hands a message to one consumer at a time).

The store is pluggable (``DoneStore``). ``FileDoneStore`` works on one machine
or a shared volume (the local drills); production needs a store every worker
shares, e.g. a table with a unique constraint or Redis ``SET NX``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from celery import current_task

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

KeyFunc = Callable[[str | None, tuple[Any, ...], dict[str, Any]], str | None]
"""Maps (task id or None outside a worker, args, kwargs) to a key; ``None`` disables the check."""


class DoneStore(Protocol):
    """Remembers which idempotency keys have completed."""

    def is_done(self, key: str) -> bool:
        """Whether ``key`` was marked done."""
        ...

    def mark_done(self, key: str) -> None:
        """Record that ``key`` completed; marking twice is harmless."""
        ...


class FileDoneStore:
    """One empty marker file per key in ``directory`` (created atomically with O_EXCL)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        # Hashed: keys are arbitrary strings, file names are not.
        return self.directory / hashlib.sha256(key.encode()).hexdigest()

    def is_done(self, key: str) -> bool:
        return self._path(key).exists()

    def mark_done(self, key: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_EXCL: exactly one creator wins; a second mark of the same key is a no-op.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self._path(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


class MemoryDoneStore:
    """In-process store for tests and single-process use; not shared between workers."""

    def __init__(self) -> None:
        self._done: set[str] = set()

    def is_done(self, key: str) -> bool:
        return key in self._done

    def mark_done(self, key: str) -> None:
        self._done.add(key)


def task_id_key(task_id: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Default key: the task id, which redeliveries and publisher retries keep."""
    del args, kwargs
    return task_id


def kwarg_key(name: str) -> KeyFunc:
    """Key taken from the keyword argument ``name`` (an explicit idempotency key)."""

    def key(task_id: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        del task_id, args
        value = kwargs.get(name)
        return None if value is None else str(value)

    return key


def idempotent(
    store: Callable[[], DoneStore],
    key: KeyFunc = task_id_key,
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate a task body so a key already done returns ``None`` without running it.

    ``store`` is a factory called at execution time (in the worker, after its
    configuration is read), not at import.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            task_id = current_task.request.id if current_task else None
            done_key = key(task_id, tuple(args), dict(kwargs))
            if done_key is None:
                return fn(*args, **kwargs)
            done = store()
            if done.is_done(done_key):
                logger.info("idempotent: %s already done, skipping duplicate execution", done_key)
                return None
            result = fn(*args, **kwargs)
            done.mark_done(done_key)
            return result

        return wrapper

    return decorate
