"""The worker image's locked requirements (app/requirements.txt) against the tools: equal to uv.lock (uv), and
installable with ``pip install --require-hashes`` for every platform the images are built for (PyPI). Pinned and
hashed, read offline: tests/unit/harness/runtime/test_requirements.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from contract.image import ImagePlatforms
from harness.runtime import images
from tests.conftest import ROOT
from tests.requires import requires

REQUIREMENTS = ROOT / "app/requirements.txt"
# pip's --platform tags of each image platform (the wheels are pure Python; the tags only decide what pip may pick).
PIP_PLATFORMS = {"linux/amd64": "manylinux2014_x86_64", "linux/arm64": "manylinux2014_aarch64"}

pytestmark = pytest.mark.integration


def test_requirements_are_the_lock() -> None:
    """`make lock` writes app/requirements.txt from uv.lock; a hand edit or a lock without it shows here (offline)."""
    requires("uv")
    uv = shutil.which("uv")
    assert uv
    exported = subprocess.run(
        [uv, "export", "--frozen", "--only-group", "app", "--no-header", "--no-annotate", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert exported == REQUIREMENTS.read_text(), "app/requirements.txt is stale: run `make lock`"


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
