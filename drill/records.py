"""Execution records for drills: one line per task execution, counted afterwards.

Writing side (``app.tasks.record`` in a worker's pool process): each process
appends JSON lines to its own file ``<DRILL_RESULTS_DIR>/<host>-<pid>.jsonl``,
opened with ``O_APPEND`` and written with a single ``write()`` per line.
``O_APPEND`` makes the kernel place every write at the current end of file
atomically, and a line is far below the page size, so a line is either fully
there or not at all, even if the process is SIGKILLed right after; one file per
process means no two writers ever share a file anyway. No fsync: the drills
kill processes and broker nodes, never the machine, and the page cache
survives a process's death.

Reading side (the drill harness, after the run): ``tally()`` counts lines per
task id: ``distinct`` ids are completed tasks, every line beyond the first per
id is a duplicate execution (expected, in small numbers, after a failover:
delivery is at-least-once). A task with an ETA (``countdown=``/``eta=``) also
records its ETA as Celery gave it and when its body started: ``early`` counts the
tasks that started before their ETA (the pods and the host share one clock).

A line is recorded when the task body *finished*, before Celery acks the
message; a crash between the two is exactly what makes a duplicate.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

RECORD_SUFFIX: Final = ".jsonl"
ETA_RESOLUTION_S: Final = 1e-6
"""The resolution of an ETA: Celery writes it in ISO 8601 with microseconds. A start earlier
than the ETA by more than this is early; nothing else is tolerated."""


def eta_epoch(eta: str) -> float:
    """Epoch seconds of Celery's ISO 8601 ETA (``request.eta``); naive means UTC (``enable_utc``)."""
    parsed = datetime.fromisoformat(eta)
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Record:
    """One execution of one task."""

    task_id: str
    key: int
    """The task's argument ``n`` (the publisher's sequence number)."""
    redelivered: bool
    """The broker flagged the delivery as a redelivery (it was handed out before)."""
    host: str
    pid: int
    finished_at: float
    """Epoch seconds when the task body finished."""
    started_at: float | None = None
    """Epoch seconds when the task body started (None in records written before it was kept)."""
    eta: str | None = None
    """The task's ETA as Celery gave it (``request.eta``, ISO 8601), None for a task due at once."""

    @property
    def early_by(self) -> float | None:
        """Seconds the body started before its ETA (negative: after it); None without an ETA or start."""
        if self.eta is None or self.started_at is None:
            return None
        return eta_epoch(self.eta) - self.started_at

    @property
    def early(self) -> bool:
        """The body started before the task's ETA (by more than the ETA's resolution)."""
        early_by = self.early_by
        return early_by is not None and early_by > ETA_RESOLUTION_S


def append(directory: Path, record: Record) -> None:
    """Append ``record`` as one line to this process's file in ``directory``."""
    line = (
        json.dumps(
            {
                "task_id": record.task_id,
                "key": record.key,
                "redelivered": record.redelivered,
                "host": record.host,
                "pid": record.pid,
                "finished_at": record.finished_at,
                "started_at": record.started_at,
                "eta": record.eta,
            },
            separators=(",", ":"),
        )
        + "\n"
    ).encode()
    path = directory / f"{record.host}-{record.pid}{RECORD_SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        # Only possible on a full disk; a torn line is skipped by tally() and counted as malformed.
        raise OSError(f"short write to {path}: {written} of {len(line)} bytes")


def make_record(
    task_id: str, key: int, *, redelivered: bool, started_at: float | None = None, eta: str | None = None
) -> Record:
    """A ``Record`` for this process, finished now (``started_at``, ``eta``: see :class:`Record`)."""
    return Record(
        task_id=task_id,
        key=key,
        redelivered=redelivered,
        host=socket.gethostname(),
        pid=os.getpid(),
        finished_at=time.time(),
        started_at=started_at,
        eta=eta,
    )


@dataclass(frozen=True)
class Tally:
    """What the records in a directory add up to."""

    executions: int
    """Lines read: every execution, duplicates included."""
    per_task: Counter[str]
    """Executions per task id."""
    keys: frozenset[int]
    """Distinct ``key`` values seen."""
    malformed: int
    """Lines that were not valid records (should be 0)."""
    early_tasks: frozenset[str] = frozenset()
    """Ids of the tasks with an execution that started before the task's ETA (should be none)."""

    @property
    def early(self) -> int:
        """Tasks that started (at least once) before their ETA."""
        return len(self.early_tasks)

    @property
    def distinct(self) -> int:
        """Tasks completed at least once."""
        return len(self.per_task)

    @property
    def duplicates(self) -> int:
        """Executions beyond the first per task id."""
        return self.executions - self.distinct

    def missing(self, expected_keys: range) -> frozenset[int]:
        """Keys of ``expected_keys`` that never completed: lost (or not yet done) tasks."""
        return frozenset(expected_keys) - self.keys


def read(directory: Path) -> tuple[list[Record], int]:
    """All records in ``directory`` and the number of malformed lines."""
    records: list[Record] = []
    malformed = 0
    for path in sorted(directory.glob(f"*{RECORD_SUFFIX}")):
        for line in path.read_bytes().splitlines():
            try:
                raw = json.loads(line)
                record = Record(
                    task_id=str(raw["task_id"]),
                    key=int(raw["key"]),
                    redelivered=bool(raw["redelivered"]),
                    host=str(raw["host"]),
                    pid=int(raw["pid"]),
                    finished_at=float(raw["finished_at"]),
                    started_at=None if raw.get("started_at") is None else float(raw["started_at"]),
                    eta=None if raw.get("eta") is None else str(raw["eta"]),
                )
                if record.eta is not None:
                    eta_epoch(record.eta)  # an ETA that does not parse makes the line malformed
                records.append(record)
            except (ValueError, KeyError, TypeError):
                malformed += 1
    return records, malformed


def tally(directory: Path) -> Tally:
    """Count executions, distinct tasks and duplicates recorded in ``directory``."""
    records, malformed = read(directory)
    return Tally(
        executions=len(records),
        per_task=Counter(r.task_id for r in records),
        keys=frozenset(r.key for r in records),
        malformed=malformed,
        early_tasks=frozenset(r.task_id for r in records if r.early),
    )
