"""One drill: boot the cluster under test, publish, inject a fault mid-load, drain, count.

The ha configuration is the plan itself (``build/plan/<stack>``) booted by the local pod runner
on RabbitMQ 4.3; the seed's is its 2018 setup on Debian's 3.10 (``drill.targets``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from app.batch import PublishResult
from contract.lanes import DEFAULT_LANE
from drill import records
from drill import watch as watching
from drill.held import FreezeReport
from drill.node_scenarios import NodeReport
from drill.observe import Observed
from drill.profiles import Profile
from drill.scale import ScaleReport
from drill.scenario import Scenario
from drill.targets import PlanTarget, PodEvent, Target, boot_local, boot_plan
from drill.tasks import long_plan, record_plan
from drill.update import UpdateReport, UpdateSpec
from drill.workload import LONG_TASK_S, MAX_COUNTDOWN_S, Workload, publish_delayed, published_before_workers
from harness.kube.fields import Delta
from harness.runtime import netns
from harness.runtime.poll import PollTimeout, poll


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
    """Give up when no task completed for this long after publishing ended (``eta``: after the
    last task's ETA, at most ``drill.workload.MAX_COUNTDOWN_S`` after publishing ended)."""
    workdir: Path | None = None
    """Keep the cluster's files here (default: a temporary directory, removed afterwards)."""
    plan: Path = Path("build/plan/dev")
    """The plan the ha configuration boots (``make plan STACK=...`` writes it)."""
    workload: Workload = Workload.PLAIN
    """What is published: tasks due at once, or countdowns with a part before any worker (``drill.workload``)."""
    long_task_s: tuple[float, float] = LONG_TASK_S
    """``long`` workload: each task runs this many seconds, spread over the range."""
    lane: str = DEFAULT_LANE
    """The lane the drill loads and faults (contract.lanes): its queue, its worker Deployment. The
    ``long`` workload's default is the long lane (``drill.__main__``): tasks of minutes are past the
    default lane's hard limit."""
    update: UpdateSpec | None = None
    """``update`` scenario: the second plan and plan-diff's steps to it (``drill.update``)."""

    @property
    def stall_limit_s(self) -> float:
        """``stall_timeout_s``, but never shorter than twice the longest task (``long``)."""
        longest = self.long_task_s[1] if self.workload is Workload.LONG else 0.0
        return max(self.stall_timeout_s, 2 * longest)


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
    deltas: list[Delta] = field(default_factory=list)
    """Every difference between the plan and what ran (ha on the pod runner only)."""
    pod_events: list[PodEvent] = field(default_factory=list)
    """What the pods went through during the drill (ha on the pod runner only)."""
    early: int = 0
    """Tasks whose body started before their ETA (``eta`` workload; must be 0)."""
    late_seconds: tuple[float, float] | None = None
    """Median and largest delay from a task's ETA to its first start (``eta`` workload)."""
    published_before_workers: int = 0
    """Tasks confirmed while the worker Deployment had no pod at all (measured before and after)."""
    workers_before: int | None = None
    """Worker pods the cluster had ever had when those tasks were published (``eta``; 0: none ever)."""
    workload_events: list[tuple[float, str]] = field(default_factory=list)
    """The workload's own steps (workers stopped, first part published, workers back)."""
    observed: Observed | None = None
    """What the cluster's Prometheus saw: alerts, queue depth, broker nodes up (ha only)."""
    update: UpdateReport | None = None
    """``update`` scenario: the steps applied and the fewest Ready brokers during them."""
    node: NodeReport | None = None
    """Node drills (``drill.node_scenarios``): NotReady, taints, evictions, pods held, worker capacity."""
    freeze: FreezeReport | None = None
    """``freeze-broker``: how long the frozen node held each worker, when it stopped being Ready."""
    scale: ScaleReport | None = None
    """``scale-in``: the pod the scale-in deleted, its warm shutdown's length, the tasks it finished meanwhile."""

    @property
    def failed(self) -> bool:
        """A task lost or early, the drill not run, an update below a majority, a worker held by a
        frozen node, a scaled-in pod not gone within its grace period."""
        update_failed = self.update is not None and not self.update.ok
        freeze_failed = self.freeze is not None and not self.freeze.ok
        scale_failed = self.scale is not None and not self.scale.ok
        return bool(self.lost or self.early or self.error or update_failed or freeze_failed or scale_failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.options.scenario.value,
            "config": self.options.profile.value,
            "workload": self.options.workload.value,
            "scheduled": self.scheduled,
            "published": self.publish.confirmed,
            "publish_error": self.publish.error,
            "publish_per_s": round(self.publish.rate, 1),
            "completed": self.completed,
            "lost": self.lost,
            "early": self.early,
            "late_seconds_median": None if self.late_seconds is None else round(self.late_seconds[0], 3),
            "late_seconds_max": None if self.late_seconds is None else round(self.late_seconds[1], 3),
            "published_before_workers": self.published_before_workers,
            "workers_before": self.workers_before,
            "duplicates": self.duplicates,
            "failover_seconds": None if self.failover_seconds is None else round(self.failover_seconds, 3),
            "max_gap_seconds": None if self.max_gap_seconds is None else round(self.max_gap_seconds, 3),
            "throughput_per_s": round(self.throughput_per_s, 1),
            "workers": self.options.workers,
            "concurrency": self.options.concurrency,
            "task_ms": self.options.task_ms,
            "events": [{"t": round(t - self.started_at, 3), "label": label} for t, label in self.events],
            "workload_events": [
                {"t": round(t - self.started_at, 3), "label": label} for t, label in self.workload_events
            ],
            "versions": self.versions,
            "rabbitmq_version": self.versions.get("rabbitmq"),
            "plan": str(self.options.plan) if self.options.profile is Profile.HA else None,
            "stack": self.options.plan.name if self.options.profile is Profile.HA else None,
            "pod_events": [
                {"t": round(t - self.started_at, 3), "pod": pod, "reason": reason, "message": message}
                for t, pod, reason, message in self.pod_events
            ],
            "deltas": [
                {"object": d.obj, "path": d.path, "planned": d.planned, "local": d.local, "why": d.why}
                for d in self.deltas
            ],
            **(
                self.observed.to_json(self.started_at)
                if self.observed is not None
                else {"alerts": None, "alert_timing": None, "observation_error": "no Prometheus (seed config)"}
            ),
            "update": None if self.update is None else self.update.to_json(self.started_at),
            "node": None if self.node is None else self.node.to_json(self.started_at),
            "time_to_full_worker_capacity_s": (
                None if self.node is None else self.node.to_json(self.started_at)["time_to_full_worker_capacity_s"]
            ),
            "freeze": None if self.freeze is None else self.freeze.to_json(self.started_at),
            "scale": None if self.scale is None else self.scale.to_json(self.started_at),
            "lane": self.options.lane,
            "error": self.error,
        }


class _Counter:
    """The publisher's progress, read by the watch (one writer, one reader)."""

    def __init__(self) -> None:
        self.value = 0
        self.result: PublishResult | None = None

    def __call__(self, n: int) -> None:
        self.value = n


def _wait_consumers(target: Target, expected: int, timeout: float = 120) -> None:
    poll(
        lambda: (target.queue_stat("consumers") or 0) >= expected,
        timeout,
        f"{expected} consumers on queue {target.queue!r}",
        interval=1.0,
    )


def _counted(report: ScaleReport | None, executions: Sequence[records.Record]) -> ScaleReport | None:
    """``report`` with the tasks its scaled-in pod finished after its deletion began (its warm shutdown)."""
    if report is not None and report.deleting_at is not None:
        deleting_at = report.deleting_at
        report.finished_after_deletion = sum(
            1 for r in executions if r.host == report.victim and r.finished_at > deleting_at
        )
    return report


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
    if options.profile is Profile.HA or options.scenario.needs_netns:
        netns.require_root()
        for stale in netns.cleanup_stale():
            console.print(f"[yellow]removed a namespace left by a crashed run: {stale}[/]")
    with _workdir(options.workdir) as work:
        results = work / "results"
        for directory in (results, work / "workers"):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        if options.profile is Profile.HA:
            console.print(
                f"[bold]drill[/] {options.scenario} (ha): booting {options.plan} on the pod runner "
                "(RabbitMQ 4.3 StatefulSet, worker Deployment)"
            )
            # eta: the worker Deployment boots scaled to 0, so the first tasks meet a cluster where
            # no worker has ever run (nothing declared the delayed-delivery topology but the broker).
            target_cm: contextlib.AbstractContextManager[Target] = boot_plan(
                options.plan,
                work / "kube",
                results,
                workers=options.workload is not Workload.ETA,
                update=options.update,
            )
        else:
            console.print(f"[bold]drill[/] {options.scenario} (seed, 2018): booting Debian's RabbitMQ 3.10 x 3")
            target_cm = boot_local(
                work,
                results,
                options.profile,
                workers=options.workers,
                concurrency=options.concurrency,
                netns=options.scenario.needs_netns,
            )
        with target_cm as target:
            console.print("versions: " + ", ".join(f"{k} {v}" for k, v in target.versions.items()))
            return drive(options, target=target, results=results, console=console)


@contextlib.contextmanager
def booted_plan(
    plan: Path, workdir: Path | None = None, *, observe: bool = True, workers: bool = True
) -> Iterator[tuple[PlanTarget, Path]]:
    """The plan booted on the pod runner, with the results directory its worker pods write to
    (``observe``: and its Prometheus, ``drill.observe``; ``workers=False``: the worker Deployment
    scaled to 0, see ``boot_plan``)."""
    netns.require_root()
    with _workdir(workdir) as work:
        results = work / "results"
        results.mkdir(parents=True, exist_ok=True)
        with boot_plan(plan, work / "kube", results, workers=workers, observe=observe) as target:
            yield target, results


def empty_results(results: Path) -> None:
    """Forget every record; emptied, not replaced: the worker pods bind-mount this very directory (inode)."""
    for entry in results.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_plan_drills(options: Sequence[DrillOptions], console: Console | None = None) -> list[DrillResult]:
    """Several ha scenarios on one plan-booted cluster, reset between them (``SCENARIO=all``).

    An ``eta`` workload first meets a cluster booted without workers, as ``run_drill`` boots it
    for one; anywhere else it finds the worker pods the earlier scenarios ran."""
    console = console or Console(stderr=True)
    first = options[0]
    console.print(f"[bold]drills[/] {', '.join(o.scenario for o in options)} (ha): booting {first.plan} once")
    workers = first.workload is not Workload.ETA
    with booted_plan(first.plan, first.workdir, workers=workers) as (target, results):
        console.print("versions: " + ", ".join(f"{k} {v}" for k, v in target.versions.items()))
        return drills_in_turn(options, target, results, console)


def drills_in_turn(
    options: Sequence[DrillOptions], target: PlanTarget, results: Path, console: Console
) -> list[DrillResult]:
    """The drills one after the other on a booted cluster: before each, every pod Ready, the task
    queue empty (and the Prometheus quiet), the results emptied, so nothing counts for the next."""
    done: list[DrillResult] = []
    for each in options:
        try:
            target.reset()
        except PollTimeout as exc:
            raise DrillError(f"the cluster did not recover before {each.scenario}: {exc}") from exc
        target.update = each.update
        empty_results(results)
        console.print(f"[bold]drill[/] {each.scenario}")
        done.append(drive(each, target=target, results=results, console=console))
    return done


@dataclass
class _BeforeWorkers:
    """What the ``eta`` workload measured around the tasks it published before the workers started."""

    present_before: int = -1
    """Worker pods when publishing began."""
    present_after: int = -1
    """Worker pods once the first part was confirmed."""
    ever: int | None = None
    """Worker pods the cluster had ever had when publishing began."""
    published: int = 0
    """Tasks confirmed in the first part."""

    @property
    def without_workers(self) -> int:
        """Tasks confirmed while no worker pod existed (both ends of the part measured)."""
        return self.published if self.present_before == 0 and self.present_after == 0 else 0


class Drill:
    """One drill on a booted cluster, in its phases: :meth:`prepare_workers`, :meth:`start_publisher`,
    :meth:`watch` (the stop rule of ``drill.watch``), :meth:`result`.

    Three threads meet here, each writing its own fields: the publisher (``progress``, and for
    ``eta`` the workers' restart between its two parts: ``before``, ``workload_events``), the fault
    (``events``, ``fault_errors``) and the watch, which only reads them until both are joined.
    """

    def __init__(self, options: DrillOptions, *, target: Target, results: Path, console: Console) -> None:
        self.options = options
        self.target = target
        self.results = results
        self.console = console
        self.eta = options.workload is Workload.ETA
        self.expected = set(range(options.tasks))
        self.before = _BeforeWorkers()
        self.workload_events: list[tuple[float, str]] = []
        self.progress = _Counter()
        self.events: list[tuple[float, str]] = []
        self.fault_errors: list[BaseException] = []
        self.publishing: threading.Thread | None = None
        self.fault: threading.Thread | None = None
        self.started = 0.0
        target.use_lane(options.lane)

    # ------------------------------------------------------------------------- phases ----

    def prepare_workers(self) -> None:
        """``eta``: no worker pod at all when publishing starts; otherwise every consumer attached."""
        if self.eta:
            self.target.stop_workers()
            self.before.present_before = self.target.workers_present()
            self.before.ever = self.target.workers_ever()
            self._note(f"workers stopped: {self.before.present_before} worker pods, {self.before.ever} ever")
            return
        consumers = self.target.start_workers()
        try:
            _wait_consumers(self.target, consumers)
        except PollTimeout as exc:
            raise DrillError(str(exc)) from exc

    def start_publisher(self) -> None:
        """Publish every task on a thread of its own; the drill's clock starts here."""
        app, publish = self.target.publisher()
        if self.options.workload is Workload.LONG:
            plan = long_plan(self.options.tasks, *self.options.long_task_s, queue=self.target.queue)
        else:
            plan = record_plan(self.options.tasks, self.options.task_ms, queue=self.target.queue)

        def run() -> None:
            if self.eta:
                first = published_before_workers(self.options.tasks)
                self.progress.result = self.target.in_cluster(
                    lambda: publish_delayed(app, plan, self.progress, pause_after=first, pause=self._workers_back)
                )
            else:
                self.progress.result = publish(app, plan, self.progress)

        self.started = time.time()
        self.publishing = threading.Thread(target=run, name="publisher", daemon=True)
        self.publishing.start()

    def watch(self) -> watching.Done:
        """Inject the fault at its point and stop where ``drill.watch.next_step`` says; then let the
        publisher and the fault finish."""
        limits = watching.Limits(
            tasks=self.options.tasks,
            fault_point=self.options.fault_at * self.options.tasks,
            stall_timeout_s=self.options.stall_limit_s,
            # eta: no task is due before its countdown ran out; idle time counts from the last ETA on.
            due_after_s=MAX_COUNTDOWN_S if self.eta else None,
        )
        with watching.ProgressBar(self.console, self.options.tasks) as bar:
            done, _ = watching.watch(self, limits, observers=[bar])
        if done.reason is watching.Reason.STALLED:
            self.console.print(f"[red]no task completed for {self.options.stall_limit_s:.0f}s: stopping[/]")
        if self.publishing is not None:
            self.publishing.join(timeout=60)
        if self.fault is not None:
            self.fault.join(timeout=300)
        return done

    def result(self) -> DrillResult:
        """Count what the workers recorded, and time the failover."""
        options, target = self.options, self.target
        # Prometheus first: it waits for the drill's alerts to resolve, and tasks still finishing
        # meanwhile are counted.
        observed = target.observe(self.started)
        final = records.tally(self.results)
        executions = records.read(self.results)[0]
        finished = [r.finished_at for r in executions]
        completed = len(final.keys & self.expected)
        fault_at = self.events[0][0] if self.events else None
        failover, gap = _failover(finished, fault_at, options.task_ms / 1000)
        span = (max(finished) - min(finished)) if len(finished) > 1 else 0.0
        return DrillResult(
            options=options,
            scheduled=options.tasks,
            completed=completed,
            lost=options.tasks - completed,
            duplicates=final.duplicates,
            publish=self.progress.result or PublishResult(options.tasks, (), 0.0, "publisher did not finish"),
            fault_at=fault_at,
            events=list(self.events),
            finished_at=finished,
            started_at=self.started,
            versions=target.versions,
            failover_seconds=failover,
            max_gap_seconds=gap,
            throughput_per_s=completed / span if span > 0 else 0.0,
            error=self._error(),
            deltas=target.deltas,
            pod_events=target.pod_events(self.started),
            early=final.early,
            late_seconds=late_seconds(executions),
            published_before_workers=self.before.without_workers,
            workers_before=self.before.ever,
            workload_events=self.workload_events,
            observed=observed,
            update=self.target.update_result(),
            node=self.target.node_result(),
            freeze=self.target.freeze_result(),
            scale=_counted(self.target.scale_result(), executions),
        )

    # ------------------------------------------------------- what the watch looks at ----

    def sample(self) -> watching.Sample:
        # Whether the publisher runs is read before its count: a stopped publisher's count is final.
        publishing = self.publishing is not None and self.publishing.is_alive()
        published = self.progress.value
        completed = len(records.tally(self.results).keys & self.expected)
        return watching.Sample(published, completed, publishing, self._fault_state())

    def _fault_state(self) -> watching.Fault:
        if self.fault is None:
            return watching.Fault.PENDING
        return watching.Fault.RUNNING if self.fault.is_alive() else watching.Fault.DONE

    def queues_empty(self) -> bool:
        if self.target.queue_stat("messages") != 0:
            return False
        return not self.eta or self.target.delayed_messages() == 0

    def inject(self) -> None:
        self.fault = threading.Thread(target=self._inject, name="fault", daemon=True)
        self.fault.start()

    # ------------------------------------------------------------ on other threads ----

    def _inject(self) -> None:
        try:
            self.target.inject(self.options.scenario, self._mark)
        except BaseException as exc:  # reported in the result, never swallowed
            self.fault_errors.append(exc)

    def _mark(self, label: str) -> float:
        now = time.time()
        self.events.append((now, label))
        return now

    def _workers_back(self) -> None:
        """``eta``, between the publisher's two parts: count what went out with no worker, start them."""
        self.before.published = self.progress.value
        self.before.present_after = self.target.workers_present()
        self._note(
            f"{self.before.published} tasks published with {self.before.present_after} worker pods; "
            "starting the workers"
        )
        consumers = self.target.start_workers()
        _wait_consumers(self.target, consumers)
        self._note(f"workers back: {consumers} consumers on {self.target.queue!r}")

    def _note(self, label: str) -> None:
        self.workload_events.append((time.time(), label))
        self.console.print(f"  {label}")

    def _error(self) -> str | None:
        if self.fault_errors:
            return f"fault injection failed: {type(self.fault_errors[0]).__name__}: {self.fault_errors[0]}"
        if self.fault is None:
            return "the fault was never injected"
        return None


def drive(options: DrillOptions, *, target: Target, results: Path, console: Console) -> DrillResult:
    """One drill on ``target``, booted and reset by the caller: its phases in order."""
    drill = Drill(options, target=target, results=results, console=console)
    drill.prepare_workers()
    drill.start_publisher()
    drill.watch()
    return drill.result()


def late_seconds(executions: Sequence[records.Record]) -> tuple[float, float] | None:
    """Median and largest delay from each task's ETA to its first start; None if no task had an ETA."""
    first_start: dict[str, float] = {}
    for record in executions:
        early_by = record.early_by
        if early_by is not None:
            first_start[record.task_id] = min(first_start.get(record.task_id, -early_by), -early_by)
    if not first_start:
        return None
    delays = list(first_start.values())
    return statistics.median(delays), max(delays)


def write_report(result: DrillResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path
