"""Shared by every tier: the offline plan of every stack (built once per session), and the rule that a
test's folder and its markers name the same tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))

TIER_MARKERS: dict[str, frozenset[str]] = {
    "unit": frozenset(),
    "integration": frozenset({"integration"}),
    "drills": frozenset({"drill"}),
}
"""Tier folder -> the markers its tests must carry (``-m`` selects by marker, ``pytest tests/unit`` by folder)."""
HEAVY_MARKERS = frozenset({"integration", "drill"})


def tier_mismatch(folder: str, markers: set[str]) -> str | None:
    """Why a test in ``tests/<folder>`` with these markers is in the wrong tier, or None."""
    if folder not in TIER_MARKERS:
        return None
    required = TIER_MARKERS[folder]
    if not required and markers & HEAVY_MARKERS:
        return f"marked {sorted(markers & HEAVY_MARKERS)} in the unit tier: move it to tests/integration or drills"
    if required and not required & markers:
        return f"not marked {sorted(required)} in tests/{folder}: add the marker or move it to tests/unit"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    wrong = []
    for item in items:
        folder = item.path.relative_to(ROOT / "tests").parts[0]
        why = tier_mismatch(folder, {m.name for m in item.iter_markers()})
        if why:
            wrong.append(f"{item.nodeid}: {why}")
    if wrong:
        raise pytest.UsageError("tests whose folder and markers disagree:\n" + "\n".join(wrong))


@dataclass(frozen=True)
class Plan:
    stack: str
    directory: Path
    resources: list[dict[str, Any]]

    def of_type(self, token: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == token]

    def one(self, token: str) -> dict[str, Any]:
        found = self.of_type(token)
        assert len(found) == 1, f"{self.stack}: expected one {token}, found {[r['name'] for r in found]}"
        return found[0]

    def manifests(self) -> list[Path]:
        return sorted((self.directory / "kubernetes").glob("*.yaml"))

    def objects(self, kind: str) -> list[dict[str, Any]]:
        docs = [yaml.safe_load(p.read_text()) for p in self.manifests()]
        return [d for d in docs if d["kind"] == kind]

    def object(self, kind: str) -> dict[str, Any]:
        found = self.objects(kind)
        assert len(found) == 1, f"{self.stack}: expected one {kind}, found {[o['metadata']['name'] for o in found]}"
        return found[0]


def run_plan(stack: str, out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "plan", "--stack", stack, "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


# Plans with overrides that several tests read: built together with the stacks' plans, in
# parallel (each is a Python process importing the Pulumi SDKs: seconds of CPU apiece).
VARIANTS: tuple[tuple[str, ...], ...] = (
    ("dev", "mirrorRabbitmqImage=true"),
    ("dev", "autoscaling=keda", "autoscalingMaxReplicas=12"),
    ("dev", "autoscaling=hpa"),
)


@pytest.fixture(scope="session")
def _prebuilt(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    jobs = [(stack,) for stack in STACKS] + list(VARIANTS)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {job: pool.submit(run_plan, job[0], tmp_path_factory.mktemp("plan"), *job[1:]) for job in jobs}
        return {job: future.result() for job, future in futures.items()}


@pytest.fixture(scope="session")
def plan_runner(
    tmp_path_factory: pytest.TempPathFactory, _prebuilt: dict[tuple[str, ...], subprocess.CompletedProcess[str]]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def runner(stack: str, *overrides: str) -> subprocess.CompletedProcess[str]:
        if (stack, *overrides) in _prebuilt:
            return _prebuilt[(stack, *overrides)]
        return run_plan(stack, tmp_path_factory.mktemp(f"plan-{stack}"), *overrides)

    return runner


@pytest.fixture(scope="session")
def plans(_prebuilt: dict[tuple[str, ...], subprocess.CompletedProcess[str]]) -> dict[str, Plan]:
    result: dict[str, Plan] = {}
    for stack in STACKS:
        done = _prebuilt[(stack,)]
        assert done.returncode == 0, f"plan of {stack} failed:\n{done.stderr}"
        directory = Path(done.stdout.split("-> ")[-1].strip())
        result[stack] = Plan(stack, directory, json.loads((directory / "resources.json").read_text()))
    return result


@pytest.fixture(params=STACKS)
def plan(request: pytest.FixtureRequest, plans: dict[str, Plan]) -> Plan:
    return plans[request.param]
