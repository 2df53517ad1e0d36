"""The manuals' `pulumi config set` recipes give stacks that settings accept (issue 28 item 8)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

import settings
from plan.__main__ import stack_config
from settings import PROJECT, SettingsError

DOCS = Path(__file__).resolve().parents[3] / "docs"


def recipe(text: str) -> dict[str, str]:
    """The `pulumi config set` commands of ``text`` as the config they leave (``--path 'k[i]'`` lists)."""
    config: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for command in re.findall(r"pulumi (?:-s \w+ )?config set ([^\n#&`]+)", text):
        words = shlex.split(command)
        if words[0] == "--path":
            key, index = re.fullmatch(r"(.+)\[(\d+)\]", words[1]).groups()  # type: ignore[union-attr]
            lists.setdefault(key, []).insert(int(index), words[2])
            continue
        config[words[0]] = words[1]
    return config | {key: json.dumps(values) for key, values in lists.items()}


def _parse(stack: str, changes: dict[str, str]) -> settings.Settings:
    config = stack_config(stack, []) | changes
    return settings.parse(stack, {k: v for k, v in config.items() if k.startswith(PROJECT)}, "my-project-1")


def test_the_prometheus_operator_recipe_is_accepted() -> None:
    text = (DOCS / "monitoring.md").read_text()
    section = text.split("## A cluster that runs prometheus-operator")[1].split("## ")[0]
    changes = recipe(section)
    assert f"{PROJECT}:prometheusNamespace" in changes
    s = _parse("dev", changes)
    assert s.network.metrics_namespaces == ("gmp-system", "monitoring")
    without = {k: v for k, v in changes.items() if k != f"{PROJECT}:prometheusNamespace"}
    with pytest.raises(SettingsError, match=f"{PROJECT}:prometheusNamespace: got ''"):
        _parse("dev", without)


def test_the_broker_scaling_recipe_raises_nodecount_first_in_prod() -> None:
    text = (DOCS / "operate-broker.md").read_text()
    section = text.split("## Scaling")[1].split("Scaling down")[0]
    changes = recipe(section)
    assert changes == {f"{PROJECT}:nodeCount": "6", f"{PROJECT}:brokerReplicas": "5"}
    assert _parse("prod", changes).broker.replicas == 5
    with pytest.raises(SettingsError, match=r"brokerReplicas: got 5; allowed: <= nodeCount \(3\) in prod"):
        _parse("prod", {f"{PROJECT}:brokerReplicas": "5"})


def test_the_lanes_example_is_accepted_with_the_limits_it_promises() -> None:
    text = (DOCS / "operate-workers.md").read_text()
    section = text.split("### Sending a task to a lane")[1].split("```yaml")[1].split("```")[0]
    entries = yaml.safe_load(section)[f"{PROJECT}:workerLanes"]
    lanes = {lane.name: lane for lane in _parse("dev", {f"{PROJECT}:workerLanes": json.dumps(entries)}).workers.lanes}
    assert list(lanes) == ["default", "long", "video"]
    video = lanes["video"]
    assert (video.queue, video.deployment) == ("celery.video", "celery-worker-video")
    assert (video.timing.soft_time_limit_s, video.timing.consumer_timeout_s) == (7140, 4 * 3600 + 60), (
        "as the comment says"
    )
    assert lanes["default"].timing.prefetch_multiplier == 4
    assert lanes["long"].tasks == ("reports.*", "app.tasks.export")


def test_the_readmes_lane_example_is_accepted() -> None:
    text = (DOCS.parent / "README.md").read_text()
    section = text.split("## Short and long tasks: worker lanes")[1].split("```yaml")[1].split("```")[0]
    entries = yaml.safe_load(section)[f"{PROJECT}:workerLanes"]
    lanes = {lane.name: lane for lane in _parse("dev", {f"{PROJECT}:workerLanes": json.dumps(entries)}).workers.lanes}
    reports = lanes["reports"]
    assert (reports.queue, reports.deployment, reports.tasks) == (
        "celery.reports",
        "celery-worker-reports",
        ("reports.*",),
    )
    assert (reports.timing.soft_time_limit_s, reports.timing.termination_grace_s) == (1740, 1815)
