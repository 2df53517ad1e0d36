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

Semantics (default, check-then-mark): the key is checked before the body runs and
marked done *after* it returns. Claiming before running would lose the work when the
worker dies mid-task; marking after means a crash between the body's side effect and the
mark still repeats the effect. So the body's effect should itself be idempotent or
written in the same transaction as the mark (e.g. a row with a unique key in the same
database) - this helper narrows the window, it cannot close it on its own.

Two messages with the same task id *can* run at the same time: a publisher that lost a
confirm republishes the id as a second message, a retried scheduler Job republishes its
ids, and two workers may take the two copies at once. Check-then-mark then runs the body
twice. For effects that must not overlap, pass ``claim=True``: the first delivery claims
the key (atomically, with a lease) before running; a copy that finds the key claimed and
not done is *retried later* (``Task.retry`` after the lease, same task id), never dropped,
so a claimer that died mid-task is taken over once its lease expires. The lease must
outlast the task's hard time limit (the default does).

The store is pluggable (``DoneStore``). ``FileDoneStore`` works on one machine
or a shared volume (the local drills); production needs a store every worker
shares, e.g. a table with a unique constraint or Redis ``SET NX PX`` for claims.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn, ParamSpec, Protocol, TypeVar, runtime_checkable

from celery import current_task

from contract import timing

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


@runtime_checkable
class ClaimStore(DoneStore, Protocol):
    """A :class:`DoneStore` that can also claim a key for one runner at a time."""

    def claim(self, key: str, lease_s: float) -> bool:
        """Take ``key`` for ``lease_s`` seconds; False while another runner's lease holds it."""
        ...

    def release(self, key: str) -> None:
        """Give ``key`` up (the body failed, or it is done)."""
        ...


class FileDoneStore:
    """One empty marker file per key in ``directory`` (created atomically with O_EXCL);
    a claim is a second file whose mtime is the start of its lease."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str, suffix: str = "") -> Path:
        # Hashed: keys are arbitrary strings, file names are not.
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + suffix)

    def is_done(self, key: str) -> bool:
        return self._path(key).exists()

    def mark_done(self, key: str) -> None:
        self._create(self._path(key))

    def claim(self, key: str, lease_s: float) -> bool:
        path = self._path(key, ".claim")
        if self._create(path):
            return True
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime > lease_s:
                # The claimer died or overran: take over. Renaming the stale claim away is
                # atomic, so of two runners taking over at once only one renames it; a third
                # that read the old mtime just before could still rename the winner's fresh
                # claim: good enough for one machine's drills, a shared store needs SET NX PX.
                stale = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}")
                path.rename(stale)
                stale.unlink()
                return self._create(path)
        return False

    def release(self, key: str) -> None:
        self._path(key, ".claim").unlink(missing_ok=True)

    def _create(self, path: Path) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_EXCL: exactly one creator wins; a second create of the same file is a no-op.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return False
        return True


class MemoryDoneStore:
    """In-process store for tests and single-process use; not shared between workers."""

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._claims: dict[str, float] = {}

    def is_done(self, key: str) -> bool:
        return key in self._done

    def mark_done(self, key: str) -> None:
        self._done.add(key)

    def claim(self, key: str, lease_s: float) -> bool:
        now = time.monotonic()
        if now - self._claims.get(key, -math.inf) <= lease_s:
            return False
        self._claims[key] = now
        return True

    def release(self, key: str) -> None:
        self._claims.pop(key, None)


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


DEFAULT_LEASE_S: Final = timing.TASK_TIME_LIMIT_S + timing.SHUTDOWN_MARGIN_S
"""A claim outlasts the longest run the hard time limit allows."""


class Claimed(Exception):
    """Another delivery of the same key is running it (raised to the caller outside a worker)."""


def idempotent(
    store: Callable[[], DoneStore],
    key: KeyFunc = task_id_key,
    *,
    claim: bool = False,
    lease_s: float = DEFAULT_LEASE_S,
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate a task body so a key already done returns ``None`` without running it.

    ``store`` is a factory called at execution time (in the worker, after its
    configuration is read), not at import. ``claim=True`` (the store must be a
    :class:`ClaimStore`) runs the body in one delivery at a time (see the module doc).
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
            if not claim:
                result = fn(*args, **kwargs)
                done.mark_done(done_key)
                return result
            if not isinstance(done, ClaimStore):
                raise TypeError(f"claim=True needs a store with claim/release, got {type(done).__name__}")
            if not done.claim(done_key, lease_s):
                _retry_later(done_key, lease_s)
            if done.is_done(done_key):
                # Another copy finished between our check and our claim.
                done.release(done_key)
                logger.info("idempotent: %s already done, skipping duplicate execution", done_key)
                return None
            try:
                result = fn(*args, **kwargs)
                done.mark_done(done_key)
            finally:
                done.release(done_key)
            return result

        return wrapper

    return decorate


def _retry_later(done_key: str, lease_s: float) -> NoReturn:
    logger.info("idempotent: %s is being run by another delivery; retrying after its lease", done_key)
    if current_task and current_task.request.id:
        # Same task id, a new confirmed message; this delivery is acked. Unbounded retries:
        # the claim ends with the other run (done) or with its lease (taken over).
        # max_retries=None would mean the task's default (3), then a failure: dead-lettered.
        raise current_task.retry(countdown=lease_s, max_retries=sys.maxsize)
    raise Claimed(done_key)
