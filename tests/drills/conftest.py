"""What the drills' modules share: a booted plan and the results directory its worker pods write to.

A cluster is booted once per group of tests whose faults it recovers from (``Booted.clean``
before each test); the drills' own groups run through ``drill.runner.run_plan_drills``.
"""

from __future__ import annotations

from pathlib import Path

from drill.runner import empty_results
from drill.targets import PlanTarget


class Booted:
    """A booted plan and the directory its worker pods record executions in."""

    def __init__(self, target: PlanTarget, results: Path) -> None:
        self.target = target
        self.results = results

    def clean(self) -> None:
        """Every pod Ready, the task queue empty and idle, no record left from an earlier test."""
        self.target.reset()
        empty_results(self.results)
