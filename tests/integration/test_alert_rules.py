"""The alert rules under ``promtool test rules``: for every rule a firing case and a quiet case,
against the very file ``monitoring.rules.rule_groups()`` renders (production timing), plus the
drills' compressed timing on the node-down alert they must see fire and resolve.

Series are written as the real scrapes label them: the broker's jobs and 4.3.6's metric names,
the worker's from ``contract.metrics``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import metrics
from monitoring import rules
from monitoring.rules import PRODUCTION, AlertTiming, duration, rule_groups
from tests.requires import requires

pytestmark = pytest.mark.integration

BROKER = f'job="{metrics.BROKER_JOB}"'
DETAILED = f'job="{metrics.BROKER_DETAILED_JOB}"'
WORKER = f'job="{metrics.WORKER_JOB}"'


def _promtool() -> str:
    requires("promtool")
    found = shutil.which("promtool")
    assert found
    return found


def _node(n: int) -> str:
    return f'instance="rabbitmq-{n}"'


def _replica(n: int, queue: str = "celery", membership: str = "follower") -> str:
    """A quorum queue replica on node ``n``, as ``/metrics/detailed`` reports it."""
    return (
        f'rabbitmq_detailed_queue_info{{{DETAILED},{_node(n)},vhost="/",queue="{queue}",'
        f'queue_type="rabbit_quorum_queue",membership="{membership}"}}'
    )


@dataclass(frozen=True)
class Expect:
    """One alert expected at ``eval_time``: its extra labels and what its templates render to."""

    labels: dict[str, str] = field(default_factory=dict)
    value: str = ""
    """What ``{{ $value }}`` (and ``{{ $value | humanizeDuration }}``) render to."""


@dataclass(frozen=True)
class Case:
    name: str
    alert: str
    series: dict[str, str]
    """Prometheus series selector -> promtool's expanding values notation (one value per interval)."""
    checks: list[tuple[str, list[Expect]]]
    """(eval_time, alerts expected firing then; empty = quiet)."""


def _find_rule(groups: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r["alert"] == alert)


def _expand(template: str, expect: Expect) -> str:
    def one(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr.startswith("$value"):
            return expect.value
        if expr.startswith("$labels."):
            return expect.labels[expr.removeprefix("$labels.")]
        raise AssertionError(f"template {template!r}: {expr!r} has no expansion in the test")

    return re.sub(r"\{\{(.*?)\}\}", one, template)


def _promtool_test(
    case_list: list[Case], tmp_path: Path, timing: AlertTiming = PRODUCTION
) -> subprocess.CompletedProcess[str]:
    groups = rule_groups(timing)
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    tests = []
    for case in case_list:
        rule = _find_rule(groups, case.alert)
        alert_tests = [
            {
                "eval_time": at,
                "alertname": case.alert,
                "exp_alerts": [
                    {
                        "exp_labels": {**rule["labels"], **e.labels},
                        "exp_annotations": {k: _expand(v, e) for k, v in rule["annotations"].items()},
                    }
                    for e in expected
                ],
            }
            for at, expected in case.checks
        ]
        tests.append(
            {
                "name": case.name,
                "interval": duration(timing.scrape_interval_s),
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": alert_tests,
            }
        )
    test_file = tmp_path / "test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rule_file.name],
                "evaluation_interval": duration(timing.evaluation_interval_s),
                "tests": tests,
            },
            sort_keys=False,
        )
    )
    return subprocess.run(
        [_promtool(), "test", "rules", test_file.name],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Production timing: one sample every 30 s, so "x20" is ten minutes. Per alert: the firing case, then the quiet ones.
CASES: dict[str, tuple[Case, ...]] = {
    rules.BROKER_NO_MAJORITY: (
        Case(
            "two of three nodes gone: the survivor reaches no majority",
            rules.BROKER_NO_MAJORITY,
            {
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(0)}}}": "0 0 stale",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(1)}}}": "0 0 stale",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(2)}}}": "0 0 2x20",
            },
            [("30s", []), ("5m", [Expect(value="0")])],
        ),
        Case(
            "one node cut off by a partition: the other two still hold the majority",
            rules.BROKER_NO_MAJORITY,
            {
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(0)}}}": "0 0 1x20",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(1)}}}": "0 0 1x20",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(2)}}}": "0 0 2x20",
            },
            [("5m", [])],
        ),
    ),
    rules.BROKER_NODE_DOWN: (
        Case(
            "a broker pod deleted (no scrape target) and its peers see it unreachable",
            rules.BROKER_NODE_DOWN,
            {
                f"up{{{BROKER},{_node(0)}}}": "1x30",
                f"up{{{BROKER},{_node(1)}}}": "1x30",
                f"up{{{BROKER},{_node(2)}}}": "1 1 stale",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(0)}}}": "0 0 1x28",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(1)}}}": "0 0 1x28",
            },
            [("2m", []), ("5m", [Expect()])],
        ),
        Case(
            "a broker container restarted within a minute: pending, never firing, then resolved",
            rules.BROKER_NODE_DOWN,
            {
                f"up{{{BROKER},{_node(0)}}}": "1x30",
                f"up{{{BROKER},{_node(1)}}}": "1x30",
                f"up{{{BROKER},{_node(2)}}}": "1 1 0 0 1x26",
                f"rabbitmq_unreachable_cluster_peers_count{{{BROKER},{_node(0)}}}": "0 0 1 1 0x26",
            },
            [("90s", []), ("5m", [])],
        ),
    ),
    rules.BROKER_QUORUM_CRITICAL: (
        Case(
            "a node with replicas gone for ten minutes: its queues are at a bare majority",
            rules.BROKER_QUORUM_CRITICAL,
            {
                _replica(0, membership="leader"): "1x40",
                _replica(1): "1x40",
                _replica(2): "1x19 stale",
            },
            [("12m", []), ("18m", [Expect(value="1")])],
        ),
        Case(
            "every replica online; a five-replica queue with one down still tolerates one more loss",
            rules.BROKER_QUORUM_CRITICAL,
            {
                **{_replica(n): "1x40" for n in range(3)},
                **{_replica(n, "big"): ("1x19 stale" if n == 4 else "1x40") for n in range(5)},
            },
            [("18m", [])],
        ),
        Case(
            "a single-replica queue (1-node dev cluster) is always at a bare majority: nothing to page on",
            rules.BROKER_QUORUM_CRITICAL,
            {_replica(0, membership="leader"): "1x40"},
            [("18m", [])],
        ),
    ),
    rules.BROKER_MEMORY_ALARM: (
        Case(
            "memory alarm held",
            rules.BROKER_MEMORY_ALARM,
            {
                f"rabbitmq_alarms_memory_used_watermark{{{BROKER},{_node(0)}}}": "0x20",
                f"rabbitmq_alarms_memory_used_watermark{{{BROKER},{_node(1)}}}": "0 0 1x18",
            },
            [("5m", [Expect(labels={"instance": "rabbitmq-1"})])],
        ),
        Case(
            "one scrape with the alarm up is a spike",
            rules.BROKER_MEMORY_ALARM,
            {f"rabbitmq_alarms_memory_used_watermark{{{BROKER},{_node(1)}}}": "0 0 1 0x17"},
            [("5m", [])],
        ),
    ),
    rules.BROKER_DISK_ALARM: (
        Case(
            "disk alarm held",
            rules.BROKER_DISK_ALARM,
            {f"rabbitmq_alarms_free_disk_space_watermark{{{BROKER},{_node(2)}}}": "0 0 1x18"},
            [("5m", [Expect(labels={"instance": "rabbitmq-2"})])],
        ),
        Case(
            "no disk alarm",
            rules.BROKER_DISK_ALARM,
            {f"rabbitmq_alarms_free_disk_space_watermark{{{BROKER},{_node(2)}}}": "0x20"},
            [("5m", [])],
        ),
    ),
    rules.DEAD_LETTERED_TASKS: (
        Case(
            "three tasks dead-lettered",
            rules.DEAD_LETTERED_TASKS,
            {
                f'rabbitmq_detailed_queue_messages{{{DETAILED},{_node(0)},vhost="/",queue="celery.dlq"}}': "0 0 3x18",
                f'rabbitmq_detailed_queue_messages{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "100x20",
            },
            [("5m", [Expect(labels={"vhost": "/", "queue": "celery.dlq"}, value="3")])],
        ),
        Case(
            "a deep task queue and an empty dead-letter queue",
            rules.DEAD_LETTERED_TASKS,
            {
                f'rabbitmq_detailed_queue_messages{{{DETAILED},{_node(0)},vhost="/",queue="celery.dlq"}}': "0x20",
                f'rabbitmq_detailed_queue_messages{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "1000x20",
            },
            [("5m", [])],
        ),
    ),
    rules.BACKLOG_WITHOUT_CONSUMER: (
        Case(
            "tasks pile up and no worker consumes",
            rules.BACKLOG_WITHOUT_CONSUMER,
            {
                f'rabbitmq_detailed_queue_messages_ready{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "0+10x20",
                f'rabbitmq_detailed_queue_consumers{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "2 2 0x18",
            },
            [("2m", []), ("10m", [Expect(labels={"vhost": "/", "queue": "celery"}, value="200")])],
        ),
        Case(
            "a growing backlog that workers consume; an idle queue without consumers",
            rules.BACKLOG_WITHOUT_CONSUMER,
            {
                f'rabbitmq_detailed_queue_messages_ready{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "0+10x20",
                f'rabbitmq_detailed_queue_consumers{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "2x20",
                f'rabbitmq_detailed_queue_messages_ready{{{DETAILED},{_node(1)},vhost="/b",queue="celery"}}': "0x20",
                f'rabbitmq_detailed_queue_consumers{{{DETAILED},{_node(1)},vhost="/b",queue="celery"}}': "0x20",
            },
            [("10m", [])],
        ),
    ),
    rules.UNACKED_STUCK: (
        Case(
            "five tasks unacked for 25 minutes and no task finished",
            rules.UNACKED_STUCK,
            {
                f'rabbitmq_detailed_queue_messages_unacked{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "5x50",
                f'{metrics.TASKS_SUCCEEDED}{{{WORKER},instance="w-1"}}': "100x50",
                f'{metrics.TASKS_FAILED}{{{WORKER},instance="w-1"}}': "7x50",
            },
            [("10m", []), ("25m", [Expect(labels={"vhost": "/", "queue": "celery"}, value="5")])],
        ),
        Case(
            "tasks unacked all along while workers keep finishing tasks",
            rules.UNACKED_STUCK,
            {
                f'rabbitmq_detailed_queue_messages_unacked{{{DETAILED},{_node(0)},vhost="/",queue="celery"}}': "5x50",
                f'{metrics.TASKS_SUCCEEDED}{{{WORKER},instance="w-1"}}': "100+10x50",
                f'{metrics.TASKS_FAILED}{{{WORKER},instance="w-1"}}': "7x50",
            },
            [("25m", [])],
        ),
    ),
    rules.WORKER_HEARTBEAT_MISSING: (
        Case(
            "a worker's heartbeat stopped at 2m",
            rules.WORKER_HEARTBEAT_MISSING,
            {
                f'{metrics.LAST_HEARTBEAT}{{{WORKER},instance="w-1"}}': "0+30x4 120x30",
                f'{metrics.LAST_HEARTBEAT}{{{WORKER},instance="w-2"}}': "0+30x34",
            },
            [("4m", []), ("10m", [Expect(labels={"job": metrics.WORKER_JOB, "instance": "w-1"}, value="8m 0s")])],
        ),
        Case(
            "heartbeats keep up with the clock",
            rules.WORKER_HEARTBEAT_MISSING,
            {f'{metrics.LAST_HEARTBEAT}{{{WORKER},instance="w-1"}}': "0+30x34"},
            [("10m", [])],
        ),
    ),
    rules.WORKER_RECONNECT_STORM: (
        Case(
            "a worker reconnects every minute",
            rules.WORKER_RECONNECT_STORM,
            {f'{metrics.BROKER_RECONNECTS}{{{WORKER},instance="w-1"}}': "0 0 1 1 2 2 3 3 4 4 5 5 6 6 7 7"},
            [("7m", [Expect(labels={"job": metrics.WORKER_JOB, "instance": "w-1"})])],
        ),
        Case(
            "one reconnect per broker failover, three failovers (a rolling restart)",
            rules.WORKER_RECONNECT_STORM,
            {f'{metrics.BROKER_RECONNECTS}{{{WORKER},instance="w-1"}}': "0x5 1x5 2x5 3x20"},
            [("15m", [])],
        ),
    ),
    rules.BROKER_CERTIFICATE_EXPIRING: (
        Case(
            "one worker reads a node certificate 20 days from its end (another reads 300 days)",
            rules.BROKER_CERTIFICATE_EXPIRING,
            {
                f'{metrics.BROKER_CERTIFICATE_EXPIRY}{{{WORKER},instance="w-1"}}': f"{20 * 86400}x40",
                f'{metrics.BROKER_CERTIFICATE_EXPIRY}{{{WORKER},instance="w-2"}}': f"{300 * 86400}x40",
            },
            # At 15m: 20 days less 15 minutes left.
            [("5m", []), ("15m", [Expect(value="19d 23h 45m 0s")])],
        ),
        Case(
            "certificates 40 days from their end (the next pulumi up renews them), or no TLS reading at all",
            rules.BROKER_CERTIFICATE_EXPIRING,
            {f'{metrics.BROKER_CERTIFICATE_EXPIRY}{{{WORKER},instance="w-1"}}': f"{40 * 86400}x40"},
            [("15m", [])],
        ),
    ),
}


def test_every_alert_has_cases() -> None:
    assert sorted(CASES) == sorted(rules.ALERTS)
    rendered = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert rendered == set(rules.ALERTS)


@pytest.mark.parametrize("alert", rules.ALERTS)
def test_rule_fires_and_stays_quiet(alert: str, tmp_path: Path) -> None:
    firing, *quiet = CASES[alert]
    assert any(expected for _, expected in firing.checks), f"{alert}: the firing case expects no alert"
    for case in quiet:
        assert all(not expected for _, expected in case.checks), f"{alert}: a quiet case expects an alert"
    result = _promtool_test([firing, *quiet], tmp_path)
    assert result.returncode == 0, f"{alert}:\n{result.stdout}\n{result.stderr}"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The harness above can fail: the firing case of node-down, expected quiet, is refused."""
    firing, _ = CASES[rules.BROKER_NODE_DOWN]
    wrong = Case(firing.name, firing.alert, firing.series, [("5m", [])])
    result = _promtool_test([wrong], tmp_path)
    assert result.returncode != 0
    assert rules.BROKER_NODE_DOWN in result.stdout + result.stderr


def test_drill_timing_sees_a_four_second_node_loss(tmp_path: Path) -> None:
    """The drills' compressed timing (60x: 0.5 s scrapes, node-down after 2 s) fires on a broker
    container killed for 4 s, as kill-broker does, and resolves once it is back."""
    drill = PRODUCTION.compressed(60)
    assert drill.scrape_interval_s == 0.5
    assert drill.node_down_for_s == 2
    up = {f"up{{{BROKER},{_node(n)}}}": "1x200" for n in (0, 1)}
    # 120 samples (60 s) up, 8 samples (4 s) down, up again.
    up[f"up{{{BROKER},{_node(2)}}}"] = "1x119 0x8 1x80"
    case = Case(
        "kill-broker",
        rules.BROKER_NODE_DOWN,
        up,
        [("61s", []), ("63s", [Expect()]), ("70s", [])],
    )
    result = _promtool_test([case], tmp_path, drill)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(tmp_path: Path) -> None:
    for name, timing in (("production", PRODUCTION), ("drill", PRODUCTION.compressed(60))):
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump({"groups": rule_groups(timing, broker_nodes=5)}, sort_keys=False))
        result = subprocess.run(
            [_promtool(), "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert f"SUCCESS: {len(rules.ALERTS)} rules found" in result.stdout
