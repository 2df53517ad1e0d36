"""Plans are written atomically; `--out` at a file and `make plan TLS=yes` are refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import plan.__main__ as plan_main
from contract.plan_dir import IncompletePlanError, check_complete

ROOT = Path(__file__).resolve().parents[3]


def _fake_write(out: Path, result: Any, effective: Any) -> None:
    del result, effective
    for name in ("resources.json", "engine.json", "settings.json"):
        (out / name).write_text("[]\n")
    (out / "kubernetes").mkdir()
    (out / "kubernetes" / "a.yaml").write_text("kind: A\n")


def test_a_failed_write_leaves_the_previous_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "dev"
    monkeypatch.setattr(plan_main, "_write_into", _fake_write)
    plan_main.write(out, None, None)  # type: ignore[arg-type]
    assert check_complete(out) == out
    before = {p.name: p.read_text() for p in out.glob("*.json")}

    def failing(building: Path, result: Any, effective: Any) -> None:
        _fake_write(building, result, effective)
        (building / "resources.json").write_text('[{"trunc')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plan_main, "_write_into", failing)
    with pytest.raises(OSError, match="No space left"):
        plan_main.write(out, None, None)  # type: ignore[arg-type]
    assert {p.name: p.read_text() for p in out.glob("*.json")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev"], "no temporary directory is left behind"


def test_a_second_write_replaces_the_plan_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "dev"
    out.mkdir()
    (out / "stale.yaml").write_text("from an older plan\n")
    monkeypatch.setattr(plan_main, "_write_into", _fake_write)
    plan_main.write(out, None, None)  # type: ignore[arg-type]
    assert not (out / "stale.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev"]


@pytest.mark.parametrize("missing", ["resources.json", "engine.json", "settings.json", "kubernetes"])
def test_an_incomplete_plan_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setattr(plan_main, "_write_into", _fake_write)
    plan_main.write(tmp_path / "dev", None, None)  # type: ignore[arg-type]
    target = tmp_path / "dev" / missing
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(IncompletePlanError, match=rf"^{tmp_path / 'dev'}: not a complete plan \(missing {missing}"):
        check_complete(tmp_path / "dev")


def test_out_at_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "plan", "--stack", "dev", "--out", str(tmp_path / "file")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    expected = f"plan: --out {tmp_path / 'file'} is a file; it takes the directory the plans go under"
    assert done.stderr.strip() == expected


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_make_plan_refuses_a_tls_value_it_would_ignore(value: str) -> None:
    done = subprocess.run(
        ["make", "-n", "plan", f"TLS={value}"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert f"TLS={value}: allowed TLS=1 (brokerTls=true), TLS=0 (brokerTls=false) or unset" in done.stderr
