"""The worker image's locked requirements (app/requirements.txt), read offline: every dependency pinned and hashed, and
installed by app/Dockerfile with ``--require-hashes``. Equal to uv.lock and installable per platform: checked in
tests/integration/images/test_requirements.py."""

from __future__ import annotations

import re

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "app/requirements.txt"


def _entries() -> list[str]:
    return [e.strip() for e in REQUIREMENTS.read_text().replace("\\\n", " ").splitlines() if e.strip()]


def test_every_requirement_is_pinned_and_hashed() -> None:
    entries = _entries()
    assert entries
    for entry in entries:
        assert re.match(r"^[a-z0-9][a-z0-9._-]*==[^\s;]+", entry), f"not pinned: {entry}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash: {entry}"


def test_the_dockerfile_installs_the_hashed_lock() -> None:
    text = (ROOT / "app/Dockerfile").read_text()
    assert "COPY app/requirements.txt /srv/requirements.txt" in text
    assert "pip install --require-hashes --no-deps -r /srv/requirements.txt" in text
