"""What a publisher is asked to publish and what it achieved: the types every publisher shares.

Apart from the publishers themselves (``app.publish``, ``app.scheduler``), so that neither
imports the other for its types and callers (the drills, the benchmarks) import them from here.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload

from celery import Celery

TaskArguments = tuple[tuple[Any, ...], dict[str, Any]]
"""Positional and keyword arguments of one task."""


def no_arguments(_index: int) -> TaskArguments:
    """The arguments of a task that takes none (``count``, ``noop``)."""
    return (), {}


ProgressCallback = Callable[[int], None]
"""Called with the number of publishes confirmed so far."""


TASK_ID_NAMESPACE: Final = uuid.UUID("6d1f7a3e-56a4-4c1b-9d53-3f0e1c5b7a20")
"""Namespace of the name-based (UUID 5) task ids: fixed, so a rerun derives the same ids."""


@dataclass(frozen=True)
class PublishPlan:
    """What to publish: ``count`` messages of ``task_name``."""

    task_name: str
    count: int
    arguments: Callable[[int], TaskArguments] = no_arguments
    """The arguments of the ``index``-th task (every task is routed like the first)."""
    queue: str | None = None
    """Send every task to this queue (a lane's, ``contract.lanes``), as ``apply_async(queue=...)``
    would; None: where the app's routes send ``task_name``."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names this scheduling run. A rerun with the same run id (a retried Job: its UID) derives
    the same task ids, so a task published by both runs is one task to an idempotent body;
    by default every plan is a new run."""

    def task_id(self, index: int) -> str:
        """The ``index``-th task's id: the same for the same run id, task and index."""
        return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{self.run_id}/{self.task_name}/{index}"))


class ConfirmedIds(Sequence[str]):
    """The ids of a plan's confirmed publishes, in plan order, derived instead of stored.

    Every index below ``upto`` except ``unconfirmed``: a publisher publishes its plan in
    index order, so what it confirmed is a prefix minus what is still in flight or waiting
    for a retry. Task ids are a function of the plan and the index (:meth:`PublishPlan.task_id`),
    so the result of a million-task run holds a window's worth of indexes, not a million ids.
    """

    def __init__(self, plan: PublishPlan, upto: int, unconfirmed: Collection[int] = ()) -> None:
        skipped = sorted(set(unconfirmed))
        if skipped and (skipped[0] < 0 or skipped[-1] >= upto):
            raise ValueError(f"unconfirmed indexes must lie in 0..{upto - 1}, got {skipped[0]}..{skipped[-1]}")
        self._plan = plan
        self._upto = upto
        self._skipped = skipped

    def __len__(self) -> int:
        return self._upto - len(self._skipped)

    @overload
    def __getitem__(self, position: int) -> str: ...

    @overload
    def __getitem__(self, position: slice) -> Sequence[str]: ...

    def __getitem__(self, position: int | slice) -> str | Sequence[str]:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"confirmed publish {position} of {len(self)}")
        # The plan index of the position-th confirmed one: skip every unconfirmed index at or below it.
        index = position
        while (below := bisect.bisect_right(self._skipped, index)) != index - position:
            index = position + below
        return self._plan.task_id(index)

    def __iter__(self) -> Iterator[str]:
        skipped = set(self._skipped)
        return (self._plan.task_id(i) for i in range(self._upto) if i not in skipped)


@dataclass(frozen=True)
class RefusedTask:
    """A task of the plan the publisher did not send: its message passes a limit the worker
    would refuse it for (``app.outgoing.MessageRefused``)."""

    index: int
    task_id: str
    reason: str


MAX_REFUSED: Final = 100
"""Refused tasks a run goes on after: beyond them the plan itself is wrong, and the run stops
(the result keeps every refused id: O(this), not O(tasks))."""


@dataclass(frozen=True)
class PublishResult:
    """What a publisher achieved."""

    requested: int
    task_ids: Sequence[str] = field(repr=False)
    """Ids of the confirmed publishes, in plan order (all of them: the index is the ``record`` key);
    the publishers return a :class:`ConfirmedIds`, which derives them from the plan."""
    seconds: float
    error: str | None = None
    """Why publishing stopped early; ``None`` if every publish was confirmed."""
    republished: int = 0
    """Publishes sent again after a failover or a nack (each may execute twice)."""
    failovers: int = 0
    """Connections abandoned for the next broker URL."""
    refused: tuple[RefusedTask, ...] = ()
    """Tasks not sent because the worker would refuse them (each once); the rest of the plan was published."""

    @property
    def confirmed(self) -> int:
        """Publishes the broker confirmed."""
        return len(self.task_ids)

    @property
    def ok(self) -> bool:
        """Every requested publish was confirmed (none refused)."""
        return self.error is None and self.confirmed == self.requested

    def refusals(self) -> str:
        """The refused tasks in one line each (empty if none)."""
        return "".join(f"refused task {r.task_id} (plan index {r.index}): {r.reason}\n" for r in self.refused)

    @property
    def rate(self) -> float:
        """Confirmed publishes per second."""
        return self.confirmed / self.seconds if self.seconds > 0 else 0.0


Publisher = Callable[[Celery, PublishPlan, ProgressCallback], PublishResult]
