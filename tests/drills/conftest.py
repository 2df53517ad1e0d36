"""What the drills' modules share: a booted plan and the results directory its worker pods write to,
the drills' sizes and what every drill on a plan must show.

A cluster is booted once per group of tests whose faults it recovers from (``Booted.clean``
before each test; the drills through ``drill.runner.drills_in_turn``).

Sizes: 1,000 tasks of 40 ms are ~7 s of work on the dev plan's 3 worker pods x 2 processes
(~3.5 s on prod's 3 x 4), published in 1-2 s; the fault is injected once 300 are published, so
it lands with ~700 queued or running. ``make demo`` runs the same code with 10,000.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drill.runner import DrillResult, empty_results
from drill.scenario import Scenario
from drill.targets import PlanTarget
from harness.kube.store import Pod
from tests.requires import requires

TASKS = 1000
TASK_MS = 40
REPORT_KEYS = (
    "scenario",
    "scheduled",
    "completed",
    "lost",
    "duplicates",
    "failover_seconds",
    "throughput_per_s",
    "versions",
    "rabbitmq_version",
    "plan",
    "stack",
    "deltas",
    "alerts",
    "alert_timing",
)
"""What every ``report.json`` says, whichever configuration ran."""


@pytest.fixture(autouse=True, scope="session")
def _machine() -> None:
    """Every drill boots brokers in network namespaces (root) with the plan's NetworkPolicies enforced
    (nft), runs Debian's Prometheus beside the plan's cluster, and the seed's runs Debian's
    rabbitmq-server: the one rule of tests/requires.py."""
    requires("root", "nft", "prometheus", "rabbitmq-server")


class Booted:
    """A booted plan and the directory its worker pods record executions in."""

    def __init__(self, target: PlanTarget, results: Path) -> None:
        self.target = target
        self.results = results

    def clean(self) -> None:
        """Every pod Ready, the task queue empty and idle, no record left from an earlier test."""
        self.target.reset()
        empty_results(self.results)


def assert_nothing_lost(result: DrillResult, scenario: Scenario) -> None:
    """A drill on the plan: its fault injected mid-load, every task published and run, on 4.3."""
    assert result.error is None, result.error
    assert result.events, f"{scenario}: no fault was injected"
    assert result.publish.ok, f"{scenario}: publisher failed: {result.publish.error}"
    assert (result.completed, result.lost) == (TASKS, 0), f"{scenario}: {result.to_json()}"
    assert result.failover_seconds is not None
    assert str(result.versions["rabbitmq"]).startswith("4.3."), result.versions
    assert any(d.obj == "image" for d in result.deltas), "the report must say which local image ran the plan's"


def python_in_pod_namespace(pod: Pod, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The host's Python running ``code`` inside ``pod``'s own network namespace, as ``kubectl
    port-forward`` reaches a pod: no NetworkPolicy stands between it and the pod's listeners."""
    assert pod.worker is not None, f"{pod.name} is not running"
    argv = ["ip", "netns", "exec", pod.worker.sandbox.netns, sys.executable, "-c", code, *args]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
