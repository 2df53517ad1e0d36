"""A pod's resource limits as the kubelet enforces them: its cgroups, its memory-backed emptyDirs, its OOM kills.

Pure parts (unit-tested): :func:`container_limits` and :func:`pod_limits` compute each group's
:class:`~harness.runtime.cgroups.Limits` from the spec; :func:`memory_volume_bytes` the size of a
``medium: Memory`` emptyDir's tmpfs; :func:`termination` maps how a container ended to the
status the kubelet reports (``OOMKilled`` and exit code 137 after an OOM kill).

:class:`PodLimits` applies them for one pod on this host: the pod group ``ha-celery/pod<uid>``
holding the sums, one group per container incarnation below it (a restart gets a fresh group, as
a new container id does), and a tmpfs per memory-backed emptyDir. tmpfs pages are charged to the
memory group of the process that writes them, so what a container writes there counts against
its container's and its pod's limit, as on a node.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.kube.objects import Container, PodSpec, parse_quantity
from harness.runtime import cgroups
from harness.runtime.cgroups import Group, Limits

log = logging.getLogger(__name__)

OOM_EXIT_CODE = 128 + signal.SIGKILL
"""What the runtime reports for a container the OOM killer (or anything) SIGKILLed."""
OOM_REASON = "OOMKilled"
RELEASE_TIMEOUT_S = 5.0
"""How long a deleted pod's groups may stay busy before the leftover is reported."""


def _millis(quantity: str) -> int:
    return round(parse_quantity(quantity) * 1000)


def container_limits(container: Container) -> Limits:
    """One container's group from its ``resources``; a limit without a request gets the limit as its request."""
    requests, limits = container.resources.requests, container.resources.limits
    cpu_limit = _millis(limits["cpu"]) if "cpu" in limits else None
    cpu_request = _millis(requests["cpu"]) if "cpu" in requests else cpu_limit
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else None
    return Limits(memory_bytes=memory, cpu_limit_millis=cpu_limit, cpu_request_millis=cpu_request)


def _pod_total(regular: Sequence[int | None], init: Sequence[int | None]) -> int | None:
    """The kubelet's pod value: the sum over containers, or the largest init container if larger.

    Unlimited (None) when any container is: one unlimited container leaves the pod unlimited.
    """
    if not regular or None in regular or None in init:
        return None
    total = sum(v for v in regular if v is not None)
    return max([total, *(v for v in init if v is not None)])


def pod_limits(spec: PodSpec, pids_max: int | None = None) -> Limits:
    """The pod group (the kubelet's ``pod<uid>``): what its containers sum to; ``pids_max`` is podPidsLimit."""
    regular = [container_limits(c) for c in spec.containers]
    init = [container_limits(c) for c in spec.init_containers]
    request = max([sum(c.cpu_request_millis or 0 for c in regular), *(c.cpu_request_millis or 0 for c in init)])
    return Limits(
        memory_bytes=_pod_total([c.memory_bytes for c in regular], [c.memory_bytes for c in init]),
        cpu_limit_millis=_pod_total([c.cpu_limit_millis for c in regular], [c.cpu_limit_millis for c in init]),
        cpu_request_millis=request,
        pids_max=pids_max,
    )


def memory_volume_bytes(size_limit: str | None, pod_memory: int | None) -> int | None:
    """A ``medium: Memory`` emptyDir's tmpfs size: its sizeLimit, capped by the pod's memory limit.

    The kubelet's SizeMemoryBackedVolumes (GA in 1.32): a write past it fails with ENOSPC. None
    (no size option: the kernel's half of RAM) only when neither is set; the kubelet would take
    the node's allocatable memory then.
    """
    sizes = [s for s in (None if size_limit is None else int(parse_quantity(size_limit)), pod_memory) if s]
    return min(sizes) if sizes else None


@dataclass(frozen=True)
class Termination:
    """A container's terminated state as the kubelet reports it (``lastState.terminated``)."""

    reason: str
    exit_code: int


def termination(returncode: int | None, oom_killed: bool) -> Termination:
    """How a container ended, from its runner's return code and whether its group recorded an OOM kill.

    Popen reports death by signal N as -N; the runtime reports 128 + N. An OOM kill is
    ``OOMKilled`` with 137 whatever the runner saw (the pod runner kills the rest of the container
    itself on cgroup v1, see :meth:`PodLimits.oom_killed`).
    """
    if oom_killed:
        return Termination(OOM_REASON, OOM_EXIT_CODE)
    code = -1 if returncode is None else (128 - returncode if returncode < 0 else returncode)
    return Termination("Completed" if code == 0 else "Error", code)


@functools.cache
def host_hierarchy() -> cgroups.Hierarchy | None:
    """The host's cgroup hierarchy when this process may write it (root), else None (limits not enforced)."""
    if os.geteuid() != 0:
        return None
    version = cgroups.detect_version()
    return None if version is None else cgroups.Hierarchy(version)


class PodLimits:
    """One pod's groups and memory-backed volumes on this host (a no-op where cgroups are unusable)."""

    def __init__(self, uid: str, spec: PodSpec, hierarchy: cgroups.Hierarchy | None) -> None:
        self.spec = spec
        self.hierarchy = hierarchy
        self.pod_path = f"pod{uid}"
        self.limits = pod_limits(spec)
        self._mounted: list[Path] = []
        self._pod_kills_before = 0

    @property
    def enforced(self) -> bool:
        return self.hierarchy is not None

    def make_pod_group(self) -> None:
        if self.hierarchy is not None:
            self.hierarchy.make(self.pod_path, self.limits)

    def pod_out_of_memory(self) -> bool:
        """Whether the pod group waits at its own memory limit (v1) or had a kill since the current run started.

        v2 counts kills over the subtree: an earlier run's count must not condemn this one.
        """
        if self.hierarchy is None:
            return False
        group = self.hierarchy.group(self.pod_path)
        return group.under_oom() or group.oom_kills() > self._pod_kills_before

    def container_group(self, container: Container, incarnation: int) -> Group | None:
        """A fresh group for one run of ``container`` (a restart is a new container, a new group)."""
        if self.hierarchy is None:
            return None
        self._pod_kills_before = self.hierarchy.group(self.pod_path).oom_kills()
        return self.hierarchy.make(f"{self.pod_path}/{container.name}-{incarnation}", container_limits(container))

    def drop_container_group(self, group: Group | None) -> None:
        # Its charges (tmpfs pages it wrote) move up to the pod group, which keeps counting them.
        if group is not None:
            for directory in group.dirs.values():
                cgroups.remove_tree(directory)

    def mount_memory_volumes(self, volume_dir: Path) -> None:
        """A tmpfs for each ``medium: Memory`` emptyDir under ``volume_dir`` (before the volumes are materialised)."""
        for volume in self.spec.volumes:
            if volume.kind != "emptyDir" or volume.medium != "Memory" or self.hierarchy is None:
                continue
            path = volume_dir / volume.name
            path.mkdir(parents=True, exist_ok=True)
            size = memory_volume_bytes(volume.size_limit, self.limits.memory_bytes)
            options = "mode=0777,nosuid,nodev" + ("" if size is None else f",size={size}")
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "ha-celery-emptydir", str(path)], check=True)
            self._mounted.append(path)

    def release(self) -> list[str]:
        """Unmount the tmpfs volumes and remove the pod's groups; what could not be removed."""
        left: list[str] = []
        for path in self._mounted:
            # Lazy: a dying container's mount namespace may still hold it for a moment.
            if subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True).returncode != 0:
                left.append(str(path))
        self._mounted.clear()
        if self.hierarchy is not None:
            directories = list(self.hierarchy.group(self.pod_path).dirs.values())
            # A killed container's last processes may take a moment to leave its group (seen: a broker's).
            deadline = time.monotonic() + RELEASE_TIMEOUT_S
            while True:
                busy = [p for d in directories for p in cgroups.remove_tree(d)]
                if not busy or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            left += [str(p) for p in busy]
        return left


__all__ = [
    "OOM_EXIT_CODE",
    "OOM_REASON",
    "PodLimits",
    "Termination",
    "container_limits",
    "host_hierarchy",
    "memory_volume_bytes",
    "pod_limits",
    "termination",
]
