"""Worker lanes: one quorum queue per latency class, each with its own workers and timing.

Production Celery runs a queue per kind of task: a flood of millisecond tasks wants several
messages in flight per process, a task of minutes wants none waiting behind it, a hard limit
that catches a stuck short task would kill every long one, and a rollout must wait for the
longest task of the pods it replaces. So each lane is a queue (``celery`` for the default
lane, ``celery.<name>`` for the others), a worker Deployment that consumes only it, and the
timing below, validated together before anything is created (:func:`problems`).

The inequalities each lane must keep (the single-queue contract of ``contract.timing``, per lane):

    soft_time_limit_s < time_limit_s
    termination_grace_s = time_limit_s + timing.SHUTDOWN_MARGIN_S   (derived, never set)
    worst_unacked_s(prefetch, time_limit_s) + CONSUMER_TIMEOUT_SLACK_S <= consumer_timeout_s

The queue's ``consumer_timeout_s`` is RabbitMQ 4.3's per-queue consumer timeout, set by the
lane's policy (``broker.render``), so a long lane needs no longer timeout for every queue.

Standard library only (the broker renderer, the components and the worker import it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from contract import timing
from contract.wire import DELIVERY_LIMIT, QUEUE_NAME

DEFAULT_LANE: Final = "default"
"""The lane of every task no route sends elsewhere; its queue is ``celery`` (wire.QUEUE_NAME), so a
stack that had one queue keeps it, its messages and its Deployment when lanes arrive."""
LONG_LANE: Final = "long"
"""The second lane a new stack gets: tasks of minutes to an hour."""

LANE_NAME_RE: Final = re.compile(r"^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$")
"""A lane name: 1-20 lower-case letters, digits and '-', a letter first, not '-' last. It becomes
the Deployment's name ``celery-worker-<name>`` (with the KEDA Secret's suffix within 63) and the
queue's ``celery.<name>``."""
RESERVED_LANE_NAMES: Final = frozenset({"dlq", "dlx"})
"""``celery.dlq`` and ``celery.dlx`` are the dead-letter queue and exchange."""
MAX_LANES: Final = 8
"""Each lane is a Deployment, a PDB, an autoscaler and a policy: more would be a different design."""

MAX_TIME_LIMIT_S: Final = 24 * 3600
"""Longest hard time limit of a lane (24 h). The rollout of a lane waits up to this per pod (the
termination grace derives from it); GKE honours a pod's grace for at most 1 h when it drains a
node for an upgrade or repair, so tasks longer than that are cut there and run again."""
CONSUMER_TIMEOUT_SLACK_S: Final = 60
"""Room above the longest a delivery can stay unacked, for ack latency and a slow pool start."""
MIN_CONSUMER_TIMEOUT_S: Final = 60
"""RabbitMQ's own floor for a sensible consumer timeout (broker.config refuses less)."""

TASK_ROUTES_MAX: Final = 64
"""Most task-name patterns routed to lanes (each is tried on every publish)."""
TASK_PATTERN_RE: Final = re.compile(r"^[A-Za-z0-9_.*-]{1,200}$")
"""A task-name pattern: a task name, or one with ``*`` wildcards (``reports.*``). Only ``*``:
Celery's router treats a key as a glob only when it holds one (``celery.app.routes.MapRoute``), so
``?`` or ``[...]`` alone would silently match nothing but that literal name."""

LANE_REPLICAS: Final = 2
"""Worker pods of a lane other than the default one unless its settings say otherwise: two, so one
machine's loss does not stop the lane (prod refuses fewer)."""
LONG_TIME_LIMIT_S: Final = 3600
"""The hard limit of every lane but the default one unless its settings say otherwise: an hour."""


def queue_name(lane: str) -> str:
    """The lane's quorum queue (and topic exchange): ``celery`` for the default lane."""
    return QUEUE_NAME if lane == DEFAULT_LANE else f"{QUEUE_NAME}.{lane}"


def deployment_name(lane: str) -> str:
    """The lane's worker Deployment: ``celery-worker`` for the default lane (the name it always had)."""
    return "celery-worker" if lane == DEFAULT_LANE else f"celery-worker-{lane}"


def soft_limit_for(time_limit_s: int) -> int:
    """The soft limit a lane gets with only its hard limit set: a sixth earlier, between 1 s and a
    minute before it (the default lane's 50 of 60 s, the long lane's 3,540 of 3,600 s)."""
    return time_limit_s - min(60, max(1, time_limit_s // 6))


def min_consumer_timeout_s(prefetch_multiplier: int, time_limit_s: int) -> int:
    """Shortest consumer timeout a lane can live with: its longest unacked delivery, plus slack."""
    return int(timing.worst_unacked_s(prefetch_multiplier, time_limit_s)) + CONSUMER_TIMEOUT_SLACK_S


@dataclass(frozen=True)
class LaneTiming:
    """How long a lane's tasks may run and its deliveries stay unacked (all seconds)."""

    prefetch_multiplier: int
    soft_time_limit_s: int
    time_limit_s: int
    consumer_timeout_s: int

    @property
    def termination_grace_s(self) -> int:
        """The worker pods' ``terminationGracePeriodSeconds``: a warm shutdown lets the longest task
        run to its hard limit, then requeues the rest and disconnects (contract.timing)."""
        return self.time_limit_s + timing.SHUTDOWN_MARGIN_S

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is allowed) for every rule this timing breaks; empty when it keeps them all."""
        found: list[tuple[str, str]] = []
        if not 1 <= self.prefetch_multiplier <= timing.MAX_PREFETCH_MULTIPLIER:
            found.append(("prefetch", f"1..{timing.MAX_PREFETCH_MULTIPLIER}"))
        if not 1 <= self.time_limit_s <= MAX_TIME_LIMIT_S:
            found.append(("timeLimitS", f"1..{MAX_TIME_LIMIT_S} (24 h)"))
        if not 1 <= self.soft_time_limit_s < self.time_limit_s:
            found.append(
                (
                    "softTimeLimitS",
                    f"1..{self.time_limit_s - 1}: below timeLimitS ({self.time_limit_s}), so the task is told"
                    " before its process is killed",
                )
            )
        if found:
            return found
        floor = max(min_consumer_timeout_s(self.prefetch_multiplier, self.time_limit_s), MIN_CONSUMER_TIMEOUT_S)
        if self.consumer_timeout_s < floor:
            found.append(
                (
                    "consumerTimeoutS",
                    f">= {floor}: with prefetch {self.prefetch_multiplier} a delivery may wait"
                    f" {self.prefetch_multiplier} task(s) of up to {self.time_limit_s} s and run one more,"
                    f" plus {CONSUMER_TIMEOUT_SLACK_S} s; a shorter timeout cancels the consumer mid-task"
                    " and runs its tasks twice",
                )
            )
        return found


@dataclass(frozen=True)
class Lane:
    """One worker lane (stack setting ``workerLanes``): its Deployment's size and its timing."""

    name: str
    replicas: int
    """Worker pods (the minimum when autoscaling)."""
    concurrency: int
    """Pool processes per pod."""
    cpu_millis: int
    """CPU request per pod, millicores (no CPU limit: throttling a worker only slows its queue)."""
    memory_mib: int
    """Memory request = limit per pod, MiB."""
    max_replicas: int
    """Upper bound of pods when autoscaling."""
    timing: LaneTiming
    tasks: tuple[str, ...] = ()
    """Task names or *-globs routed to this lane (the default lane takes every other task)."""
    delivery_limit: int = DELIVERY_LIMIT
    """Failed deliveries of a task before it is dead-lettered: the lane policy's ``delivery-limit``,
    and what the lane's workers compare a delivery's count with (contract.wire.DELIVERY_LIMIT)."""

    @property
    def queue(self) -> str:
        return queue_name(self.name)

    @property
    def deployment(self) -> str:
        return deployment_name(self.name)

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_LANE


def default_timing(lane: str, prefetch_multiplier: int = 1) -> LaneTiming:
    """A lane's timing when its settings give none: today's short-task contract for the default
    lane (and RabbitMQ's 30-minute timeout), an hour's limit for any other."""
    if lane == DEFAULT_LANE:
        return LaneTiming(
            prefetch_multiplier,
            timing.TASK_SOFT_TIME_LIMIT_S,
            timing.TASK_TIME_LIMIT_S,
            timing.CONSUMER_TIMEOUT_MS // 1000,
        )
    return LaneTiming(
        prefetch_multiplier,
        soft_limit_for(LONG_TIME_LIMIT_S),
        LONG_TIME_LIMIT_S,
        min_consumer_timeout_s(prefetch_multiplier, LONG_TIME_LIMIT_S),
    )


def route_problems(routes: Sequence[tuple[str, str]], lanes: Sequence[str]) -> list[tuple[int, str]]:
    """(index into ``routes``, what is allowed) for each bad ``(pattern, lane)`` route: a bad
    pattern, an unknown lane, a route to the default lane (which takes whatever no route names),
    a pattern given twice, one too many."""
    found: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for index, (pattern, lane) in enumerate(routes):
        if index >= TASK_ROUTES_MAX:
            found.append((index, f"at most {TASK_ROUTES_MAX} task patterns over all lanes"))
        elif not TASK_PATTERN_RE.fullmatch(pattern):
            found.append((index, "a task name or *-glob: letters, digits, . _ - and *, 1-200 characters"))
        elif lane not in lanes:
            found.append((index, f"a route to one of the lanes {list(lanes)}"))
        elif lane == DEFAULT_LANE:
            found.append((index, f"no routes on {DEFAULT_LANE!r}: it takes every task no other lane names"))
        elif pattern in seen:
            found.append((index, f"each pattern in one lane: it is {seen[pattern]!r}'s already"))
        seen.setdefault(pattern, lane)
    return found


def lane_name_problem(name: str) -> str | None:
    """What is wrong with a lane's name, or None."""
    if not LANE_NAME_RE.fullmatch(name):
        return "1-20 lower-case letters, digits and '-', starting with a letter and not ending with '-'"
    if name in RESERVED_LANE_NAMES:
        return f"not {' or '.join(sorted(RESERVED_LANE_NAMES))}: celery.{name} is the dead-letter topology"
    return None


def lane_queues(lanes: Sequence[str]) -> tuple[str, ...]:
    """Every lane's queue, the default lane's first; never the dead-letter queue."""
    return tuple(queue_name(lane) for lane in sorted(lanes, key=lambda lane: lane != DEFAULT_LANE))
