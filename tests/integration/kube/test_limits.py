"""Resource limits enforced by the pod runner's kubelet on real processes (issue 24, item 4).

No brokers: two one-container pods of the worker image on one local node. A container that
allocates past its memory limit is OOM-killed, reported ``OOMKilled`` with exit code 137 and
restarted with the kubelet's back-off; a CPU-limited busy loop is throttled by its CFS quota.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kube.kubelet import Event, PodContext, PodSandbox, PodWorker
from harness.kube.limits import OOM_EXIT_CODE, OOM_REASON
from harness.kube.objects import Container, PodSpec, PodTemplate, Resources
from harness.kube.volumes import VolumeStore
from harness.runtime import netns
from harness.runtime.images import Image, worker_image
from harness.runtime.poll import poll
from tests.requires import requires

pytestmark = pytest.mark.integration

ALLOCATE = "import time; blocks = [bytearray(8 << 20) for _ in range(40)]; time.sleep(60)"
"""320 MiB touched (bytearray zero-fills every page), far past a 64Mi limit."""
BUSY = "while True: pass"


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[netns.NetnsLayout, Image, Path]]:
    requires("root")
    layout = netns.create(1)
    work = Path(tempfile.mkdtemp(prefix="ha-celery-limits-"))
    try:
        yield layout, worker_image(), work
    finally:
        netns.destroy(layout)
        shutil.rmtree(work, ignore_errors=True)


def run_pod(
    node: tuple[netns.NetnsLayout, Image, Path], slot: int, name: str, code: str, limits: dict[str, str]
) -> tuple[PodWorker, list[Event]]:
    layout, image, work = node
    events: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    container = Container(name, "worker", command=("python3", "-c", code), resources=Resources({}, limits))
    store = VolumeStore(work / "volumes")
    sandbox = PodSandbox("node-0", netns.add_pod(layout, 0, slot), layout.pod_ip(slot), work / name)
    # No cluster DNS here: the nameserver is never asked (the pod only allocates or spins).
    ctx = PodContext(lambda _ref: image, (), (), store, lambda _pod: "127.0.0.1 localhost\n", "127.0.0.1", record)
    template = PodTemplate({}, {}, PodSpec(containers=(container,), termination_grace_period_seconds=1))
    worker = PodWorker(name, namespace="limits", uid=f"uid-{name}", template=template, sandbox=sandbox, ctx=ctx)
    worker.start()
    return worker, events


def test_a_container_past_its_memory_limit_is_oom_killed_with_137_and_restarted(
    node: tuple[netns.NetnsLayout, Image, Path],
) -> None:
    worker, events = run_pod(node, 1, "hog", ALLOCATE, {"memory": "64Mi"})
    try:
        poll(lambda: worker.restarts >= 2, 60, "two restarts after OOM kills")
        reasons = [e.reason for e in events]
        assert reasons.count("OOMKilled") >= 2, reasons
        assert worker.last_termination is not None
        assert (worker.last_termination.reason, worker.last_termination.exit_code) == (OOM_REASON, OOM_EXIT_CODE)
        assert worker.exit_codes[:2] == [137, 137]
        # The kubelet's back-off: the first restart at once, the second after 10 s.
        assert any(e.reason == "BackOff" and "10s" in e.message for e in events), reasons
        killed = [e.message for e in events if e.reason == OOM_REASON]
        assert all("exit code 137, memory peak 64Mi" in m for m in killed), killed
    finally:
        worker.delete(0)
        assert worker.wait(30)


def test_a_cpu_limited_container_is_throttled(node: tuple[netns.NetnsLayout, Image, Path]) -> None:
    worker, _ = run_pod(node, 2, "spin", BUSY, {"cpu": "100m", "memory": "128Mi"})
    try:
        poll(lambda: worker.cgroup is not None and worker.main_pid is not None, 30, "the busy loop to run")

        def throttled() -> int:
            group = worker.cgroup
            assert group is not None
            stat = dict(line.split() for line in group.read("cpu", "cpu.stat").splitlines())
            return int(stat["nr_throttled"])

        poll(lambda: throttled() > 5, 10, "CFS throttling of a 100m container")
        group = worker.cgroup
        assert group is not None
        quota = group.read("cpu", "cpu.max" if group.version == 2 else "cpu.cfs_quota_us").split()[0]
        assert quota == "10000"
    finally:
        worker.delete(0)
        assert worker.wait(30)
    assert worker.restarts == 0
