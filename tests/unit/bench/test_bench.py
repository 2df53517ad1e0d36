"""The bench's bookkeeping without a broker: every figure `make bench QUICK=1` promises in
results.json comes out of the functions that record the sections' measurements.

Measurements here are made-up inputs; what is checked is that the quick run's sections feed
``Bench.to_json`` every required key, the ratios and goals computed from them, and the table.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from app.batch import PublishResult
from bench import __main__ as bench_main
from bench.ceiling import ConsumeRun, steady_rate
from bench.profile import summarize
from bench.publish import PublishBench, RawResult
from bench.workers import ScaleRun, ThroughputRun
from drill.runner import DrillOptions, DrillResult
from drill.scenario import Scenario


def _throughput(profile: str, task_ms: int, per_s: float) -> ThroughputRun:
    return ThroughputRun(profile, task_ms, 100, 2, 1, 100, 0, per_s, 50_000)


def _kill_broker(failover: float) -> DrillResult:
    return DrillResult(
        options=DrillOptions(Scenario.KILL_BROKER),
        scheduled=10,
        completed=10,
        lost=0,
        duplicates=1,
        publish=PublishResult(10, (), 1.0),
        fault_at=100.0,
        events=[(100.0, "SIGKILL")],
        finished_at=[99.0, 100.0 + failover],
        started_at=98.0,
        versions={"rabbitmq": "4.3.6"},
        failover_seconds=failover,
        max_gap_seconds=failover,
        throughput_per_s=5.0,
    )


def quick_bench() -> bench_main.Bench:
    """A Bench fed by every section of the quick run, with made-up measurements."""
    bench = bench_main.Bench(quick=True, sections=bench_main.SECTIONS)
    bench_main.record_versions(bench, {"rabbitmq": "4.3.6", "worker image": "bookworm python3.11"}, "3.10.8")
    # A PublishResult counts its confirms from its ids.
    publish = PublishBench(
        raw=[RawResult(1000, 0.5, 0.6)],
        pipelined=[PublishResult(1000, ("x",) * 1000, 0.55)],
        simple=[PublishResult(100, ("x",) * 100, 0.5)],
    )
    bench_main.record_publish(bench, publish)
    bench_main.record_consume(
        bench,
        [
            (key, ConsumeRun(1000, prefetch, every, 1000, 4000.0 + prefetch))
            for key, prefetch, every in bench_main.consume_variants(2)
        ],
    )
    bench_main.record_throughput(
        bench,
        [
            ("ha", _throughput("ha", 0, 900.0)),
            ("seed", _throughput("seed", 0, 600.0)),
            ("ha", _throughput("ha", 10, 190.0)),
            ("seed", _throughput("seed", 10, 180.0)),
        ],
    )
    bench_main.record_scale(bench, [ScaleRun(1000, 1.0, 1000.0, 2.0, 40_000, 60_000, 120_000, 0, 0)])
    bench_main.record_kill_broker(bench, [bench_main._drill_json(_kill_broker(0.4))])
    return bench


def test_the_quick_run_writes_every_required_key() -> None:
    assert bench_main.QUICK.kill_runs >= 1
    assert set(bench_main.SECTIONS) >= {"publish", "consume", "throughput", "failover"}
    data = json.loads(json.dumps(quick_bench().to_json()))
    missing = [key for key in bench_main.REQUIRED_KEYS if data.get(key) is None]
    assert not missing, f"results.json lacks {missing}"
    assert data["rabbitmq_version_ha"] == "4.3.6"
    assert data["rabbitmq_version_seed"] == "3.10.8"
    assert data["publish_raw_per_s"] == 2000.0
    assert data["consume_raw_per_s"] == 4000.0 + bench_main.CEILING_PREFETCH
    assert data["failover_kill_broker_seconds"] == 0.4


def test_ratios_and_goals_come_from_the_same_run() -> None:
    data = quick_bench().to_json()
    assert data["ratios"]["throughput_ha_vs_seed"] == 1.5
    # Same pool on both sides when the seed ran as the plan's pool: the goal reads that ratio.
    assert data["ratios"]["throughput_ha_vs_seed_same_pool"] == 1.5
    goals = {g["goal"]: g for g in data["goals"]}
    noop = goals[f"ha worker >= {bench_main.NOOP_GOAL}x seed, no-op, same pool"]
    assert noop["met"] is True
    ceiling = goals[f"ha worker >= {bench_main.CEILING_GOAL}x raw consume-and-ack ceiling (4.3)"]
    assert ceiling["met"] is False
    assert ceiling["value"] == round(900.0 / (4000.0 + bench_main.CEILING_PREFETCH), 3)
    partition = goals["partition-node: longest stall (4.3)"]
    assert partition["met"] is None, "not measured in the quick run"


def test_the_full_run_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{bench_main.MARK_BEGIN}\nold table\n{bench_main.MARK_END}\noutro\n")
    bench_main.rewrite_benchmarks_md(doc, quick_bench())
    text = doc.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert "old table" not in text
    assert "4.3.6" in text
    assert "3.10.8" in text
    assert "| raw consume-and-ack (prefetch" in text


def _machine(load: float) -> dict[str, object]:
    return {
        "nproc": 2,
        "load_average_at_start": [load, 1.5, 1.2],
        "load_average_at_end": [0.9, 1.4, 1.2],
        "other_processes_at_start": [
            {"pid": 200, "name": "pytest", "cpu_percent": 95.0},
            {"pid": 300, "name": "beam.smp", "cpu_percent": 3.0},
            {"pid": 301, "name": "beam.smp", "cpu_percent": 2.0},
        ],
        "other_processes_at_end": [],
    }


def _publish(tmp_path: Path, load: float, noisy: bool) -> tuple[bool, str, str]:
    """(rewritten, the file's text, what the console said) for a full run that started at ``load``."""
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{bench_main.MARK_BEGIN}\nold table\n{bench_main.MARK_END}\n")
    bench = quick_bench()
    bench.machine = _machine(load)
    out = io.StringIO()
    rewritten = bench_main.publish_markdown(doc, bench, noisy, Console(file=out, width=400))
    return rewritten, doc.read_text(), out.getvalue()


def test_an_idle_machine_s_run_rewrites_the_table_with_the_other_processes(tmp_path: Path) -> None:
    rewritten, text, said = _publish(tmp_path, load=0.6, noisy=False)
    assert rewritten
    assert "old table" not in text
    [header] = [line for line in text.splitlines() if "load average at start" in line]
    assert header.startswith("Measured ")
    assert "other heavy processes at start: pytest 95% CPU, 2 beam.smp 5% CPU; at end: none." in header
    assert "table rewritten" in said


def test_a_busy_machine_s_run_leaves_the_table_and_says_why(tmp_path: Path) -> None:
    rewritten, text, said = _publish(tmp_path, load=2.7, noisy=False)
    assert not rewritten
    assert "old table" in text
    for named in ("not rewritten", "2.70", "1.00", "--noisy"):
        assert named in said


def test_a_busy_machine_s_run_with_noisy_says_so_in_the_header(tmp_path: Path) -> None:
    rewritten, text, _ = _publish(tmp_path, load=2.7, noisy=True)
    assert rewritten
    assert "old table" not in text
    [header] = [line for line in text.splitlines() if "load average at start" in line]
    assert header.startswith("**Measured on a busy machine: load 2.70 at start")


def test_noisy_is_an_option_of_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_main.main(["--noisy", "--scale", "1M", "--quick"])
    # --noisy parsed: the refusal is --scale's, which comes after parsing (nothing is booted).
    error = capsys.readouterr().err
    assert "--scale runs the scale section alone" in error
    assert "unrecognized" not in error


@pytest.mark.parametrize(("text", "count"), [("1M", 1_000_000), ("100k", 100_000), ("2500", 2_500)])
def test_scale_counts(text: str, count: int) -> None:
    assert bench_main.parse_count(text) == count


def test_scale_runs_at_a_hundredth_a_tenth_and_all_of_n() -> None:
    assert bench_main.scale_sizes(1_000_000).scale == (10_000, 100_000, 1_000_000)


def test_steady_rate_leaves_out_the_first_and_last_tenth() -> None:
    # 100 events, one per 10 ms, plus a straggler 10 s later: the straggler does not count.
    stamps = [i * 0.01 for i in range(100)] + [10.0]
    assert steady_rate(stamps) == pytest.approx(101 * 0.8 / (stamps[90] - stamps[10]))


def test_a_py_spy_recording_is_summarised_per_process_role() -> None:
    site = "/usr/local/lib/python3.11/site-packages"
    raw = "\n".join(
        [
            f'process 10:"celery -A app.celery_app worker";thread (0x1);start ({site}/celery/worker/worker.py:200);'
            f"drain_events ({site}/kombu/connection.py:300);read_frame ({site}/amqp/transport.py:40) 30",
            f'process 10:"celery -A app.celery_app worker";thread (0x1);start ({site}/celery/worker/worker.py:200);'
            f"on_task_received ({site}/celery/worker/consumer/consumer.py:600) 10",
            f'process 11:"celery -A app.celery_app worker";thread (0x1);trace_task ({site}/celery/app/trace.py:400) 5',
            f'process 11:"celery -A app.celery_app worker";thread (0x1);_recv ({site}/billiard/connection.py:10) 15',
            "garbage line",
        ]
    )
    summary = summarize(raw, main_pid=10)
    assert summary["main"]["samples"] == 40
    assert summary["main"]["waiting_share"] == 0.0
    # A pool process blocked reading its pipe is waiting, not working.
    assert summary["pool"]["samples"] == 20
    assert summary["pool"]["waiting_share"] == 0.75
    assert summary["pool"]["busy_samples"] == 5
    assert summary["main"]["self"][0] == {"function": "read_frame (amqp/transport.py)", "share": 0.75}
    inclusive = {e["package"]: e["share"] for e in summary["main"]["inclusive"]}
    assert inclusive == {"celery/worker": 1.0, "kombu": 0.75, "amqp": 0.75}
    assert summary["pool"]["inclusive"] == [{"package": "celery/app", "share": 1.0}]
