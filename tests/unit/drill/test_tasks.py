"""The drills' counting tasks and records: loaded into the image's worker from outside the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import from_env
from app.factory import make_app
from contract.image import WORKER_SOURCES
from drill import records, tasks
from drill.profiles import Profile, ProfileRuntime, worker_argv
from tests.conftest import ROOT

HOSTS_ENV = {"BROKER_HOSTS": "rmq-0", "BROKER_USER": "celery", "BROKER_PASSWORD": "pw"}


def test_records_tally_counts_duplicates_and_malformed_lines(tmp_path: Path) -> None:
    for task_id, key in [("a", 0), ("b", 1), ("a", 0)]:
        records.append(tmp_path, records.make_record(task_id, key, redelivered=task_id == "a"))
    (tmp_path / "torn.jsonl").write_text('{"task_id": "c", "key"\n')
    tally = records.tally(tmp_path)
    assert (tally.executions, tally.distinct, tally.duplicates, tally.malformed) == (3, 2, 1, 1)
    assert tally.missing(range(3)) == frozenset({2})


def test_record_task_appends_an_execution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_app(from_env(HOSTS_ENV))
    monkeypatch.setenv(tasks.ENV_RESULTS_DIR, str(tmp_path))
    tasks.record.apply(args=(7,), task_id="t-7")
    (line,) = records.read(tmp_path)[0]
    assert (line.task_id, line.key, line.redelivered) == ("t-7", 7, False)


def test_record_once_skips_a_redelivered_task_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_app(from_env(HOSTS_ENV))
    monkeypatch.setenv(tasks.ENV_RESULTS_DIR, str(tmp_path))
    for _ in range(3):
        tasks.record_once.apply(args=(1,), task_id="same")
    tasks.record_once.apply(args=(2,), task_id="other")
    tally = records.tally(tmp_path)
    assert (tally.executions, tally.duplicates) == (2, 0)


def test_record_plan_passes_the_index_as_the_record_key() -> None:
    plan = tasks.record_plan(3, sleep_ms=5)
    assert (plan.task_name, plan.count, plan.arguments(2)) == (tasks.RECORD, 3, ((2,), {"sleep_ms": 5}))


def test_ha_worker_runs_the_images_command_plus_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMAP_SIGTERM", "SIGQUIT")
    monkeypatch.setenv("BROKER_HOSTS", "elsewhere")
    spec = ProfileRuntime(Profile.HA, ("amqp://u:p@127.0.0.1:5672//",), tmp_path, 2).worker("w0", tmp_path)
    assert spec.argv == worker_argv()
    assert spec.env["CELERY_WORKER_INCLUDE"] == "drill.tasks,drill.failing"
    assert spec.env[tasks.ENV_RESULTS_DIR] == str(tmp_path)
    assert "REMAP_SIGTERM" not in spec.env, "a caller's REMAP_SIGTERM would turn SIGTERM into a cold shutdown"
    assert "BROKER_HOSTS" not in spec.env


def test_the_worker_image_context_admits_exactly_the_worker_sources() -> None:
    ignore = (ROOT / "app" / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "everything is excluded first, then the worker's folders admitted"
    admitted = tuple(rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!"))
    assert admitted == WORKER_SOURCES
    dockerfile = (ROOT / "app" / "Dockerfile").read_text()
    copied = {line.split()[1].split("/")[0] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert copied <= set(WORKER_SOURCES), f"the Dockerfile copies {copied}"
