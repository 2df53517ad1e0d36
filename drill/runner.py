"""One drill: boot the local cluster, start workers, publish, inject a fault mid-load, drain, count."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.batch import PublishResult
from drill import records
from drill.profiles import SEED_POLICY, Profile, ProfileRuntime
from drill.scenarios import FAULTS, QUEUE, FaultContext, Scenario
from drill.tasks import record_plan
from harness import netns
from harness.cluster import LocalCluster
from harness.workers import WorkerPool


class DrillError(RuntimeError):
    """The drill itself could not run (not: the cluster lost tasks, that is a result)."""


@dataclass(frozen=True)
class DrillOptions:
    scenario: Scenario
    profile: Profile = Profile.HA
    tasks: int = 10_000
    workers: int = 2
    concurrency: int = 4
    task_ms: int = 20
    """Each task sleeps this long, so a kill always lands on tasks in progress."""
    fault_at: float = 0.3
    """Inject the fault once this fraction of the tasks is published (publisher still busy)."""
    stall_timeout_s: float = 90.0
    """Give up when no task completed for this long after publishing ended."""
    workdir: Path | None = None
    """Keep the cluster's files here (default: a temporary directory, removed afterwards)."""


@dataclass
class DrillResult:
    options: DrillOptions
    scheduled: int
    completed: int
    lost: int
    duplicates: int
    publish: PublishResult
    fault_at: float | None
    events: list[tuple[float, str]]
    finished_at: list[float] = field(repr=False)
    started_at: float
    versions: dict[str, str]
    failover_seconds: float | None
    max_gap_seconds: float | None
    throughput_per_s: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.options.scenario.value,
            "config": self.options.profile.value,
            "scheduled": self.scheduled,
            "published": self.publish.confirmed,
            "publish_error": self.publish.error,
            "publish_per_s": round(self.publish.rate, 1),
            "completed": self.completed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "failover_seconds": None if self.failover_seconds is None else round(self.failover_seconds, 3),
            "max_gap_seconds": None if self.max_gap_seconds is None else round(self.max_gap_seconds, 3),
            "throughput_per_s": round(self.throughput_per_s, 1),
            "workers": self.options.workers,
            "concurrency": self.options.concurrency,
            "task_ms": self.options.task_ms,
            "events": [{"t": round(t - self.started_at, 3), "label": label} for t, label in self.events],
            "versions": self.versions,
            "error": self.error,
        }


class _Counter:
    """The publisher's progress, read by the fault trigger (one writer, one reader)."""

    def __init__(self) -> None:
        self.value = 0
        self.result: PublishResult | None = None

    def __call__(self, n: int) -> None:
        self.value = n


def _queue_stat(cluster: LocalCluster, item: str) -> int | None:
    """One `list_queues` column of the task queue (0 if not declared yet), or None if no node answers."""
    for via in range(cluster.nodes):
        with contextlib.suppress(Exception):
            out = cluster.rabbitmqctl(via, "-q", "list_queues", "name", item, "--no-table-headers")
            for line in out.splitlines():
                name, _, value = line.partition("\t")
                if name == QUEUE:
                    return int(value)
            return 0
    return None


def _wait_consumers(cluster: LocalCluster, expected: int, timeout: float = 90) -> None:
    cluster.wait_until(
        lambda: (_queue_stat(cluster, "consumers") or 0) >= expected,
        timeout=timeout,
        what=f"{expected} consumers on queue {QUEUE!r}",
    )


def _failover(finished: list[float], fault: float | None, task_s: float) -> tuple[float | None, float | None]:
    """(seconds from the fault to the first task that *started* after it finished, longest gap).

    A task is counted from its start (finish minus its sleep): tasks already running at the
    fault finish regardless and say nothing about the failover.
    """
    if fault is None:
        return None, None
    after = sorted(t for t in finished if t - task_s >= fault)
    if not after:
        return None, None
    stamps = [fault, *after]
    return after[0] - fault, max(b - a for a, b in itertools.pairwise(stamps))


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="ha-celery-drill-"))
    # The broker nodes run as the rabbitmq user (Debian's wrapper drops to it).
    tmp.chmod(0o755)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_drill(options: DrillOptions, console: Console | None = None) -> DrillResult:
    """Runs one drill end to end; everything it started is stopped on return or on Ctrl-C."""
    console = console or Console(stderr=True)
    if options.scenario.needs_netns:
        netns.require_root()
        for stale in netns.cleanup_stale():
            console.print(f"[yellow]removed a namespace left by a crashed run: {stale}[/]")
    with _workdir(options.workdir) as work:
        results = work / "results"
        state = work / "workers"
        for directory in (results, state):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        console.print(
            f"[bold]drill[/] {options.scenario} ({options.profile} config): booting a 3-node RabbitMQ cluster"
        )
        with LocalCluster(work / "cluster", nodes=3, netns=options.scenario.needs_netns) as cluster:
            console.print(f"cluster formed in {cluster.formation_seconds or 0:.1f}s: {', '.join(cluster.node_names())}")
            if options.profile is Profile.SEED:
                name, pattern, definition = SEED_POLICY
                cluster.rabbitmqctl(0, "set_policy", "-p", cluster.vhost, "--priority", "1", name, pattern, definition)
            versions = {
                "rabbitmq": cluster.rabbitmqctl(0, "-q", "version").strip(),
                "celery": version("celery"),
                "kombu": version("kombu"),
            }
            runtime = ProfileRuntime(options.profile, tuple(cluster.urls()), results, options.concurrency)
            pool = WorkerPool(runtime, state)
            try:
                return drive(
                    options,
                    cluster=cluster,
                    pool=pool,
                    runtime=runtime,
                    results=results,
                    versions=versions,
                    console=console,
                )
            finally:
                pool.stop()


def drive(
    options: DrillOptions,
    *,
    cluster: LocalCluster,
    pool: WorkerPool,
    runtime: ProfileRuntime,
    results: Path,
    versions: dict[str, str],
    console: Console,
) -> DrillResult:
    pool.start(options.workers)
    _wait_consumers(cluster, options.workers)
    app, publish = runtime.publisher()
    plan = record_plan(options.tasks, options.task_ms)
    progress_counter = _Counter()

    def publisher() -> None:
        progress_counter.result = publish(app, plan, progress_counter)

    started = time.time()
    publishing = threading.Thread(target=publisher, name="publisher", daemon=True)
    publishing.start()

    ctx = FaultContext(cluster, pool)
    fault_errors: list[BaseException] = []

    def inject() -> None:
        try:
            FAULTS[options.scenario](ctx)
        except BaseException as exc:  # reported in the result, never swallowed
            fault_errors.append(exc)

    fault_thread: threading.Thread | None = None
    last_progress = time.monotonic()
    completed = 0
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        published_bar = bar.add_task("published", total=options.tasks)
        done_bar = bar.add_task("completed", total=options.tasks)
        while True:
            time.sleep(0.25)
            tally = records.tally(results)
            done = len(tally.keys & set(range(options.tasks)))
            if done != completed:
                completed, last_progress = done, time.monotonic()
            bar.update(published_bar, completed=progress_counter.value)
            bar.update(done_bar, completed=done)
            if fault_thread is None and progress_counter.value >= options.fault_at * options.tasks:
                fault_thread = threading.Thread(target=inject, name="fault", daemon=True)
                fault_thread.start()
            fault_done = fault_thread is not None and not fault_thread.is_alive()
            publish_done = not publishing.is_alive()
            if done >= options.tasks and fault_done:
                break
            idle = time.monotonic() - last_progress
            if publish_done and (fault_done or fault_thread is None):
                if idle > options.stall_timeout_s:
                    console.print(f"[red]no task completed for {options.stall_timeout_s:.0f}s: stopping[/]")
                    break
                # Nothing queued and nothing running: what is missing now will never come.
                if idle > 5 and _queue_stat(cluster, "messages") == 0:
                    break
            if (
                fault_thread is None
                and publish_done
                and done > 0
                and progress_counter.value < options.fault_at * options.tasks
            ):
                break  # publishing failed before the fault point: report what happened

    publishing.join(timeout=60)
    if fault_thread is not None:
        fault_thread.join(timeout=300)
    publish_result = progress_counter.result or PublishResult(options.tasks, (), 0.0, "publisher did not finish")
    final = records.tally(results)
    finished = [r.finished_at for r in records.read(results)[0]]
    expected = set(range(options.tasks))
    completed = len(final.keys & expected)
    fault_at = ctx.events[0].at if ctx.events else None
    failover, gap = _failover(finished, fault_at, options.task_ms / 1000)
    span = (max(finished) - min(finished)) if len(finished) > 1 else 0.0
    error = None
    if fault_errors:
        error = f"fault injection failed: {type(fault_errors[0]).__name__}: {fault_errors[0]}"
    elif fault_thread is None:
        error = "the fault was never injected"
    return DrillResult(
        options=options,
        scheduled=options.tasks,
        completed=completed,
        lost=options.tasks - completed,
        duplicates=final.duplicates,
        publish=publish_result,
        fault_at=fault_at,
        events=[(e.at, e.label) for e in ctx.events],
        finished_at=finished,
        started_at=started,
        versions=versions,
        failover_seconds=failover,
        max_gap_seconds=gap,
        throughput_per_s=completed / span if span > 0 else 0.0,
        error=error,
    )


def write_report(result: DrillResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path
