"""The worker image's locked requirements (app/requirements.txt): what app/Dockerfile and the local worker image
install with ``pip install --require-hashes``. Complete (every dependency pinned and hashed), equal to uv.lock, and
installable for every platform the images are built for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from contract.image import ImagePlatforms
from harness import images
from tests.conftest import ROOT

REQUIREMENTS = ROOT / "app/requirements.txt"
# pip's --platform tags of each image platform (the wheels are pure Python; the tags only decide what pip may pick).
PIP_PLATFORMS = {"linux/amd64": "manylinux2014_x86_64", "linux/arm64": "manylinux2014_aarch64"}


def _entries() -> list[str]:
    return [e.strip() for e in REQUIREMENTS.read_text().replace("\\\n", " ").splitlines() if e.strip()]


def test_every_requirement_is_pinned_and_hashed() -> None:
    entries = _entries()
    assert entries
    for entry in entries:
        assert re.match(r"^[a-z0-9][a-z0-9._-]*==[^\s;]+", entry), f"not pinned: {entry}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash: {entry}"


def test_requirements_are_the_lock() -> None:
    """`make lock` writes app/requirements.txt from uv.lock; a hand edit or a lock without it shows here (offline)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make setup installs it)")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--only-group", "app", "--no-header", "--no-annotate", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert exported == REQUIREMENTS.read_text(), "app/requirements.txt is stale: run `make lock`"


def test_the_dockerfile_installs_the_hashed_lock() -> None:
    text = (ROOT / "app/Dockerfile").read_text()
    assert "COPY app/requirements.txt /srv/requirements.txt" in text
    assert "pip install --require-hashes --no-deps -r /srv/requirements.txt" in text


@pytest.mark.integration
@pytest.mark.parametrize("platform", ImagePlatforms.AMD64_ARM64.platforms)
def test_requirements_install_with_hashes(platform: str, tmp_path: Path) -> None:
    """Resolved WITH dependencies under --require-hashes: a dependency missing from the file fails (its hash is
    missing), as does a hash that no longer matches PyPI's file. Needs PyPI (reachable here and in CI)."""
    done = subprocess.run(
        [
            *images._host_pip(),
            "install",
            "--dry-run",
            "--require-hashes",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            images.WORKER_IMAGE_PYTHON,
            "--platform",
            PIP_PLATFORMS[platform],
            "--target",
            str(tmp_path / "target"),
            "-r",
            str(REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, f"pip install --require-hashes --dry-run failed for {platform}:\n{done.stderr}"
