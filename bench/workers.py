"""Worker benchmarks on the harness's worker processes (the seed's, on 3.10), and the pieces the
plan's pods share with them (``bench.pods``): draining, steady rates, the scheduler CLI.

Workers are the drills' ``WorkerPool`` processes (real ``celery worker``), tasks are
``drill.tasks.record`` (an append of one line per execution, so completions carry a
timestamp); ``sleep_ms=0`` is the no-op case. Throughput runs *prefill* the queue, then
start the worker, and rate the middle 80% of completions (10th to 90th percentile
timestamps): worker boot and the last stragglers do not count, only the steady state.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from app.config import from_env
from app.factory import make_app
from app.publish import publish_pipelined
from bench.ceiling import steady_rate
from contract import wire
from drill import records
from drill.profiles import SCRUBBED_ENV_PREFIXES, Profile, ProfileRuntime
from drill.tasks import ENV_RESULTS_DIR, record_plan
from harness.seed.workers import WorkerPool

STALL_TIMEOUT_S = 60.0
"""Give up on a run when no task completed for this long."""
READY_TIMEOUT_S = 90.0
SCHEDULER_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class WorkerTuning:
    """Pool processes and prefetch per worker for one task length (see BENCHMARKS.md)."""

    concurrency: int
    prefetch_multiplier: int


SEED_TUNING: Final = WorkerTuning(concurrency=os.cpu_count() or 1, prefetch_multiplier=4)
"""What the seed ran with: Celery's defaults, one pool process per CPU and prefetch 4 (the
seed's app sets neither; ``prefetch_multiplier`` is informational, the seed never reads it)."""


@dataclass(frozen=True)
class ThroughputRun:
    profile: str
    task_ms: int
    tasks: int
    concurrency: int
    prefetch_multiplier: int | None
    """``None`` for the seed: its app sets none, Celery's default (4) applies."""
    completed: int
    duplicates: int
    per_s: float
    worker_peak_rss_kb: int
    """Largest VmHWM among the worker's processes (main + pool)."""

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "per_s": round(self.per_s, 1)}


@dataclass(frozen=True)
class ScaleRun:
    tasks: int
    publish_seconds: float
    """The scheduler CLI, process start to exit (Python start-up and connect included)."""
    publish_per_s: float
    drain_seconds: float
    """Scheduler start to the last task finished."""
    scheduler_peak_rss_kb: int
    """VmHWM of the scheduler process (its own address space, interpreter included)."""
    worker_peak_rss_kb: int
    worker_total_rss_kb: int
    """Sum of the VmHWM of every worker process: an upper bound, the prefork pool shares
    pages with its parent (copy-on-write) that each process counts."""
    duplicates: int
    lost: int
    worker_memory: list[dict[str, float]] = field(default_factory=list)
    """The workers' resident memory over the run (sampled: largest process, sum)."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "publish_seconds": round(self.publish_seconds, 2),
            "publish_per_s": round(self.publish_per_s, 1),
            "drain_seconds": round(self.drain_seconds, 2),
        }


def line_count(directory: Path) -> int:
    # Cheap progress: counting newlines, not parsing JSON (which would cost the workers CPU).
    return sum(path.read_bytes().count(b"\n") for path in directory.glob(f"*{records.RECORD_SUFFIX}"))


def worker_memory_kb(results_dir: Path) -> list[int]:
    """VmHWM (peak resident set, kB) of every process whose environment names ``results_dir``.

    That marker is exactly the workers of one run (main and pool processes): WorkerPool
    passes DRILL_RESULTS_DIR to them and to nothing else.
    """
    marker = f"{ENV_RESULTS_DIR}={results_dir}".encode() + b"\0"
    peaks: list[int] = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "environ").read_bytes():
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            peaks.append(int(match[1]))
    return peaks


def wait_drained(results: Path, expected: int, logs: Callable[[], str], say: Callable[[str], None]) -> records.Tally:
    """Wait until every key 0..expected-1 was recorded; bounded by STALL_TIMEOUT_S without progress
    (then ``logs()``, the workers' log tails, are shown)."""
    seen, last_progress = -1, time.monotonic()
    while True:
        lines = line_count(results)
        if lines >= expected:
            tally = records.tally(results)
            if not tally.missing(range(expected)):
                return tally
        if lines != seen:
            seen, last_progress = lines, time.monotonic()
        elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
            say(f"[red]no task completed for {STALL_TIMEOUT_S:.0f}s; stopping this run[/]")
            say(logs())
            return records.tally(results)
        # Counting re-reads every record: at a million lines that is ~100 MB, so look less often.
        time.sleep(0.25 + lines / 200_000)


def pool_logs(pool: WorkerPool) -> Callable[[], str]:
    return lambda: "\n".join(pool.log_tail(name, 10) for name in pool.alive())


def fresh_dir(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def measure_throughput(
    profile: Profile,
    urls: tuple[str, ...],
    work: Path,
    *,
    task_ms: int,
    count: int,
    tuning: WorkerTuning,
    say: Callable[[str], None],
) -> ThroughputRun:
    """Prefill ``count`` record tasks, start one worker of ``profile``, rate its steady state."""
    results = fresh_dir(work / "results")
    state = fresh_dir(work / "state")
    runtime = ProfileRuntime(profile, urls, results, tuning.concurrency, tuning.prefetch_multiplier)
    plan = record_plan(count, task_ms)
    if profile is Profile.HA:
        app = make_app(from_env({wire.ENV_BROKER_URLS: ",".join(urls)}))
        prefill = publish_pipelined(app, plan, lambda _: None)
    else:
        # The seed's own publishing: send_task without confirms, as its scheduler did.
        app, publisher = runtime.publisher()
        prefill = publisher(app, plan, lambda _: None)
    app.close()
    if not prefill.ok:
        raise RuntimeError(f"prefilling {count} tasks for the {profile} run failed: {prefill.error}")
    pool = WorkerPool(runtime, state)
    try:
        pool.start(1)
        tally = wait_drained(results, count, pool_logs(pool), say)
        peak = max(worker_memory_kb(results), default=0)
    finally:
        pool.stop()
    finished = [r.finished_at for r in records.read(results)[0]]
    run = ThroughputRun(
        profile=profile.value,
        task_ms=task_ms,
        tasks=count,
        concurrency=tuning.concurrency,
        prefetch_multiplier=tuning.prefetch_multiplier if profile is Profile.HA else None,
        completed=len(tally.keys & frozenset(range(count))),
        duplicates=tally.duplicates,
        per_s=steady_rate(finished),
        worker_peak_rss_kb=peak,
    )
    prefetch = tuning.prefetch_multiplier if profile is Profile.HA else "4 (Celery's default)"
    say(
        f"throughput {profile.value} {task_ms} ms (c={tuning.concurrency}, prefetch={prefetch}): "
        f"{run.per_s:.0f} tasks/s, {run.completed}/{count} done"
    )
    return run


_HWM_MARK = "bench-scheduler-VmHWM-kB:"
# Runs the scheduler CLI unchanged and, at exit, prints the peak RSS of its own address space.
# Not ru_maxrss: Linux carries the forking parent's peak across exec into the child's
# ru_maxrss, so every scheduler would report this (much bigger) bench process's peak.
_SCHEDULER_WRAPPER = (
    "import atexit, re, sys\n"
    "def report():\n"
    "    status = open('/proc/self/status').read()\n"
    f"    print('{_HWM_MARK}', re.search(r'VmHWM:\\s+(\\d+)', status)[1], file=sys.stderr, flush=True)\n"
    "atexit.register(report)\n"
    "from drill.scheduler import run\n"
    "sys.exit(run(sys.argv[1:]))\n"
)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise TimeoutError(f"the scheduler ran longer than {timeout:.0f}s") from None


def run_scheduler_cli(urls: tuple[str, ...], count: int, log: Path) -> tuple[float, float, int]:
    """``python -m app.scheduler`` (the real CLI, default publisher; ``drill.scheduler`` adds only the
    ``record`` task) for ``count`` no-op record tasks: (seconds, epoch start, its own VmHWM in kB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
    env[wire.ENV_BROKER_URLS] = ",".join(urls)
    started_wall = time.time()
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SCHEDULER_WRAPPER, "--count", str(count), "--task", "record"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    status = _wait(proc, SCHEDULER_TIMEOUT_S)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    if status != 0:
        raise RuntimeError(f"the scheduler exited {status}: {output[-2000:]}")
    hwm = re.search(rf"^{re.escape(_HWM_MARK)} (\d+)$", output, re.MULTILINE)
    return seconds, started_wall, int(hwm[1]) if hwm else 0
