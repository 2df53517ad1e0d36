"""`python -m bench [--quick | --scale N]`: the broker that ships against the seed and against its own ceiling.

One run boots two clusters side by side and measures on both, interleaved, so that load from
anything else on this shared machine falls on both sides alike:

* ha: the plan (``build/plan/<stack>``, ``make plan``) booted by the pod runner as the drills
  boot it (``drill.runner.booted_plan``): the RabbitMQ 4.3 StatefulSet and the worker
  Deployment as shipped (the image's root filesystem, its command and environment);
* seed: the 2018 setup on Debian's RabbitMQ 3.10 (``harness.seed.cluster.LocalCluster``: a classic
  queue mirrored by ``ha-all``), its worker processes started from this virtualenv.

Sections (``--only`` picks some): ``publish`` (raw unconfirmed vs pipelined confirms vs one
confirm per task, 4.3), ``consume`` (the raw consume-and-ack ceiling of 4.3, no Celery),
``throughput`` (the plan's worker pod vs the seed's worker, no-op and 10 ms tasks), ``scale``
(the scheduler CLI and the plan's workers, N tasks), ``failover`` (kill-broker repeated and,
in the full run, partition-node, both drills on the plan). Writes ``build/bench/results.json``
and prints a table; the full run also rewrites the table in BENCHMARKS.md, unless the machine was
busy at start (``bench.busy``: then only with ``--noisy``, and the table says so). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from app.config import from_env
from app.factory import make_app
from app.publish import DEFAULT_WINDOW, publish_pipelined
from bench import busy
from bench import ceiling as bench_ceiling
from bench import pods as bench_pods
from bench import profile as bench_profile
from bench import publish as bench_publish
from bench import workers as bench_workers
from contract import timing, wire
from contract.plan_dir import IncompletePlanError, check_complete
from drill.profiles import SEED_POLICY, Profile
from drill.runner import DrillOptions, DrillResult, booted_plan, drive, empty_results
from drill.scenario import Scenario
from drill.targets import PlanTarget, broker_urls
from drill.tasks import record_plan
from harness.runtime.poll import poll
from harness.seed.cluster import LocalCluster

ROOT: Final = Path(__file__).resolve().parent.parent
SECTIONS: Final = ("publish", "consume", "throughput", "scale", "failover")
SEED_VHOST: Final = "seed"
"""The seed's classic queue is also named ``celery``: it needs a vhost of its own."""
MARK_BEGIN: Final = "<!-- bench-table:begin (written by `make bench`; edits between the markers are lost) -->"
MARK_END: Final = "<!-- bench-table:end -->"
PUBLISH_GOAL: Final = 0.95
NOOP_GOAL: Final = 1.2
SHORT_GOAL: Final = 1.0
CEILING_GOAL: Final = 0.5
FAILOVER_KILL_GOAL_S: Final = 1.0
PARTITION_STALL_GOAL_S: Final = 10.0
CEILING_PREFETCH: Final = 256
"""The raw consumer's prefetch: deep enough that the broker never waits for an ack to deliver."""
MULTI_ACK_EVERY: Final = 64
SHORT_TASK_MS: Final = 10
REQUIRED_KEYS: Final = (
    "publish_raw_per_s",
    "publish_confirmed_per_s",
    "throughput_ha_per_s",
    "throughput_seed_per_s",
    "consume_raw_per_s",
    "failover_kill_broker_seconds",
    "rabbitmq_version_ha",
    "rabbitmq_version_seed",
)
"""What even the quick run writes to results.json (tests/unit/bench/test_bench.py checks the code path)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; the quick run keeps the whole bench under 5 minutes."""

    publish_rounds: int
    publish_count: int
    simple_count: int
    windows: tuple[int, ...]
    sweep_count: int
    consume_rounds: int
    consume_count: int
    throughput_rounds: int
    noop_tasks: int
    short_tasks: int
    scale: tuple[int, ...]
    failover_tasks: int
    kill_runs: int
    partition: bool
    same_prefetch: bool
    """Also run the plan's worker pod with the seed's prefetch (like-for-like beside as-shipped)."""


QUICK: Final = Sizes(
    publish_rounds=2,
    publish_count=5_000,
    simple_count=500,
    windows=(),
    sweep_count=0,
    consume_rounds=1,
    consume_count=5_000,
    throughput_rounds=1,
    noop_tasks=2_000,
    short_tasks=600,
    scale=(1_000, 5_000),
    failover_tasks=1_000,
    kill_runs=1,
    partition=False,
    same_prefetch=False,
)
FULL: Final = Sizes(
    publish_rounds=3,
    publish_count=20_000,
    simple_count=1_000,
    windows=(64, 256, 1024, 2048, 8192),
    sweep_count=10_000,
    consume_rounds=2,
    consume_count=10_000,
    throughput_rounds=2,
    noop_tasks=4_000,
    short_tasks=1_500,
    scale=(1_000, 10_000, 100_000),
    failover_tasks=3_000,
    kill_runs=5,
    partition=True,
    same_prefetch=True,
)


def scale_sizes(total: int) -> Sizes:
    """``--scale N``: the scale section alone at N/100, N/10 and N (flat memory shows across them)."""
    counts = tuple(sorted({max(1_000, total // 100), max(1_000, total // 10), total}))
    return Sizes(**{**QUICK.__dict__, "scale": counts})


MAX_SCALE = 100_000_000
"""At the ~240 tasks/s a drain measures (BENCHMARKS.md), 100M tasks are nearly five days."""


def parse_count(text: str) -> int:
    """``1M``, ``100k`` or ``250000``: ASCII digits, at least 1 (0 would be no --scale at all)."""
    match = re.fullmatch(r"([0-9]{1,9})([kKmM]?)", text)
    count = int(match[1]) * {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()] if match else 0
    if not 1 <= count <= MAX_SCALE:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text) - 40} more characters)"
        raise argparse.ArgumentTypeError(f"a task count from 1 to 100M like 1M, 100k or 250000, got {shown!r}")
    return count


@dataclass
class Bench:
    """Everything one run measured; ``to_json`` is results.json."""

    quick: bool
    sections: tuple[str, ...]
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> dict[str, float | None]:
        f = self.figures

        def ratio(a: str, b: str) -> float | None:
            x, y = f.get(a), f.get(b)
            return round(x / y, 3) if x is not None and y else None

        return {
            "confirmed_vs_raw": ratio("publish_confirmed_per_s", "publish_raw_per_s"),
            "confirmed_vs_raw_ingest": ratio("publish_confirmed_per_s", "publish_raw_ingest_per_s"),
            "raw_ingest_vs_raw": ratio("publish_raw_ingest_per_s", "publish_raw_per_s"),
            "simple_vs_raw": ratio("publish_confirmed_simple_per_s", "publish_raw_per_s"),
            "confirmed_vs_simple": ratio("publish_confirmed_per_s", "publish_confirmed_simple_per_s"),
            "consume_multiack_vs_raw": ratio("consume_raw_multiack_per_s", "consume_raw_per_s"),
            "consume_worker_prefetch_vs_raw": ratio("consume_raw_worker_prefetch_per_s", "consume_raw_per_s"),
            "throughput_ha_vs_consume_raw": ratio("throughput_ha_per_s", "consume_raw_per_s"),
            "throughput_ha_vs_consume_worker_prefetch": ratio(
                "throughput_ha_per_s", "consume_raw_worker_prefetch_per_s"
            ),
            "throughput_ha_vs_seed": ratio("throughput_ha_per_s", "throughput_seed_per_s"),
            "throughput_ha_vs_seed_same_pool": ratio("throughput_ha_per_s", "throughput_seed_same_pool_per_s"),
            "throughput_ha_vs_seed_10ms": ratio("throughput_ha_10ms_per_s", "throughput_seed_10ms_per_s"),
            "throughput_ha_seed_prefetch_vs_seed_same_pool": ratio(
                "throughput_ha_seed_prefetch_per_s", "throughput_seed_same_pool_per_s"
            ),
            "throughput_ha_seed_prefetch_vs_seed_same_pool_10ms": ratio(
                "throughput_ha_seed_prefetch_10ms_per_s", "throughput_seed_same_pool_10ms_per_s"
            ),
            "throughput_ha_seed_prefetch_vs_consume_raw": ratio(
                "throughput_ha_seed_prefetch_per_s", "consume_raw_per_s"
            ),
            "throughput_ha_vs_seed_same_pool_10ms": ratio(
                "throughput_ha_10ms_per_s", "throughput_seed_same_pool_10ms_per_s"
            ),
        }

    def goals(self) -> list[dict[str, Any]]:
        r, f = self.ratios(), self.figures

        def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
            return None if value is None else ok(value)

        kill = f.get("failover_kill_broker_seconds")
        stall = f.get("failover_partition_node_max_gap_seconds")
        rows: list[tuple[str, float | None, str, bool | None]] = [
            (
                f"pipelined confirmed >= {PUBLISH_GOAL}x raw unconfirmed (4.3)",
                r["confirmed_vs_raw"],
                f">= {PUBLISH_GOAL}",
                check(r["confirmed_vs_raw"], lambda v: v >= PUBLISH_GOAL),
            ),
            (
                f"ha worker >= {NOOP_GOAL}x seed, no-op, same pool",
                r["throughput_ha_vs_seed_same_pool"],
                f">= {NOOP_GOAL}",
                check(r["throughput_ha_vs_seed_same_pool"], lambda v: v >= NOOP_GOAL),
            ),
            (
                f"ha worker >= {SHORT_GOAL}x seed, {SHORT_TASK_MS} ms, same pool",
                r["throughput_ha_vs_seed_same_pool_10ms"],
                f">= {SHORT_GOAL}",
                check(r["throughput_ha_vs_seed_same_pool_10ms"], lambda v: v >= SHORT_GOAL),
            ),
            (
                f"ha worker >= {CEILING_GOAL}x raw consume-and-ack ceiling (4.3)",
                r["throughput_ha_vs_consume_raw"],
                f">= {CEILING_GOAL}",
                check(r["throughput_ha_vs_consume_raw"], lambda v: v >= CEILING_GOAL),
            ),
            (
                "kill-broker failover (worst run)",
                kill,
                f"< {FAILOVER_KILL_GOAL_S} s",
                check(kill, lambda v: v < FAILOVER_KILL_GOAL_S),
            ),
            (
                "partition-node: longest stall (4.3)",
                stall,
                f"<= {PARTITION_STALL_GOAL_S} s",
                check(stall, lambda v: v <= PARTITION_STALL_GOAL_S),
            ),
        ]
        return [{"goal": g, "value": v, "target": t, "met": m} for g, v, t, m in rows]

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: (None if v is None else round(v, 3)) for k, v in self.figures.items()},
            "rabbitmq_version_ha": self.versions.get("rabbitmq_ha"),
            "rabbitmq_version_seed": self.versions.get("rabbitmq_seed"),
            "ratios": self.ratios(),
            "goals": self.goals(),
            "quick": self.quick,
            "sections": list(self.sections),
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 1),
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "details": self.details,
        }


# ----------------------------------------------------------------- environment ----


def machine_facts() -> dict[str, Any]:
    """The machine, its load and the other heavy processes on it (a 1 s sample) as a run starts."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    meminfo = Path("/proc/meminfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    total = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    load, cores = [round(x, 2) for x in os.getloadavg()], os.cpu_count() or 1
    return {
        "nproc": cores,
        "cpu_model": model[1].strip() if model else platform.processor() or "unknown",
        "memory_mib": int(total[1]) // 1024 if total else None,
        "kernel": platform.release(),
        "load_average_at_start": load,
        "busy_load_threshold": busy.busy_threshold(cores),
        "busy_at_start": busy.is_busy(load[0], cores),
        "other_processes_at_start": [o.to_json() for o in busy.sample_others()],
    }


def load_at_start(bench: Bench) -> float:
    """The 1-minute load average as the run started."""
    return float(bench.machine["load_average_at_start"][0])


def load_line(bench: Bench) -> str:
    """The load and the other heavy processes at start and end, as the console and the table say them."""
    m = bench.machine
    return (
        f"load average at start {m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}; "
        f"other heavy processes at start: {others_summary(bench, 'start')}; at end: {others_summary(bench, 'end')}"
    )


def others_summary(bench: Bench, when: str) -> str:
    """``other_processes_at_<when>`` in one line (``busy.summary``)."""
    listed = bench.machine.get(f"other_processes_at_{when}")
    if listed is None:
        return "not recorded"
    return busy.summary(busy.OtherProcess(o["pid"], o["name"], o["cpu_percent"]) for o in listed)


def record_versions(bench: Bench, ha: PlanTarget | dict[str, str], seed: LocalCluster | str) -> None:
    """Both brokers' versions (and the client side's); the ha one as its pod reports it."""
    ha_versions = ha if isinstance(ha, dict) else ha.versions
    if isinstance(seed, LocalCluster):
        erlang = seed.cli(0, "rabbitmq-diagnostics", "-q", "erlang_version").strip()
        bench.versions["erlang_seed"] = erlang.splitlines()[-1] if erlang else "unknown"
        seed = seed.rabbitmqctl(0, "-q", "version").strip()
    bench.versions.update(
        {
            "rabbitmq_ha": ha_versions.get("rabbitmq", "unknown"),
            "worker_image": ha_versions.get("worker image", "unknown"),
            "rabbitmq_seed": seed,
            "celery": version("celery"),
            "kombu": version("kombu"),
            "amqp": version("amqp"),
            "python": platform.python_version(),
        }
    )


def seed_urls(cluster: LocalCluster) -> tuple[str, ...]:
    """The seed's vhost (classic queue + its ha-all mirroring policy), created on first use."""
    cluster.rabbitmqctl(0, "add_vhost", SEED_VHOST)
    cluster.rabbitmqctl(0, "set_permissions", "-p", SEED_VHOST, cluster.user, ".*", ".*", ".*")
    name, pattern, definition = SEED_POLICY
    cluster.rabbitmqctl(0, "set_policy", "-p", SEED_VHOST, "--priority", "1", name, pattern, definition)
    return tuple(url.rsplit("/", 1)[0] + "/" + SEED_VHOST for url in cluster.urls())


def ha_app(target: PlanTarget) -> Any:
    return make_app(from_env({wire.ENV_BROKER_URLS: ",".join(broker_urls(target.cluster))}))


# -------------------------------------------------------------------- sections ----


def record_publish(bench: Bench, result: bench_publish.PublishBench) -> None:
    bench.figures.update(result.figures())
    bench.details["publish"] = result.to_json()


def bench_publish_section(bench: Bench, target: PlanTarget, sizes: Sizes, say: Callable[[str], None]) -> None:
    target.stop_workers()
    app = ha_app(target)
    try:
        result = bench_publish.run_publish_bench(
            app,
            rounds=sizes.publish_rounds,
            count=sizes.publish_count,
            simple_count=sizes.simple_count,
            windows=sizes.windows,
            sweep_count=sizes.sweep_count,
            say=say,
        )
    finally:
        app.close()
    record_publish(bench, result)


def consume_variants(worker_prefetch: int) -> list[tuple[str, int, int]]:
    """(figure, prefetch, ack_every): the ceiling, with multiple-acks, and at the worker's own prefetch."""
    return [
        ("consume_raw_per_s", CEILING_PREFETCH, 1),
        ("consume_raw_multiack_per_s", CEILING_PREFETCH, MULTI_ACK_EVERY),
        ("consume_raw_worker_prefetch_per_s", worker_prefetch, 1),
    ]


def record_consume(bench: Bench, runs: list[tuple[str, bench_ceiling.ConsumeRun]]) -> None:
    for key in dict.fromkeys(label for label, _ in runs):
        bench.figures[key] = statistics.median(r.per_s for label, r in runs if label == key)
    bench.details["consume"] = [{"figure": label, **r.to_json()} for label, r in runs]


def bench_consume_section(bench: Bench, target: PlanTarget, sizes: Sizes, say: Callable[[str], None]) -> None:
    """Prefill with the pipelined publisher, drain with a plain consumer; variants interleaved."""
    target.stop_workers()
    concurrency = int(bench_pods.planned_env(target, wire.ENV_CONCURRENCY) or 1)
    multiplier = int(bench_pods.planned_env(target, wire.ENV_PREFETCH_MULTIPLIER) or 1)
    app = ha_app(target)
    runs: list[tuple[str, bench_ceiling.ConsumeRun]] = []
    try:
        for _ in range(sizes.consume_rounds):
            for key, prefetch, ack_every in consume_variants(concurrency * multiplier):
                bench_publish.purge(app)
                filled = publish_pipelined(app, record_plan(sizes.consume_count), lambda _: None)
                if not filled.ok:
                    raise RuntimeError(f"prefilling the raw consumer's queue failed: {filled.error}")
                run = bench_ceiling.consume_raw(app, sizes.consume_count, prefetch=prefetch, ack_every=ack_every)
                runs.append((key, run))
                say(f"raw consume (prefetch {prefetch}, ack every {ack_every}): {run.per_s:.0f}/s")
        bench_publish.purge(app)
    finally:
        app.close()
    record_consume(bench, runs)


def record_throughput(bench: Bench, runs: list[tuple[str, bench_workers.ThroughputRun]]) -> None:
    def median(label: str, task_ms: int) -> float | None:
        rates = [r.per_s for lab, r in runs if lab == label and r.task_ms == task_ms]
        if not rates and label == "seed-same-pool":
            return median("seed", task_ms)
        return statistics.median(rates) if rates else None

    for suffix, task_ms in (("", 0), ("_10ms", SHORT_TASK_MS)):
        bench.figures[f"throughput_ha{suffix}_per_s"] = median("ha", task_ms)
        bench.figures[f"throughput_seed{suffix}_per_s"] = median("seed", task_ms)
        bench.figures[f"throughput_seed_same_pool{suffix}_per_s"] = median("seed-same-pool", task_ms)
        if any(label == "ha-seed-prefetch" for label, _ in runs):
            bench.figures[f"throughput_ha_seed_prefetch{suffix}_per_s"] = median("ha-seed-prefetch", task_ms)
    bench.details["throughput"] = [{"variant": label, **r.to_json()} for label, r in runs]


def bench_throughput_section(
    bench: Bench,
    target: PlanTarget,
    results: Path,
    seed_cluster: LocalCluster,
    *,
    work: Path,
    sizes: Sizes,
    profile: Path | None,
    say: Callable[[str], None],
) -> None:
    """The plan's worker pod (its own concurrency and prefetch) vs the seed's worker as it ran
    (Celery's defaults: one pool process per CPU, prefetch 4) and, where the pools differ, the
    seed with the plan's pool size; variant by variant, so background load falls on both."""
    cores = os.cpu_count() or 1
    seed = seed_urls(seed_cluster)
    pool = int(bench_pods.planned_env(target, wire.ENV_CONCURRENCY) or 1)
    seed_as_it_ran = bench_workers.SEED_TUNING
    seed_variants = [("seed", seed_as_it_ran)]
    if pool != seed_as_it_ran.concurrency:
        seed_variants.append(("seed-same-pool", bench_workers.WorkerTuning(pool, seed_as_it_ran.prefetch_multiplier)))
    runs: list[tuple[str, bench_workers.ThroughputRun]] = []
    for _ in range(sizes.throughput_rounds):
        for task_ms, count in ((0, sizes.noop_tasks), (SHORT_TASK_MS, sizes.short_tasks)):
            runs.append(
                ("ha", bench_pods.measure_pod_throughput(target, results, task_ms=task_ms, count=count, say=say))
            )
            if sizes.same_prefetch:
                # The plan's pod with the seed's prefetch: what is left is the queue type and late acks.
                same = bench_pods.measure_pod_throughput(
                    target,
                    results,
                    task_ms=task_ms,
                    count=count,
                    say=say,
                    prefetch_multiplier=bench_workers.SEED_TUNING.prefetch_multiplier,
                )
                runs.append(("ha-seed-prefetch", same))
            for label, tuning in seed_variants:
                run = bench_workers.measure_throughput(
                    Profile.SEED, seed, work / "throughput", task_ms=task_ms, count=count, tuning=tuning, say=say
                )
                runs.append((label, run))
    record_throughput(bench, runs)
    if profile:
        bench.details["profile_ha_noop"] = profile_ha_noop(target, results, profile, sizes, say)
    bench.details["ha_worker"] = bench_pods.pod_details(target)
    bench.details["seed_worker"] = {"cores": cores, "concurrency": seed_as_it_ran.concurrency, "prefetch": 4}
    # Evidence that the seed really ran its 2018 setup: a classic queue under the ha-all policy.
    bench.details["seed_queue"] = seed_cluster.rabbitmqctl(
        0, "-q", "list_queues", "-p", SEED_VHOST, "name", "type", "policy", "--no-table-headers"
    ).strip()


PROFILE_SECONDS: Final = 8


def profile_ha_noop(
    target: PlanTarget, results: Path, out: Path, sizes: Sizes, say: Callable[[str], None]
) -> dict[str, Any]:
    """An extra no-op run of the plan's worker pod (not counted in the figures) under py-spy,
    sampled once it is busy: where the worker's CPU goes."""
    # Kept beside results.json: the raw stacks (flamegraph.pl / speedscope read them).
    profiler = bench_profile.Profiler(out / "profile-ha-noop.raw", PROFILE_SECONDS)

    def attach_when_busy(pid: int) -> None:
        poll(lambda: bench_workers.line_count(results) >= 200, 120, "the profiled worker to be busy", interval=0.1)
        profiler.attach(pid, bench_pods.worker_pids(target))

    count = max(sizes.noop_tasks, 3_000) * 2
    run = bench_pods.measure_pod_throughput(
        target, results, task_ms=0, count=count, say=say, on_running=attach_when_busy
    )
    summary = profiler.finish()
    summary["throughput_while_profiled_per_s"] = round(run.per_s, 1)
    for role in ("main", "pool"):
        part = summary.get(role, {})
        top = ", ".join(f"{e['function']} {e['share']:.0%}" for e in part.get("self", [])[:4])
        say(
            f"profile ({role}, {part.get('samples', 0)} samples, {part.get('waiting_share', 0):.0%} blocked): "
            f"busy in {top}"
        )
    return summary


def record_scale(bench: Bench, rows: list[bench_workers.ScaleRun]) -> None:
    bench.details["scale"] = [r.to_json() for r in rows]
    for row in rows:
        bench.figures[f"scale_{row.tasks}_drain_seconds"] = row.drain_seconds
        bench.figures[f"scale_{row.tasks}_scheduler_peak_rss_mib"] = row.scheduler_peak_rss_kb / 1024
        bench.figures[f"scale_{row.tasks}_worker_peak_rss_mib"] = row.worker_peak_rss_kb / 1024
        bench.figures[f"scale_{row.tasks}_lost"] = row.lost


def bench_scale_section(
    bench: Bench, target: PlanTarget, results: Path, *, work: Path, sizes: Sizes, say: Callable[[str], None]
) -> None:
    rows = [bench_pods.measure_pod_scale(target, results, work, count=n, say=say) for n in sizes.scale]
    record_scale(bench, rows)


def _drill_json(result: DrillResult, keep_pods: bool = False) -> dict[str, Any]:
    data = result.to_json()
    for bulky in ("versions", "deltas", *(() if keep_pods else ("pod_events",))):
        data.pop(bulky, None)
    return data


def _plan_drill(target: PlanTarget, results: Path, options: DrillOptions, console: Console) -> DrillResult:
    target.reset()
    empty_results(results)
    return drive(options, target=target, results=results, console=console)


def record_kill_broker(bench: Bench, runs: list[dict[str, Any]]) -> None:
    failovers = [r["failover_seconds"] for r in runs]
    measured = [f for f in failovers if f is not None]
    bench.figures["failover_kill_broker_seconds"] = None if None in failovers or not runs else max(measured)
    bench.figures["failover_kill_broker_median_seconds"] = statistics.median(measured) if measured else None
    gaps = [r["max_gap_seconds"] for r in runs if r["max_gap_seconds"] is not None]
    bench.figures["failover_kill_broker_max_gap_seconds"] = max(gaps) if gaps else None
    bench.figures["failover_kill_broker_lost"] = sum(r["lost"] for r in runs)
    bench.details["failover_kill_broker"] = runs


def bench_failover_section(
    bench: Bench,
    target: PlanTarget,
    plan: Path,
    results: Path,
    sizes: Sizes,
    *,
    console: Console,
    say: Callable[[str], None],
) -> None:
    """The drills' kill-broker (repeated: the figure is the *worst* run) and partition-node, on the plan."""
    runs = []
    for n in range(1, sizes.kill_runs + 1):
        options = DrillOptions(scenario=Scenario.KILL_BROKER, tasks=sizes.failover_tasks, plan=plan)
        result = _plan_drill(target, results, options, console)
        slow = result.failover_seconds is None or result.failover_seconds >= FAILOVER_KILL_GOAL_S
        # A slow failover must be explainable afterwards: what the pods went through, what the workers logged.
        data = _drill_json(result, keep_pods=slow)
        if slow:
            data["worker_logs"] = bench_pods.worker_logs(target)
        runs.append(data)
        say(
            f"kill-broker {n}/{sizes.kill_runs}: failover {data['failover_seconds']} s, longest gap "
            f"{data['max_gap_seconds']} s, lost {data['lost']}, duplicates {data['duplicates']}"
        )
    record_kill_broker(bench, runs)
    if sizes.partition:
        options = DrillOptions(scenario=Scenario.PARTITION_NODE, tasks=sizes.failover_tasks, plan=plan)
        result = _plan_drill(target, results, options, console)
        bench.figures["failover_partition_node_seconds"] = result.failover_seconds
        bench.figures["failover_partition_node_max_gap_seconds"] = result.max_gap_seconds
        bench.figures["failover_partition_node_lost"] = result.lost
        bench.details["failover_partition_node"] = _drill_json(result)
        say(
            f"partition-node: failover {result.failover_seconds} s, longest gap {result.max_gap_seconds} s, "
            f"lost {result.lost}, duplicates {result.duplicates}"
        )


# -------------------------------------------------------------------- reporting ----


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}"


def figure_rows(bench: Bench) -> list[tuple[str, str, str, str]]:
    """(figure, value, ratio, command) per measured figure."""
    f, r = bench.figures, bench.ratios()
    cmd = ".venv/bin/python -m bench --only {}"
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, key: str, unit: str, ratio: str, section: str) -> None:
        if key in f:
            rows.append((label, _fmt(f[key], unit), ratio, cmd.format(section)))

    add("publish, raw unconfirmed (loop), 4.3", "publish_raw_per_s", "/s", "1.00 (baseline)", "publish")
    add(
        "publish, raw unconfirmed (until in the queue), 4.3",
        "publish_raw_ingest_per_s",
        "/s",
        f"{_fmt(r['raw_ingest_vs_raw'])} x raw",
        "publish",
    )
    add(
        f"publish, pipelined confirms (window {DEFAULT_WINDOW}), 4.3",
        "publish_confirmed_per_s",
        "/s",
        f"{_fmt(r['confirmed_vs_raw'])} x raw, {_fmt(r['confirmed_vs_simple'])} x simple",
        "publish",
    )
    add(
        "publish, one confirm per task (send_task), 4.3",
        "publish_confirmed_simple_per_s",
        "/s",
        f"{_fmt(r['simple_vs_raw'])} x raw",
        "publish",
    )
    add(
        f"raw consume-and-ack (prefetch {CEILING_PREFETCH}, ack each), 4.3",
        "consume_raw_per_s",
        "/s",
        "1.00 (ceiling)",
        "consume",
    )
    add(
        f"raw consume, multiple-ack every {MULTI_ACK_EVERY}, 4.3",
        "consume_raw_multiack_per_s",
        "/s",
        f"{_fmt(r['consume_multiack_vs_raw'])} x ceiling",
        "consume",
    )
    add(
        "raw consume at the worker's prefetch count, ack each, 4.3",
        "consume_raw_worker_prefetch_per_s",
        "/s",
        f"{_fmt(r['consume_worker_prefetch_vs_raw'])} x ceiling",
        "consume",
    )
    for suffix, what in (("", "no-op"), ("_10ms", f"{SHORT_TASK_MS} ms")):
        ceiling = (
            f", {_fmt(r['throughput_ha_vs_consume_raw'])} x raw ceiling, "
            f"{_fmt(r['throughput_ha_vs_consume_worker_prefetch'])} x raw at its prefetch"
            if not suffix
            else ""
        )
        add(
            f"worker throughput, ha (plan's worker pod, 4.3), {what}",
            f"throughput_ha{suffix}_per_s",
            "/s",
            f"{_fmt(r[f'throughput_ha_vs_seed{suffix}'])} x seed, "
            f"{_fmt(r[f'throughput_ha_vs_seed_same_pool{suffix}'])} x seed with ha's pool{ceiling}",
            "throughput",
        )
        add(
            f"worker throughput, ha pod with the seed's prefetch (4), {what}",
            f"throughput_ha_seed_prefetch{suffix}_per_s",
            "/s",
            f"{_fmt(r[f'throughput_ha_seed_prefetch_vs_seed_same_pool{suffix}'])} x seed with ha's pool"
            + ("" if suffix else f", {_fmt(r['throughput_ha_seed_prefetch_vs_consume_raw'])} x raw ceiling"),
            "throughput",
        )
        add(
            f"worker throughput, seed (as it ran, 3.10), {what}",
            f"throughput_seed{suffix}_per_s",
            "/s",
            "1.00",
            "throughput",
        )
        if f.get(f"throughput_seed_same_pool{suffix}_per_s") != f.get(f"throughput_seed{suffix}_per_s"):
            add(
                f"worker throughput, seed with ha's pool, {what}",
                f"throughput_seed_same_pool{suffix}_per_s",
                "/s",
                "-",
                "throughput",
            )
    add(
        "failover, kill-broker (worst run)",
        "failover_kill_broker_seconds",
        " s",
        f"goal < {FAILOVER_KILL_GOAL_S} s; median {_fmt(f.get('failover_kill_broker_median_seconds'), ' s')}, "
        f"{len(bench.details.get('failover_kill_broker', []))} runs",
        "failover",
    )
    add("failover, kill-broker: longest stall", "failover_kill_broker_max_gap_seconds", " s", "-", "failover")
    add("failover, partition-node", "failover_partition_node_seconds", " s", "-", "failover")
    add(
        "failover, partition-node: longest stall",
        "failover_partition_node_max_gap_seconds",
        " s",
        f"goal <= {PARTITION_STALL_GOAL_S} s",
        "failover",
    )
    sizes = sorted(int(k.split("_")[1]) for k in f if k.startswith("scale_") and k.endswith("_drain_seconds"))
    first = sizes[0] if sizes else None
    for n in sizes:
        drain = f[f"scale_{n}_drain_seconds"]
        base = f[f"scale_{first}_drain_seconds"]
        growth = f"{_fmt((drain or 0) / base)} x {first:,}" if base else "-"
        rows.append((f"schedule + drain {n:,} no-op tasks", _fmt(drain, " s"), growth, "make bench SCALE=" + str(n)))
        rows.append(
            (
                f"peak RSS at {n:,}: scheduler / largest worker process",
                f"{_fmt(f[f'scale_{n}_scheduler_peak_rss_mib'], ' MiB')} / "
                f"{_fmt(f[f'scale_{n}_worker_peak_rss_mib'], ' MiB')}",
                "-",
                "make bench SCALE=" + str(n),
            )
        )
    return rows


def print_table(bench: Bench, console: Console) -> None:
    table = Table(title=f"ha-celery bench ({'quick' if bench.quick else 'full'})")
    for column in ("figure", "value", "ratio / goal"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for label, value, ratio, _ in figure_rows(bench):
        table.add_row(label, value, ratio)
    console.print(table)
    for goal in bench.goals():
        met = goal["met"]
        verdict = "[green]met[/]" if met else ("[red]MISSED[/]" if met is False else "[yellow]not measured[/]")
        console.print(f"  {goal['goal']}: {_fmt(goal['value'])} (target {goal['target']}) {verdict}")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in bench.versions.items()))
    m = bench.machine
    console.print(f"machine: {m.get('nproc')} cores, {m.get('memory_mib')} MiB, {m.get('cpu_model')}")
    console.print(load_line(bench))


def markdown_table(bench: Bench, note: str = "") -> str:
    """The table between the markers; ``note`` (a busy machine's, ``busy.Verdict``) opens its header line."""
    m, v = bench.machine, bench.versions
    lines = [
        MARK_BEGIN,
        "",
        (f"**{note}** " if note else "")
        + f"Measured {datetime.fromtimestamp(bench.started, UTC):%Y-%m-%d %H:%M} UTC by `make bench` on "
        f"{m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_mib')} MiB; {load_line(bench)}. "
        f"ha: RabbitMQ {v.get('rabbitmq_ha')} (the plan's pods), worker image {v.get('worker_image')}; "
        f"seed: RabbitMQ {v.get('rabbitmq_seed')} ({v.get('erlang_seed')}); host clients: Celery {v.get('celery')}, "
        f"kombu {v.get('kombu')}, py-amqp {v.get('amqp')}, Python {v.get('python')}.",
        "",
        "| figure | value | ratio / goal | reproduce |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {label} | {value} | {ratio} | `{command}` |" for label, value, ratio, command in figure_rows(bench)]
    lines += ["", "| goal | value | target | met |", "|---|---:|---|---|"]
    for goal in bench.goals():
        met = {True: "yes", False: "**no**", None: "not measured"}[goal["met"]]
        lines.append(f"| {goal['goal']} | {_fmt(goal['value'])} | {goal['target']} | {met} |")
    lines += ["", MARK_END]
    return "\n".join(lines)


def rewrite_benchmarks_md(path: Path, bench: Bench, note: str = "") -> None:
    text = path.read_text()
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin < 0 or end < begin:
        raise RuntimeError(f"{path} lacks the markers {MARK_BEGIN!r} ... {MARK_END!r}: not rewriting it")
    path.write_text(text[:begin] + markdown_table(bench, note) + text[end + len(MARK_END) :])


def publish_markdown(path: Path, bench: Bench, noisy: bool, console: Console) -> bool:
    """A full run's table into ``path``, unless the machine was busy at start and not ``noisy``
    (then ``path`` is left as it was and the console says why). Whether it was rewritten."""
    verdict = busy.benchmarks_verdict(load_at_start(bench), bench.machine.get("nproc") or 1, noisy)
    if verdict.rewrite:
        rewrite_benchmarks_md(path, bench, verdict.header_note)
        console.print(f"table rewritten in {path} ({verdict.message})")
    else:
        console.print(f"[bold yellow]{verdict.message}[/]")
    return verdict.rewrite


# ---------------------------------------------------------------------- driving ----


def _boot_in_background(stack: contextlib.ExitStack, cluster: LocalCluster) -> Future[LocalCluster]:
    """Start ``cluster`` in a thread; ``stack`` stops it on exit whether or not the boot finished."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-boot")
    boot = executor.submit(cluster.__enter__)

    def stop() -> None:
        # Waits for a boot still under way: a half-started cluster is stopped too (stop() is idempotent).
        with contextlib.suppress(Exception):
            boot.result()
        cluster.stop()
        executor.shutdown()

    stack.callback(stop)
    return boot


def run(  # noqa: PLR0917 - one call site, in main
    sections: tuple[str, ...], sizes: Sizes, quick: bool, plan: Path, profile: Path | None, console: Console
) -> Bench:
    bench = Bench(quick=quick, sections=sections)
    bench.machine = machine_facts()

    def say(text: str) -> None:
        console.print(f"[dim]{time.time() - bench.started:6.1f}s[/] {text}")

    if bench.machine["busy_at_start"]:
        say(
            f"[yellow]busy machine: load average {load_at_start(bench)} at start, above "
            f"{bench.machine['busy_load_threshold']}; other heavy processes: {others_summary(bench, 'start')}[/]"
        )
    try:
        check_complete(plan)
    except IncompletePlanError as error:
        raise SystemExit(f"bench: --plan {error} (make bench does)") from error
    work = Path(tempfile.mkdtemp(prefix="hacel-bench-"))
    # The seed's broker nodes run as the rabbitmq user, who must reach the cluster's directory.
    work.chmod(0o755)
    bench.settings = {
        "plan": str(plan),
        "publish_window": DEFAULT_WINDOW,
        "publish_confirm_timeout_s": timing.PUBLISH_CONFIRM_TIMEOUT_S,
        "broker_heartbeat_s": timing.BROKER_HEARTBEAT_S,
        "ceiling_prefetch": CEILING_PREFETCH,
        "multi_ack_every": MULTI_ACK_EVERY,
        "seed": "Celery defaults (one pool process per CPU, prefetch 4, early ack), classic queue + ha-all, 3.10",
        "sizes": sizes.__dict__,
    }
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        seed_boot: Future[LocalCluster] | None = None
        if "throughput" in sections:
            # Booted beside the plan (both mostly wait on Erlang's start-up): ~25 s saved.
            say("booting the seed's 3-node RabbitMQ 3.10 cluster (in the background)")
            seed_boot = _boot_in_background(stack, LocalCluster(work / "seed", nodes=3))
        say(f"booting {plan} on the pod runner (RabbitMQ 4.3 StatefulSet, worker Deployment)")
        target, results = stack.enter_context(booted_plan(plan, work / "plan"))
        say("plan booted: brokers and workers Ready")
        seed_cluster = None if seed_boot is None else seed_boot.result()
        if seed_cluster is not None:
            say(f"seed cluster formed in {seed_cluster.formation_seconds or 0:.1f}s")
        record_versions(bench, target, seed_cluster if seed_cluster is not None else "not booted")
        if "publish" in sections:
            bench_publish_section(bench, target, sizes, say)
        if "consume" in sections:
            bench_consume_section(bench, target, sizes, say)
        if "throughput" in sections and seed_cluster is not None:
            bench_throughput_section(
                bench, target, results, seed_cluster, work=work, sizes=sizes, profile=profile, say=say
            )
        if "scale" in sections:
            bench_scale_section(bench, target, results, work=work, sizes=sizes, say=say)
        if "failover" in sections:
            bench_failover_section(bench, target, plan, results, sizes, console=console, say=say)
    bench.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    bench.machine["other_processes_at_end"] = [o.to_json() for o in busy.sample_others()]
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, no sweeps, no partition (< 5 min)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument(
        "--scale",
        type=parse_count,
        default=None,
        metavar="N",
        help="only the scale section, at N/100, N/10 and N tasks (e.g. 1M)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the plan's worker pod with py-spy (uvx, from PyPI) on no-op tasks: where its CPU goes "
        "(always in the full run)",
    )
    parser.add_argument("--plan", type=Path, default=Path("build/plan/dev"), help="the plan to boot (%(default)s)")
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="results directory (default %(default)s)")
    parser.add_argument(
        "--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="file whose table a full run rewrites"
    )
    parser.add_argument(
        "--noisy",
        action="store_true",
        help=f"rewrite --markdown even when the 1-minute load average at start was above "
        f"{busy.BUSY_LOAD_PER_CORE} x cores (the table's header then says the machine was busy)",
    )
    args = parser.parse_args(argv)
    if args.scale is not None and (args.quick or args.only):
        parser.error("--scale runs the scale section alone: not with --quick or --only")
    sections = ("scale",) if args.scale else tuple(s for s in SECTIONS if not args.only or s in args.only)
    sizes = scale_sizes(args.scale) if args.scale else QUICK if args.quick else FULL
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    # Workers are started with this environment: make `-A app.celery_app` importable from any cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    args.out.mkdir(parents=True, exist_ok=True)
    full = not args.quick and not args.only and args.scale is None
    # The full run explains its worker-vs-ceiling ratio with a profile; others only when asked.
    profile = args.out if args.profile or full else None
    bench = run(sections, sizes, args.quick, args.plan, profile, console)
    bench.settings["noisy"] = args.noisy
    out = args.out / ("results.json" if args.scale is None else f"results-scale-{args.scale}.json")
    out.write_text(json.dumps(bench.to_json(), indent=2) + "\n")
    print_table(bench, console)
    console.print(f"results: {out}")
    if full:
        publish_markdown(args.markdown, bench, args.noisy, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
