"""`python -m bench [--quick]`: publish rates, worker throughput, failover and scale, side by side.

Boots one local 3-node RabbitMQ 3.10 cluster and measures on it, in one run, everything
whose *ratio* matters: other clusters may share this machine's cores, so absolute rates
move from run to run while a ratio of two figures measured minutes apart on the same
cluster is what can be compared. Writes ``build/bench/results.json`` and prints a table;
the full run (no ``--quick``, no ``--only``) also rewrites the table in BENCHMARKS.md.

Sections (``--only`` picks some): ``publish`` (raw vs pipelined vs one confirm per task),
``throughput`` (ha vs seed worker config, no-op and 10 ms tasks), ``scale`` (schedule and
drain 1k/10k/100k), ``failover`` (kill-broker on this cluster; partition-broker, full run
only, on a cluster of network namespaces). Benchmarks print figures; nothing here asserts.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from app.config import from_env
from app.factory import make_app
from app.publish import DEFAULT_WINDOW
from bench import publish as bench_publish
from bench import workers as bench_workers
from contract import timing, wire
from drill.profiles import SEED_POLICY, Profile, ProfileRuntime
from drill.runner import DrillOptions, DrillResult, drive, run_drill
from drill.scenarios import Scenario
from drill.targets import LocalTarget
from harness.cluster import LocalCluster
from harness.workers import WorkerPool

ROOT: Final = Path(__file__).resolve().parent.parent
SECTIONS: Final = ("publish", "throughput", "scale", "failover")
SEED_VHOST: Final = "seed"
"""The seed's classic queue is also named ``celery``: it needs a vhost of its own."""
MARK_BEGIN: Final = "<!-- bench-table:begin (written by `make bench`; edits between the markers are lost) -->"
MARK_END: Final = "<!-- bench-table:end -->"
PUBLISH_GOAL: Final = 0.6
FAILOVER_KILL_GOAL_S: Final = 2.0


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; the quick run keeps the whole bench under 3 minutes."""

    publish_rounds: int
    publish_count: int
    simple_count: int
    windows: tuple[int, ...]
    sweep_count: int
    throughput_rounds: int
    noop_tasks: int
    short_tasks: int
    tuning_sweep: bool
    scale: tuple[int, ...]
    failover_tasks: int
    kill_runs: int
    partition: bool


QUICK: Final = Sizes(
    publish_rounds=2,
    publish_count=10_000,
    simple_count=1_000,
    windows=(),
    sweep_count=0,
    throughput_rounds=1,
    noop_tasks=2_000,
    short_tasks=1_000,
    tuning_sweep=False,
    scale=(1_000, 10_000),
    failover_tasks=1_500,
    kill_runs=1,
    partition=False,
)
FULL: Final = Sizes(
    publish_rounds=3,
    publish_count=30_000,
    simple_count=2_000,
    windows=(16, 64, 256, 512, 1024, 2048, 4096, 8192),
    sweep_count=10_000,
    throughput_rounds=2,
    noop_tasks=8_000,
    short_tasks=3_000,
    tuning_sweep=True,
    scale=(1_000, 10_000, 100_000),
    failover_tasks=4_000,
    kill_runs=3,
    partition=True,
)
SHORT_TASK_MS: Final = 10


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
            "throughput_ha_vs_seed": ratio("throughput_ha_per_s", "throughput_seed_per_s"),
            "throughput_ha_vs_seed_same_pool": ratio("throughput_ha_per_s", "throughput_seed_same_pool_per_s"),
            "throughput_ha_vs_seed_10ms": ratio("throughput_ha_10ms_per_s", "throughput_seed_10ms_per_s"),
            "throughput_ha_vs_seed_same_pool_10ms": ratio(
                "throughput_ha_10ms_per_s", "throughput_seed_same_pool_10ms_per_s"
            ),
        }

    def goals(self) -> list[dict[str, Any]]:
        r, f = self.ratios(), self.figures
        bound = self.settings.get("partition_detection_bound_s")

        def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
            return None if value is None else ok(value)

        kill = f.get("failover_kill_broker_seconds")
        gap = f.get("failover_partition_broker_max_gap_seconds")
        rows: list[tuple[str, float | None, str, bool | None]] = [
            (
                "pipelined confirmed >= 0.6x raw unconfirmed",
                r["confirmed_vs_raw"],
                f">= {PUBLISH_GOAL}",
                check(r["confirmed_vs_raw"], lambda v: v >= PUBLISH_GOAL),
            ),
            (
                "ha throughput >= seed, no-op (seed as it ran)",
                r["throughput_ha_vs_seed"],
                ">= 1.0",
                check(r["throughput_ha_vs_seed"], lambda v: v >= 1.0),
            ),
            (
                f"ha throughput >= seed, {SHORT_TASK_MS} ms (seed as it ran)",
                r["throughput_ha_vs_seed_10ms"],
                ">= 1.0",
                check(r["throughput_ha_vs_seed_10ms"], lambda v: v >= 1.0),
            ),
            (
                f"ha throughput >= seed, {SHORT_TASK_MS} ms (seed with ha's pool)",
                r["throughput_ha_vs_seed_same_pool_10ms"],
                ">= 1.0",
                check(r["throughput_ha_vs_seed_same_pool_10ms"], lambda v: v >= 1.0),
            ),
            (
                "kill-broker failover < 2 s (worst run)",
                kill,
                f"< {FAILOVER_KILL_GOAL_S}",
                check(kill, lambda v: v < FAILOVER_KILL_GOAL_S),
            ),
        ]
        if bound is not None:
            rows.append(
                (
                    "partition: longest stall within the heartbeat detection bound",
                    gap,
                    f"<= {bound}",
                    check(gap, lambda v: v <= bound),
                )
            )
        return [{"goal": g, "value": v, "target": t, "met": m} for g, v, t, m in rows]

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: (None if v is None else round(v, 3)) for k, v in self.figures.items()},
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
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    meminfo = Path("/proc/meminfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    total = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model[1].strip() if model else platform.processor() or "unknown",
        "memory_mib": int(total[1]) // 1024 if total else None,
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions_of(cluster: LocalCluster) -> dict[str, str]:
    erlang = cluster.cli(0, "rabbitmq-diagnostics", "-q", "erlang_version").strip()
    return {
        "rabbitmq": cluster.rabbitmqctl(0, "-q", "version").strip(),
        "erlang": erlang.splitlines()[-1] if erlang else "unknown",
        "celery": version("celery"),
        "kombu": version("kombu"),
        "amqp": version("amqp"),
        "python": platform.python_version(),
    }


def seed_urls(cluster: LocalCluster) -> tuple[str, ...]:
    """The seed's vhost (classic queue + its ha-all mirroring policy), created on first use."""
    cluster.rabbitmqctl(0, "add_vhost", SEED_VHOST)
    cluster.rabbitmqctl(0, "set_permissions", "-p", SEED_VHOST, cluster.user, ".*", ".*", ".*")
    name, pattern, definition = SEED_POLICY
    cluster.rabbitmqctl(0, "set_policy", "-p", SEED_VHOST, "--priority", "1", name, pattern, definition)
    return tuple(url.rsplit("/", 1)[0] + "/" + SEED_VHOST for url in cluster.urls())


# -------------------------------------------------------------------- sections ----


def bench_publish_section(bench: Bench, cluster: LocalCluster, sizes: Sizes, say: Callable[[str], None]) -> None:
    app = make_app(from_env({wire.ENV_BROKER_URLS: ",".join(cluster.urls())}))
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
    bench.figures.update(result.figures())
    bench.details["publish"] = result.to_json()


def bench_throughput_section(
    bench: Bench, cluster: LocalCluster, work: Path, sizes: Sizes, say: Callable[[str], None]
) -> None:
    """ha (tuned per task length) vs the seed as it ran (Celery's defaults: one pool process per
    CPU, prefetch 4) and, where the pools differ, the seed with ha's pool size too."""
    cores = os.cpu_count() or 1
    ha_urls, seed = tuple(cluster.urls()), seed_urls(cluster)
    runs: list[tuple[str, bench_workers.ThroughputRun]] = []
    for task_ms, count in ((0, sizes.noop_tasks), (SHORT_TASK_MS, sizes.short_tasks)):
        tuning = bench_workers.tuning_for(task_ms, cores)
        variants = [("ha", Profile.HA, ha_urls, tuning), ("seed", Profile.SEED, seed, bench_workers.SEED_TUNING)]
        if tuning.concurrency != bench_workers.SEED_TUNING.concurrency:
            variants.append(("seed-same-pool", Profile.SEED, seed, tuning))
        for _ in range(sizes.throughput_rounds):
            # Interleaved: every variant sees the same background load.
            for label, profile, urls, variant_tuning in variants:
                run = bench_workers.measure_throughput(
                    profile, urls, work / "throughput", task_ms=task_ms, count=count, tuning=variant_tuning, say=say
                )
                runs.append((label, run))

    def median(label: str, task_ms: int) -> float:
        rates = [r.per_s for lab, r in runs if lab == label and r.task_ms == task_ms]
        if not rates and label == "seed-same-pool":
            return median("seed", task_ms)
        return statistics.median(rates)

    for suffix, task_ms in (("", 0), ("_10ms", SHORT_TASK_MS)):
        bench.figures[f"throughput_ha{suffix}_per_s"] = median("ha", task_ms)
        bench.figures[f"throughput_seed{suffix}_per_s"] = median("seed", task_ms)
        bench.figures[f"throughput_seed_same_pool{suffix}_per_s"] = median("seed-same-pool", task_ms)
    bench.details["throughput"] = [{"variant": label, **r.to_json()} for label, r in runs]
    # Evidence that the seed really ran its 2018 setup: a classic queue under the ha-all policy.
    bench.details["seed_queue"] = cluster.rabbitmqctl(
        0, "-q", "list_queues", "-p", SEED_VHOST, "name", "type", "policy", "--no-table-headers"
    ).strip()
    if sizes.tuning_sweep:
        sweep: list[bench_workers.ThroughputRun] = []
        candidates = {
            0: [bench_workers.WorkerTuning(c, p) for c, p in ((cores, 1), (cores, 4), (cores, 16), (2 * cores, 16))],
            SHORT_TASK_MS: [
                bench_workers.WorkerTuning(c, p)
                for c, p in ((cores, 1), (2 * cores, 4), (4 * cores, 1), (4 * cores, 4))
            ],
        }
        for task_ms, tunings in candidates.items():
            count = sizes.noop_tasks if task_ms == 0 else sizes.short_tasks
            for tuning in tunings:
                sweep.append(
                    bench_workers.measure_throughput(
                        Profile.HA, ha_urls, work / "tuning", task_ms=task_ms, count=count, tuning=tuning, say=say
                    )
                )
        bench.details["tuning_sweep"] = [r.to_json() for r in sweep]


def bench_scale_section(
    bench: Bench, cluster: LocalCluster, work: Path, sizes: Sizes, say: Callable[[str], None]
) -> None:
    tuning = bench_workers.tuning_for(0, os.cpu_count() or 1)
    rows = [
        bench_workers.measure_scale(tuple(cluster.urls()), work / "scale", count=n, tuning=tuning, workers=1, say=say)
        for n in sizes.scale
    ]
    bench.details["scale"] = [r.to_json() for r in rows]
    for row in rows:
        bench.figures[f"scale_{row.tasks}_drain_seconds"] = row.drain_seconds
        bench.figures[f"scale_{row.tasks}_scheduler_peak_rss_mib"] = row.scheduler_peak_rss_kb / 1024
        bench.figures[f"scale_{row.tasks}_worker_peak_rss_mib"] = row.worker_peak_rss_kb / 1024
        bench.figures[f"scale_{row.tasks}_worker_total_rss_mib"] = row.worker_total_rss_kb / 1024


def _drill_json(result: DrillResult) -> dict[str, Any]:
    data = result.to_json()
    data.pop("versions", None)
    return data


def _kill_broker_once(cluster: LocalCluster, work: Path, sizes: Sizes, console: Console) -> dict[str, Any]:
    options = DrillOptions(scenario=Scenario.KILL_BROKER, profile=Profile.HA, tasks=sizes.failover_tasks)
    results = bench_workers.fresh_dir(work / "failover" / "results")
    state = bench_workers.fresh_dir(work / "failover" / "state")
    app = make_app(from_env({wire.ENV_BROKER_URLS: ",".join(cluster.urls())}))
    try:
        bench_publish.purge(app)
    finally:
        app.close()
    runtime = ProfileRuntime(options.profile, tuple(cluster.urls()), results, options.concurrency)
    pool = WorkerPool(runtime, state)
    try:
        target = LocalTarget(cluster, runtime, pool, options.workers)
        result = drive(options, target=target, results=results, console=console)
        data = _drill_json(result)
        if result.failover_seconds is None or result.failover_seconds >= FAILOVER_KILL_GOAL_S:
            # A slow failover must be explainable afterwards: keep what the workers logged.
            data["worker_logs"] = {f"w{i}": pool.log_tail(f"w{i}", 25) for i in range(options.workers)}
    finally:
        pool.stop()
    return data


def bench_kill_broker(
    bench: Bench, cluster: LocalCluster, work: Path, sizes: Sizes, *, console: Console, say: Callable[[str], None]
) -> None:
    """The kill-broker drill (drill.runner's own loop and fault) on the bench's cluster, repeated:
    the figure is the *worst* run, the median is shown beside it."""
    runs = []
    for n in range(1, sizes.kill_runs + 1):
        data = _kill_broker_once(cluster, work, sizes, console)
        runs.append(data)
        say(
            f"kill-broker {n}/{sizes.kill_runs}: failover {data['failover_seconds']} s, longest gap "
            f"{data['max_gap_seconds']} s, lost {data['lost']}, duplicates {data['duplicates']}"
        )
    failovers = [r["failover_seconds"] for r in runs]
    measured = [f for f in failovers if f is not None]
    bench.figures["failover_kill_broker_seconds"] = None if None in failovers else max(measured)
    bench.figures["failover_kill_broker_median_seconds"] = statistics.median(measured) if measured else None
    gaps = [r["max_gap_seconds"] for r in runs if r["max_gap_seconds"] is not None]
    bench.figures["failover_kill_broker_max_gap_seconds"] = max(gaps) if gaps else None
    bench.figures["failover_kill_broker_lost"] = sum(r["lost"] for r in runs)
    bench.details["failover_kill_broker"] = runs


def bench_partition(bench: Bench, sizes: Sizes, console: Console, say: Callable[[str], None]) -> None:
    """The partition drill: needs its own cluster (one network namespace per node) and root."""
    if os.geteuid() != 0:
        say("[yellow]partition-broker skipped: network namespaces need root[/]")
        return
    result = run_drill(
        DrillOptions(scenario=Scenario.PARTITION_BROKER, profile=Profile.HA, tasks=sizes.failover_tasks), console
    )
    bench.figures["failover_partition_broker_seconds"] = result.failover_seconds
    bench.figures["failover_partition_broker_max_gap_seconds"] = result.max_gap_seconds
    bench.figures["failover_partition_broker_lost"] = result.lost
    bench.details["failover_partition_broker"] = _drill_json(result)
    say(
        f"partition-broker: failover {result.failover_seconds} s, longest gap {result.max_gap_seconds} s, "
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

    add("publish, raw unconfirmed (loop)", "publish_raw_per_s", "/s", "1.00 (baseline)", "publish")
    add(
        "publish, raw unconfirmed (until in the queue)",
        "publish_raw_ingest_per_s",
        "/s",
        f"{_fmt(r['raw_ingest_vs_raw'])} x raw",
        "publish",
    )
    add(
        f"publish, pipelined confirms (window {DEFAULT_WINDOW})",
        "publish_confirmed_per_s",
        "/s",
        f"{_fmt(r['confirmed_vs_raw'])} x raw, {_fmt(r['confirmed_vs_simple'])} x simple",
        "publish",
    )
    add(
        "publish, one confirm per task (send_task)",
        "publish_confirmed_simple_per_s",
        "/s",
        f"{_fmt(r['simple_vs_raw'])} x raw",
        "publish",
    )
    for suffix, what in (("", "no-op"), ("_10ms", f"{SHORT_TASK_MS} ms")):
        add(
            f"worker throughput, ha (tuned), {what}",
            f"throughput_ha{suffix}_per_s",
            "/s",
            f"{_fmt(r[f'throughput_ha_vs_seed{suffix}'])} x seed, "
            f"{_fmt(r[f'throughput_ha_vs_seed_same_pool{suffix}'])} x seed with ha's pool",
            "throughput",
        )
        add(
            f"worker throughput, seed (as it ran), {what}", f"throughput_seed{suffix}_per_s", "/s", "1.00", "throughput"
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
        f"goal < {FAILOVER_KILL_GOAL_S} s; median {_fmt(f.get('failover_kill_broker_median_seconds'), ' s')}",
        "failover",
    )
    add("failover, kill-broker: longest stall", "failover_kill_broker_max_gap_seconds", " s", "-", "failover")
    bound = bench.settings.get("partition_detection_bound_s")
    add("failover, partition-broker", "failover_partition_broker_seconds", " s", "-", "failover")
    add(
        "failover, partition-broker: longest stall",
        "failover_partition_broker_max_gap_seconds",
        " s",
        f"bound {bound} s" if bound else "-",
        "failover",
    )
    first = f.get("scale_1000_drain_seconds")
    for n in (1_000, 10_000, 100_000):
        key = f"scale_{n}_drain_seconds"
        if key in f:
            growth = f"{_fmt((f[key] or 0) / first)} x 1k" if first else "-"
            rows.append((f"schedule + drain {n:,} no-op tasks", _fmt(f[key], " s"), growth, cmd.format("scale")))
            rows.append(
                (
                    f"peak RSS at {n:,}: scheduler / largest worker process",
                    f"{_fmt(f[f'scale_{n}_scheduler_peak_rss_mib'], ' MiB')} / "
                    f"{_fmt(f[f'scale_{n}_worker_peak_rss_mib'], ' MiB')}",
                    "-",
                    cmd.format("scale"),
                )
            )
    return rows


def _div(f: dict[str, float | None], a: str, b: str) -> float | None:
    x, y = f.get(a), f.get(b)
    return x / y if x is not None and y else None


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


def markdown_table(bench: Bench) -> str:
    m, v = bench.machine, bench.versions
    lines = [
        MARK_BEGIN,
        "",
        f"Measured {datetime.fromtimestamp(bench.started, UTC):%Y-%m-%d %H:%M} UTC by `make bench` on "
        f"{m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_mib')} MiB; load average at start "
        f"{m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}. "
        f"RabbitMQ {v.get('rabbitmq')} ({v.get('erlang')}), Celery {v.get('celery')}, kombu {v.get('kombu')}, "
        f"py-amqp {v.get('amqp')}, Python {v.get('python')}.",
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


def rewrite_benchmarks_md(path: Path, bench: Bench) -> None:
    text = path.read_text()
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin < 0 or end < begin:
        raise RuntimeError(f"{path} lacks the markers {MARK_BEGIN!r} ... {MARK_END!r}: not rewriting it")
    path.write_text(text[:begin] + markdown_table(bench) + text[end + len(MARK_END) :])


# ---------------------------------------------------------------------- driving ----


def run(sections: tuple[str, ...], sizes: Sizes, quick: bool, console: Console) -> Bench:
    bench = Bench(quick=quick, sections=sections)
    bench.machine = machine_facts()

    def say(text: str) -> None:
        console.print(f"[dim]{time.time() - bench.started:6.1f}s[/] {text}")

    work = Path(tempfile.mkdtemp(prefix="hacel-bench-"))
    # The broker nodes run as the rabbitmq user, who must reach the cluster's directory.
    work.chmod(0o755)
    try:
        say("booting a 3-node RabbitMQ cluster")
        with LocalCluster(work / "cluster", nodes=3) as cluster:
            say(f"cluster formed in {cluster.formation_seconds or 0:.1f}s")
            bench.versions = versions_of(cluster)
            net_ticktime = cluster.broker_config(0).net_ticktime_s
            bench.settings = {
                "publish_window": DEFAULT_WINDOW,
                "publish_confirm_timeout_s": timing.PUBLISH_CONFIRM_TIMEOUT_S,
                "broker_heartbeat_s": timing.BROKER_HEARTBEAT_S,
                "broker_connect_timeout_s": timing.BROKER_CONNECT_TIMEOUT_S,
                "harness_net_ticktime_s": net_ticktime,
                # A worker on the cut-off node notices after two missed heartbeats, then tries
                # the next URL; the majority drops the node after net_ticktime at the latest.
                "partition_detection_bound_s": max(
                    2 * timing.BROKER_HEARTBEAT_S + timing.BROKER_CONNECT_TIMEOUT_S, int(1.25 * (net_ticktime or 60))
                ),
                "tuning": {
                    "no-op": bench_workers.tuning_for(0, os.cpu_count() or 1).__dict__,
                    f"{SHORT_TASK_MS} ms": bench_workers.tuning_for(SHORT_TASK_MS, os.cpu_count() or 1).__dict__,
                    "seed": "Celery defaults (prefetch 4, early ack), same concurrency as ha",
                },
                "sizes": sizes.__dict__,
            }
            if "publish" in sections:
                bench_publish_section(bench, cluster, sizes, say)
            if "throughput" in sections:
                bench_throughput_section(bench, cluster, work, sizes, say)
            if "scale" in sections:
                bench_scale_section(bench, cluster, work, sizes, say)
            if "failover" in sections:
                # Last on this cluster: it kills and restarts a node.
                bench_kill_broker(bench, cluster, work, sizes, console=console, say=say)
        if "failover" in sections and sizes.partition:
            bench_partition(bench, sizes, console, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, no sweeps, no partition (< 3 min)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="results directory (default %(default)s)")
    parser.add_argument(
        "--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="file whose table a full run rewrites"
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in SECTIONS if not args.only or s in args.only)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    # Workers are started with this environment: make `-A app.celery_app` importable from any cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    bench = run(sections, QUICK if args.quick else FULL, args.quick, console)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "results.json"
    out.write_text(json.dumps(bench.to_json(), indent=2) + "\n")
    print_table(bench, console)
    console.print(f"results: {out}")
    if not args.quick and not args.only:
        rewrite_benchmarks_md(args.markdown, bench)
        console.print(f"table rewritten in {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
