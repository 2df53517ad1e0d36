"""Fixtures shared by the drill CLI's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    """A directory that passes contract.plan_dir.check_complete (the runners are fakes: nothing reads it)."""
    directory = tmp_path / "plan"
    (directory / "kubernetes").mkdir(parents=True)
    (directory / "kubernetes" / "statefulset.yaml").write_text("{}\n")
    for name in ("resources.json", "engine.json", "settings.json"):
        (directory / name).write_text("{}\n")
    return directory
