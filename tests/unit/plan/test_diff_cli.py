"""`make plan-diff`'s exit codes and steps.json, on this repository's own history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plan.diff_cli import main


def test_an_unknown_ref_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base", "no-such-ref-h7", "--out", str(tmp_path)]) == 2
    assert "BASE=no-such-ref-h7: not a commit" in capsys.readouterr().err
    assert not (tmp_path / "steps.json").exists()


def test_a_disk_kind_change_exits_1_naming_the_statefulset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--base", "HEAD", "--set", "brokerStorage=ssd", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stateful kubernetes:apps/v1:StatefulSet rabbitmq-statefulset" in err
    steps = {s["name"]: s for s in json.loads((tmp_path / "steps.json").read_text())}
    statefulset = steps["rabbitmq-statefulset"]
    assert set(statefulset) == {"type", "name", "step", "reasons", "object"}
    assert statefulset["step"] in ("replace", "delete-before-replace")
    assert statefulset["object"] == "StatefulSet/ha-celery/rabbitmq"
    assert steps["ha-celery-dev"]["object"] is None


def test_base_set_plans_both_sides_so_only_set_makes_the_difference(tmp_path: Path) -> None:
    """`make demo SCENARIO=update` boots the stack with its SET and TLS: plan-diff must start from
    that plan (--base-set), or the steps would also turn TLS on."""
    assert main(["--base", "HEAD", "--base-set", "brokerTls=true", "--out", str(tmp_path)]) == 0
    changed = [s for s in json.loads((tmp_path / "steps.json").read_text()) if s["step"] != "same"]
    assert changed == [], changed
    assert main(["--base", "HEAD", "--set", "brokerTls=true", "--out", str(tmp_path)]) == 0
    created = {s["name"] for s in json.loads((tmp_path / "steps.json").read_text()) if s["step"] == "create"}
    assert "rabbitmq-tls" in created
