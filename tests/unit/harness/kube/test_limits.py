"""A pod's groups computed from its spec as the kubelet computes them, and how a container's end is reported."""

from __future__ import annotations

from typing import Any

import pytest

from harness.kube.limits import (
    OOM_EXIT_CODE,
    Termination,
    container_limits,
    memory_volume_bytes,
    pod_limits,
    termination,
)
from harness.kube.objects import Container, PodSpec, Resources
from harness.runtime.cgroups import Limits

MI = 2**20


def ctr(name: str = "c", **resources: Any) -> Container:
    return Container(name, "img", resources=Resources(resources.get("requests", {}), resources.get("limits", {})))


def test_the_worker_container() -> None:
    worker = ctr(requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "256Mi"})
    assert container_limits(worker) == Limits(memory_bytes=256 * MI, cpu_limit_millis=None, cpu_request_millis=100)


def test_a_limit_without_request_is_its_request() -> None:
    assert container_limits(ctr(limits={"cpu": "1", "memory": "1Gi"})) == Limits(1024 * MI, 1000, 1000)


def test_pod_sums_its_containers_and_takes_the_larger_init() -> None:
    spec = PodSpec(
        containers=(ctr("a", limits={"cpu": "500m", "memory": "1Gi"}), ctr("b", limits={"cpu": "1", "memory": "1Gi"})),
        init_containers=(ctr("i", limits={"cpu": "2", "memory": "64Mi"}),),
    )
    assert pod_limits(spec, pids_max=1024) == Limits(
        memory_bytes=2048 * MI, cpu_limit_millis=2000, cpu_request_millis=2000, pids_max=1024
    )


def test_one_unlimited_container_leaves_the_pod_unlimited() -> None:
    spec = PodSpec(containers=(ctr("a", limits={"memory": "1Gi"}), ctr("b", requests={"cpu": "250m"})))
    got = pod_limits(spec)
    assert (got.memory_bytes, got.cpu_limit_millis, got.cpu_request_millis, got.pids_max) == (None, None, 250, None)


def test_an_unlimited_init_container_leaves_the_pod_unlimited() -> None:
    spec = PodSpec(containers=(ctr("a", limits={"memory": "1Gi"}),), init_containers=(ctr("i"),))
    assert pod_limits(spec).memory_bytes is None


@pytest.mark.parametrize(
    ("size_limit", "pod_memory", "expected"),
    [("64Mi", 256 * MI, 64 * MI), ("1Gi", 256 * MI, 256 * MI), (None, 256 * MI, 256 * MI), (None, None, None)],
)
def test_memory_volume_size(size_limit: str | None, pod_memory: int | None, expected: int | None) -> None:
    assert memory_volume_bytes(size_limit, pod_memory) == expected


@pytest.mark.parametrize(
    ("returncode", "oom", "expected"),
    [
        (0, False, Termination("Completed", 0)),
        (1, False, Termination("Error", 1)),
        (137, False, Termination("Error", 137)),
        (-9, False, Termination("Error", 137)),
        (-15, False, Termination("Error", 143)),
        # The runner saw its own SIGKILL (v1: the pod runner killed the rest), or a clean-looking exit.
        (-9, True, Termination("OOMKilled", OOM_EXIT_CODE)),
        (0, True, Termination("OOMKilled", 137)),
        (None, False, Termination("Error", -1)),
    ],
)
def test_termination_as_the_kubelet_reports_it(returncode: int | None, oom: bool, expected: Termination) -> None:
    assert termination(returncode, oom) == expected
