"""The dev plan booted for real on the pod runner (RabbitMQ 4.3 StatefulSet, worker Deployment).

One cluster per test module: the tests here inject faults, and a module that stops every broker
must not leave its damage to the next one. Each test starts from :func:`clean`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drill.runner import booted_plan, empty_results
from drill.targets import PlanTarget
from tests.conftest import Plan


class Booted:
    """A booted plan and the directory its worker pods record executions in."""

    def __init__(self, target: PlanTarget, results: Path) -> None:
        self.target = target
        self.results = results

    def clean(self) -> None:
        """Every pod Ready, the task queue empty and idle, no record left from an earlier test."""
        self.target.reset()
        empty_results(self.results)


@pytest.fixture(scope="module")
def booted(plans: dict[str, Plan]) -> Iterator[Booted]:
    # No Prometheus: these tests dead-letter tasks on purpose, and its alerts are the drills' subject.
    with booted_plan(plans["dev"].directory, observe=False) as (target, results):
        yield Booted(target, results)
