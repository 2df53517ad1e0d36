"""File-based worker health: the liveness/readiness check and the file helpers.

The worker side (``app.bootsteps.HealthStep``) touches a heartbeat file every
``timing.HEALTH_HEARTBEAT_INTERVAL_S`` from the worker's own event loop while
its consumer is connected, and keeps a "ready" file while it consumes, which
names the worker process that wrote it (its pid and start time): the files sit
on the pod's ``/tmp`` emptyDir, which outlives a container, and a restarted
container must not be Ready on its predecessor's file. This module checks them::

    python -m app.health --max-age 90     # liveness: heartbeat fresh?
    python -m app.health --ready          # readiness: consuming and fresh?

Exit status 0 means healthy, 1 unhealthy (with the reason on stderr).

Why files and not ``celery inspect ping``: a ping starts a Celery client,
connects to the broker and waits for a broadcast reply, which costs seconds
of CPU per probe per pod and fails whenever the *broker* is slow, restarting
healthy workers. Checking an mtime costs one ``stat``. This module imports no
Celery, so the probe starts in tens of milliseconds.

What liveness means: the worker is either consuming with a live event loop (heartbeat
younger than ``--max-age``), or it lost its broker (or never reached one) and is
reconnecting, for up to ``timing.OUTAGE_BUDGET_S`` (the *disconnected* marker beside
the heartbeat file, written at start and at every connection loss, removed once
consuming). So a broker outage of minutes - a whole-cluster restart - does not
restart every worker into CrashLoopBackOff, while a wedged loop (connected, no timer
ticks) and a reconnect loop that never succeeds are still restarted. Readiness is
"consuming" in every case. It does not catch a stuck pool process; the task time
limits do.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contract import timing
from contract.wire import DEFAULT_HEARTBEAT_FILE, DEFAULT_READY_FILE, ENV_HEARTBEAT_FILE, ENV_READY_FILE


def touch(path: Path) -> None:
    """Create ``path`` if needed and set its mtime to now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)


def remove(path: Path) -> None:
    """Delete ``path`` if it exists."""
    path.unlink(missing_ok=True)


PROC = Path("/proc")


def started_at(pid: int, proc: Path = PROC) -> int | None:
    """Process ``pid``'s start time (clock ticks after boot, ``/proc/<pid>/stat`` field 22), None if gone.

    With its pid it names one process for good: a pid reused later starts later.
    """
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count from after it.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def claim(path: Path, proc: Path = PROC) -> None:
    """Write ``path`` as this process's own (its pid and start time) and set its mtime to now.

    The ready file is claimed: the pod's ``/tmp`` outlives a container, and a file a previous
    container left must not vouch for a new one (see :func:`owner_alive`).
    """
    pid = os.getpid()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{pid}")
    partial.write_text(f"{pid} {started_at(pid, proc)}\n")
    partial.replace(path)


def owner_alive(path: Path, proc: Path = PROC) -> bool:
    """Whether the process that claimed ``path`` (:func:`claim`) still runs: the same pid, started at
    the same time. The readiness probe runs in the worker's container, so it sees that container's
    processes only; a previous container's worker is gone (or its pid now names a later process)."""
    try:
        pid_text, _, start_text = path.read_text().strip().partition(" ")
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        return False
    return started_at(pid, proc) == start


def disconnected_marker(heartbeat_file: Path) -> Path:
    """The file that exists while the worker is not consuming (since its mtime)."""
    return heartbeat_file.with_name(heartbeat_file.name + ".disconnected")


@dataclass(frozen=True)
class Verdict:
    """Result of a health check."""

    healthy: bool
    reason: str


def check(
    heartbeat_file: Path,
    ready_file: Path,
    *,
    max_age_s: float,
    require_ready: bool,
    outage_budget_s: float = timing.OUTAGE_BUDGET_S,
    now: float | None = None,
    proc: Path = PROC,
) -> Verdict:
    """Judge the worker from its files; ``now`` (epoch seconds) and ``proc`` are injectable for tests."""
    current = time.time() if now is None else now
    if require_ready and not ready_file.exists():
        return Verdict(False, f"no ready file {ready_file}: the worker is not consuming")
    if require_ready and not owner_alive(ready_file, proc):
        return Verdict(False, f"ready file {ready_file} is not this container's worker's: not consuming yet")
    try:
        disconnected: float | None = current - disconnected_marker(heartbeat_file).stat().st_mtime
    except FileNotFoundError:
        disconnected = None
    if not require_ready and disconnected is not None:
        verdict = f"not consuming for {disconnected:.0f}s (max {outage_budget_s:g}s)"
        if disconnected > outage_budget_s:
            return Verdict(False, f"{verdict}: reconnecting in vain")
        return Verdict(True, f"{verdict}, reconnecting")
    try:
        mtime = heartbeat_file.stat().st_mtime
    except FileNotFoundError:
        return Verdict(False, f"no heartbeat file {heartbeat_file}: the worker has not connected yet")
    age = current - mtime
    if age > max_age_s:
        return Verdict(False, f"heartbeat {heartbeat_file} is {age:.0f}s old (max {max_age_s:g}s)")
    return Verdict(True, f"heartbeat {age:.1f}s old")


def max_age(text: str) -> float:
    """--max-age: finite seconds > 0. nan compares false with every age and inf is never exceeded,
    so either would call an hour-old heartbeat fresh; 0 or less calls every heartbeat stale."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"finite seconds > 0 (e.g. 90), got {text[:40]!r}")
    return value


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m app.health", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-age",
        type=max_age,
        default=float(timing.LIVENESS_MAX_AGE_S),
        help="seconds after which the heartbeat counts as stale (default %(default)s)",
    )
    parser.add_argument("--ready", action="store_true", help="also require the ready file (readiness probe)")
    parser.add_argument(
        "--heartbeat-file", type=Path, default=Path(env.get(ENV_HEARTBEAT_FILE) or DEFAULT_HEARTBEAT_FILE)
    )
    parser.add_argument("--ready-file", type=Path, default=Path(env.get(ENV_READY_FILE) or DEFAULT_READY_FILE))
    args = parser.parse_args(argv)
    verdict = check(args.heartbeat_file, args.ready_file, max_age_s=args.max_age, require_ready=args.ready)
    print(
        ("ok: " if verdict.healthy else "unhealthy: ") + verdict.reason,
        file=sys.stdout if verdict.healthy else sys.stderr,
    )
    return 0 if verdict.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
