"""The worker image's container, for real: the code mounted from the checkout, the locked Celery, uid 10001.

Integration: needs root and builds (or reuses) the image; FAILS, never skips, when something is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.runtime import images, rootfs
from tests.conftest import ROOT
from tests.requires import requires

CACHE = Path(os.environ.get("HA_CELERY_ROOTFS_CACHE", str(images.DEFAULT_CACHE_DIR)))
LOCKED_CELERY = images.locked_versions(ROOT / "app/requirements.txt")["celery"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker() -> images.Image:
    requires("root")
    return images.worker_image(CACHE, ROOT)


def run(image: images.Image, argv: Sequence[str], **pod_env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        image.container_argv(
            hostname="celery-worker-0", argv=argv, env=image.container_env("celery-worker-0", pod_env)
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{argv}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def assert_nothing_left(image: images.Image) -> None:
    for path in (image.rootfs, ROOT / "app", ROOT / "contract", ROOT / "drill", Path(rootfs.CONTAINER_STAGE)):
        assert rootfs.mounts_under(path) == [], path


def test_health_probe_command_runs(worker: images.Image) -> None:
    out = run(worker, ["python", "-m", "app.health", "--help"]).stdout
    assert "--ready" in out
    assert "--max-age" in out
    assert_nothing_left(worker)


def test_imports_the_mounted_code_with_the_locked_celery_as_10001(worker: images.Image) -> None:
    script = (
        "import os, sys, celery, kombu, app.config, contract.wire\n"
        "print(celery.__version__)\n"
        "print(os.getuid(), os.getgid(), os.getcwd(), os.environ['PYTHONPATH'], os.environ['HOME'])\n"
        "print(sys.version.split()[0], celery.__file__, app.config.__file__)\n"
        "try:\n    open('/srv/app/x', 'w')\nexcept OSError as e:\n    print('srv-ro', e.errno)\n"
    )
    lines = run(worker, ["python", "-c", script]).stdout.splitlines()
    assert lines[0] == LOCKED_CELERY == "5.7.0"
    assert lines[1].split() == ["10001", "10001", "/tmp", "/srv", "/nonexistent"]
    version, celery_file, config_file = lines[2].split()
    assert version == worker.upstream_version
    assert version.startswith(images.WORKER_PYTHON_MINOR + ".")
    assert celery_file.startswith(images.WORKER_SITE + "/celery/")
    assert config_file == "/srv/app/config.py"
    assert lines[3] == "srv-ro 30"  # EROFS: the code is mounted read-only
    assert_nothing_left(worker)


def test_celery_console_script_reports_the_locked_version(worker: images.Image) -> None:
    out = run(worker, ["celery", "--version"]).stdout
    assert out.split()[0] == LOCKED_CELERY
    assert worker.command()[0] == "celery"  # the image's CMD starts with this very script
    assert_nothing_left(worker)


def test_drill_tasks_are_importable_as_the_drills_include_them(worker: images.Image) -> None:
    out = run(worker, ["python", "-c", "import drill.tasks; print(drill.tasks.__file__)"]).stdout
    assert out.strip() == "/srv/drill/tasks.py"


def test_sigkill_of_the_runner_leaves_nothing_running_or_mounted(worker: images.Image) -> None:
    proc = subprocess.Popen(
        worker.container_argv(
            hostname="celery-worker-1",
            argv=["python", "-c", "import time; time.sleep(120)"],
            env=worker.container_env("celery-worker-1"),
        ),
        stdin=subprocess.DEVNULL,
    )
    try:
        main = None
        deadline = time.monotonic() + 20
        while main is None and time.monotonic() < deadline:
            main = rootfs.container_main_pid(proc.pid)
            time.sleep(0.05)
        assert main is not None, "the container did not start"
        assert len(rootfs.pids_in_pidns_of(main)) >= 2  # PID 1 (supervisor) and python
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while rootfs.pids_in_pidns_of(main) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rootfs.pids_in_pidns_of(main) == []
        assert_nothing_left(worker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The shared rootfs was not written by the containers.
    assert not (worker.rootfs / "srv/app/x").exists()
