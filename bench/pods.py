"""The ha side of the bench on the plan booted by the pod runner: RabbitMQ 4.3 and the worker
Deployment exactly as the plan ships them (image root filesystem, command, environment).

The worker pods get only what every drill adds (``drill.targets.worker_additions``: the counting
tasks and the results directory); their concurrency and prefetch are the plan's own. Throughput
runs prefill the queue with the Deployment scaled to 0, then scale it to one pod and rate the
middle 80 % of completions, as ``bench.workers`` does for the seed's worker processes.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.ceiling import steady_rate
from bench.workers import ScaleRun, ThroughputRun, run_scheduler_cli, wait_drained
from contract import wire
from drill import records
from drill.pod_scenarios import WORKERS
from drill.runner import empty_results
from drill.targets import PlanTarget, broker_urls
from drill.tasks import record_plan
from harness.kube.cluster import PodAdditions
from harness.kube.objects import Deployment
from harness.runtime.poll import poll

MEMORY_SAMPLE_S = 1.0


def worker_deployment(target: PlanTarget) -> Deployment:
    return next(d for d in target.cluster.plan.deployments if f"Deployment/{d.name}" == WORKERS)


def planned_env(target: PlanTarget, name: str) -> str | None:
    """A literal ``env`` value of the plan's worker container (None if unset or from a reference)."""
    [container] = worker_deployment(target).template.spec.containers
    return next((e.value for e in container.env if e.name == name), None)


def _status_kb(pid: int, field_name: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) if match else 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def worker_pids(target: PlanTarget) -> list[int]:
    """Host pids of every worker pod's celery process and its pool (the container's main pid down)."""
    pids: list[int] = []
    for pod in target.cluster.pods_of(WORKERS):
        main = pod.worker.main_pid if pod.worker is not None else None
        if not main:
            continue
        todo = [main]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += _children(pid)
    return pids


@dataclass
class MemorySampler:
    """Samples the worker pods' resident memory every second while a run lasts."""

    target: PlanTarget
    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since start, largest process VmRSS kB, sum of VmRSS kB)."""
    peak_hwm_kb: int = 0
    """Largest VmHWM seen among the worker processes (its own peak resident set)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        pids = worker_pids(self.target)
        rss = [_status_kb(pid, "VmRSS") for pid in pids]
        self.peak_hwm_kb = max([self.peak_hwm_kb, *(_status_kb(pid, "VmHWM") for pid in pids)])
        if rss:
            self.samples.append((round(time.monotonic() - self.started, 1), max(rss), sum(rss)))

    def series(self, points: int = 40) -> list[dict[str, float]]:
        """At most ``points`` samples, evenly spaced, for results.json."""
        step = max(1, len(self.samples) // points)
        return [{"t": t, "max_rss_kb": m, "sum_rss_kb": s} for t, m, s in self.samples[::step]]


def worker_logs(target: PlanTarget, chars: int = 3000) -> dict[str, str]:
    """The tail of every worker pod's container log."""
    return {
        pod.name: pod.worker.log_file.read_text(errors="replace")[-chars:]
        for pod in target.cluster.pods_of(WORKERS)
        if pod.worker is not None and pod.worker.log_file.exists()
    }


def _pod_logs(target: PlanTarget) -> str:
    tails = []
    for pod in target.cluster.pods_of(WORKERS):
        if pod.worker is not None and pod.worker.log_file.exists():
            tails.append(f"{pod.name}: " + pod.worker.log_file.read_text(errors="replace")[-1500:])
    return "\n".join(tails)


def measure_pod_throughput(
    target: PlanTarget,
    results: Path,
    *,
    task_ms: int,
    count: int,
    say: Callable[[str], None],
    prefetch_multiplier: int | None = None,
    on_running: Callable[[int], None] | None = None,
) -> ThroughputRun:
    """Prefill ``count`` record tasks (host publisher, confirmed), then one worker pod of the plan.

    ``prefetch_multiplier`` overrides the plan's ``WORKER_PREFETCH_MULTIPLIER`` for this run (a
    delta of the bench's own); ``on_running(pid)`` is called with the pod's main pid once it runs
    (the profiler attaches there)."""
    if prefetch_multiplier is not None:
        override = {wire.ENV_PREFETCH_MULTIPLIER: str(prefetch_multiplier)}
        with worker_env_override(target, override, "bench: the seed's prefetch, to compare like with like"):
            return measure_pod_throughput(target, results, task_ms=task_ms, count=count, say=say, on_running=on_running)
    target.stop_workers()
    empty_results(results)
    app, publish = target.publisher()
    try:
        prefill = publish(app, record_plan(count, task_ms), lambda _: None)
    finally:
        app.close()
    if not prefill.ok:
        raise RuntimeError(f"prefilling {count} tasks on 4.3 failed: {prefill.error}")
    target.cluster.scale(WORKERS, 1)
    try:
        with MemorySampler(target) as memory:
            if on_running is not None:
                pid = poll(lambda: next(iter(worker_pids(target)), 0), 120, "the worker pod's process")
                on_running(pid)
            tally = wait_drained(results, count, lambda: _pod_logs(target), say)
    finally:
        target.stop_workers()
    finished = [r.finished_at for r in records.read(results)[0]]
    concurrency = int(planned_env(target, wire.ENV_CONCURRENCY) or 0)
    added = target.cluster.additions.get(WORKERS.split("/", 1)[1], PodAdditions()).env
    prefetch = int(added.get(wire.ENV_PREFETCH_MULTIPLIER) or planned_env(target, wire.ENV_PREFETCH_MULTIPLIER) or 0)
    run = ThroughputRun(
        profile="ha",
        task_ms=task_ms,
        tasks=count,
        concurrency=concurrency,
        prefetch_multiplier=prefetch,
        completed=len(tally.keys & frozenset(range(count))),
        duplicates=tally.duplicates,
        per_s=steady_rate(finished),
        worker_peak_rss_kb=memory.peak_hwm_kb,
    )
    say(
        f"throughput ha (plan's worker pod, c={concurrency}, prefetch={prefetch}) {task_ms} ms: "
        f"{run.per_s:.0f} tasks/s, {run.completed}/{count} done"
    )
    return run


def pod_details(target: PlanTarget) -> dict[str, Any]:
    """What the ha worker ran: the plan's command and settings, and what the drill added."""
    [container] = worker_deployment(target).template.spec.containers
    return {
        "command": [*container.command, *container.args],
        "replicas": worker_deployment(target).replicas,
        "WORKER_CONCURRENCY": planned_env(target, "WORKER_CONCURRENCY"),
        "WORKER_PREFETCH_MULTIPLIER": planned_env(target, "WORKER_PREFETCH_MULTIPLIER"),
        "deltas": sorted({f"{d.obj} {d.path}: {d.why}" for d in target.deltas if "celery-worker" in d.obj}),
    }


def measure_pod_scale(
    target: PlanTarget, results: Path, work: Path, *, count: int, say: Callable[[str], None]
) -> ScaleRun:
    """The plan's worker Deployment (its replicas) consuming while the scheduler CLI, on the host,
    publishes ``count`` no-op record tasks to the 4.3 brokers; time, and both sides' memory."""
    target.reset()
    empty_results(results)
    consumers = target.start_workers()
    poll(
        lambda: (target.queue_stat("consumers") or 0) >= consumers,
        120,
        f"{consumers} consumers on the task queue",
        interval=1.0,
    )
    with MemorySampler(target) as memory:
        seconds, started_wall, scheduler_hwm = run_scheduler_cli(
            tuple(broker_urls(target.cluster)), count, work / f"scheduler-{count}.log"
        )
        tally = wait_drained(results, count, lambda: _pod_logs(target), say)
    per_process = [_status_kb(pid, "VmHWM") for pid in worker_pids(target)]
    finished = [r.finished_at for r in records.read(results)[0]]
    run = ScaleRun(
        tasks=count,
        publish_seconds=seconds,
        publish_per_s=count / seconds,
        drain_seconds=(max(finished) - started_wall) if finished else float("nan"),
        scheduler_peak_rss_kb=scheduler_hwm,
        worker_peak_rss_kb=memory.peak_hwm_kb,
        worker_total_rss_kb=sum(per_process),
        duplicates=tally.duplicates,
        lost=len(tally.missing(range(count))),
        worker_memory=memory.series(),
    )
    say(
        f"scale {count:,}: scheduler {run.publish_seconds:.1f}s (VmHWM {run.scheduler_peak_rss_kb / 1024:.1f} MiB), "
        f"drained in {run.drain_seconds:.1f}s, largest worker process {run.worker_peak_rss_kb / 1024:.1f} MiB, "
        f"lost {run.lost}"
    )
    return run


@contextlib.contextmanager
def worker_env_override(target: PlanTarget, env: Mapping[str, str], why: str) -> Iterator[None]:
    """Worker pods launched inside this block get ``env`` over the plan's (reported as deltas)."""
    name = WORKERS.split("/", 1)[1]
    before = target.cluster.additions.get(name, PodAdditions())
    target.cluster.additions[name] = replace(before, env={**before.env, **env}, why=f"{before.why}; {why}")
    try:
        yield
    finally:
        target.cluster.additions[name] = before
