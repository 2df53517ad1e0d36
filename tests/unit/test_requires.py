"""tests/requires.py: a missing tool skips a test here and fails it under CI=true; a tool that is there does neither."""

from __future__ import annotations

import pytest

from tests import requires as module
from tests.requires import requires


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(module.THINGS, "promtool", (lambda: False, "promtool is not installed (hint)"))


@pytest.mark.usefixtures("missing")
def test_a_missing_tool_skips_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool is not installed"):
        requires("promtool")


@pytest.mark.usefixtures("missing")
@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"promtool is not installed.*CI=true"):
        requires("promtool")


def test_a_present_tool_neither_skips_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(module.THINGS, "uv", (lambda: True, "unused"))
    monkeypatch.setenv("CI", "true")
    requires("uv")


def test_an_unknown_thing_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown \['docker'\]; known: rabbitmq-server \| root \| promtool"):
        requires("docker")
