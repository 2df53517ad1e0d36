"""Control groups for the pod runner's containers, laid out and valued as the kubelet does.

The kubelet puts every pod in a pod-level group (``kubepods/<qos>/pod<uid>``) and every container
in a group of its own below it. This module turns a group's :class:`Limits` (computed from a pod
spec by ``harness.kube.limits``) into the files to write (pure: :func:`knobs`) and applies them on the host
(:class:`Hierarchy`): cgroup v2 when the host runs the unified hierarchy (``cgroup.controllers``
at the root), otherwise v1 with the memory, cpu and pids controllers mounted separately.

What the kubelet writes (pkg/kubelet/cm, helpers_linux.go, and runc's v1/v2 writers):

* memory limit -> ``memory.limit_in_bytes`` (v1) / ``memory.max`` (v2); swap off for the group
  (``memory.memsw.limit_in_bytes`` equal to the limit where the knob exists, ``memory.swap.max``
  0 on v2); the pod group gets the sum of its containers' limits when every container has one;
* cpu limit -> CFS quota per 100 ms period (``MilliCPUToQuota``, at least 1 ms); cpu request ->
  ``cpu.shares`` (``MilliCPUToShares``: milli * 1024 / 1000, at least 2), v2 ``cpu.weight`` by
  the kubelet's conversion; a limit without a request gets the limit as request (API defaulting);
* pids: the kubelet writes ``pids.max`` on the pod group only when its ``podPidsLimit`` is set.
  Its default is -1 (unlimited) and GKE leaves it unset unless a node pool's system config sets
  ``podPidsLimit``, so the pod runner counts pids per pod and limits them only when asked.
* cgroup v2 and kubelet >= 1.28: ``memory.oom.group`` is 1, so an OOM kill takes the whole
  container, not one process of it (GKE nodes run v2). v1 has no such knob; the pod runner
  reproduces it with ``memory.oom_control`` 1 (the kernel kills nothing: a process that hits the
  limit waits, ``under_oom`` 1) and kills the whole container as soon as it sees that (the
  kubelet), so no process of it runs on after the OOM, as with the group kill.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNNER_GROUP = "ha-celery"
"""Every group the pod runner makes lives under this one (the kubelet's is ``kubepods``)."""
CFS_PERIOD_US = 100_000
"""The kubelet's default cpuCFSQuotaPeriod."""
MIN_QUOTA_US = 1_000
MIN_SHARES = 2
MAX_SHARES = 262_144
SHARES_PER_CPU = 1_024
V1_CONTROLLERS = ("memory", "cpu", "pids")

Version = Literal[1, 2]


@dataclass(frozen=True)
class Limits:
    """What one group is given: bytes, CPU millicores and a pid count; None means no limit."""

    memory_bytes: int | None = None
    cpu_limit_millis: int | None = None
    cpu_request_millis: int | None = None
    pids_max: int | None = None


def shares(request_millis: int | None) -> int:
    """The kubelet's MilliCPUToShares (no request: the minimum, 2)."""
    if not request_millis:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, request_millis * SHARES_PER_CPU // 1000))


def quota_us(limit_millis: int, period_us: int = CFS_PERIOD_US) -> int:
    """The kubelet's MilliCPUToQuota: the CPU time per period a limit allows, at least 1 ms."""
    return max(MIN_QUOTA_US, limit_millis * period_us // 1000)


def weight(shares_value: int) -> int:
    """cgroup v2 cpu.weight from v1 shares, the conversion the kubelet and runc use."""
    return 1 + ((shares_value - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


OPTIONAL_KNOBS = frozenset({"memory.memsw.limit_in_bytes", "memory.swap.max"})
"""Swap knobs, absent on a kernel without swap accounting: skipped there (no swap to turn off)."""


def knobs(limits: Limits, version: Version) -> dict[str, dict[str, str]]:
    """Controller -> {file: value} to write for ``limits`` (v2: one "controller", the unified group)."""
    if version == 2:
        quota = "max" if limits.cpu_limit_millis is None else str(quota_us(limits.cpu_limit_millis))
        unified = {
            "memory.max": "max" if limits.memory_bytes is None else str(limits.memory_bytes),
            "memory.swap.max": "0",
            "memory.oom.group": "1",
            "cpu.max": f"{quota} {CFS_PERIOD_US}",
            "cpu.weight": str(weight(shares(limits.cpu_request_millis))),
            "pids.max": "max" if limits.pids_max is None else str(limits.pids_max),
        }
        return {"": unified}
    memory = {"memory.limit_in_bytes": "-1" if limits.memory_bytes is None else str(limits.memory_bytes)}
    # memsw (memory + swap) equal to the limit: swap off for the group. Written after the limit (memsw >= limit).
    memory["memory.memsw.limit_in_bytes"] = memory["memory.limit_in_bytes"]
    # No kernel kill of one process: the group waits at its limit until the whole container is killed (v2's oom.group).
    memory["memory.oom_control"] = "1"
    cpu = {
        "cpu.cfs_period_us": str(CFS_PERIOD_US),
        "cpu.cfs_quota_us": "-1" if limits.cpu_limit_millis is None else str(quota_us(limits.cpu_limit_millis)),
        "cpu.shares": str(shares(limits.cpu_request_millis)),
    }
    pids = {"pids.max": "max" if limits.pids_max is None else str(limits.pids_max)}
    return {"memory": memory, "cpu": cpu, "pids": pids}


def _counter(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def oom_kills(text: str) -> int:
    """The OOM-kill count from ``memory.oom_control`` (v1) or ``memory.events`` (v2): both say ``oom_kill N``."""
    return _counter(text, "oom_kill")


def under_oom(text: str) -> bool:
    """Whether a v1 group with kernel kills off waits at its limit (``under_oom 1``); v2 never says so."""
    return _counter(text, "under_oom") > 0


def out_of_memory(text: str) -> bool:
    """Whether the group hit its limit for good: the kernel killed in it, or (v1, kills off) it waits at it."""
    return oom_kills(text) > 0 or under_oom(text)


@dataclass(frozen=True)
class Group:
    """One group on the host: its directory under each controller (v1) or the unified one (v2)."""

    version: Version
    dirs: Mapping[str, Path]
    """Controller ("" on v2) -> directory."""

    @property
    def memory_dir(self) -> Path:
        return self.dirs["" if self.version == 2 else "memory"]

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def _oom_text(self) -> str:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            return (self.memory_dir / name).read_text()
        except OSError:  # the group is gone
            return ""

    def out_of_memory(self) -> bool:
        """See :func:`out_of_memory`."""
        return out_of_memory(self._oom_text())

    def oom_kills(self) -> int:
        """Kernel OOM kills in the group (v2: its whole subtree)."""
        return oom_kills(self._oom_text())

    def under_oom(self) -> bool:
        return under_oom(self._oom_text())

    def read(self, controller: str, name: str) -> str:
        """A knob's or statistic's text (``memory.max_usage_in_bytes``, ``cpu.stat``)."""
        directory = self.dirs["" if self.version == 2 else controller]
        return (directory / name).read_text()

    def peak_memory_bytes(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.memory_dir / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started inside this group: a shell writes its own pid to each group, then execs it.

        Before the exec, so everything it forks (the container's PID 1, its main process, a pool)
        is born inside; a pid moved later would leave children already forked outside (v1).
        """
        writes = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self.procs_files)
        return ["/bin/sh", "-c", f'{writes} && exec "$@"', "cgroup-enter", *argv]


class CgroupError(RuntimeError):
    """A group could not be made or written (the message names the file)."""


def detect_version(root: Path = CGROUP_ROOT) -> Version | None:
    """2 on a unified hierarchy, 1 when the v1 memory, cpu and pids controllers are mounted, else None."""
    if (root / "cgroup.controllers").exists():
        return 2
    if all((root / c / "cgroup.procs").exists() for c in V1_CONTROLLERS):
        return 1
    return None


class Hierarchy:
    """Makes, fills and removes the runner's groups under ``root`` (``/sys/fs/cgroup`` as root)."""

    def __init__(self, version: Version, root: Path = CGROUP_ROOT) -> None:
        self.version: Version = version
        self.root = root

    def _dirs(self, relative: str) -> dict[str, Path]:
        if self.version == 2:
            return {"": self.root / RUNNER_GROUP / relative}
        return {c: self.root / c / RUNNER_GROUP / relative for c in V1_CONTROLLERS}

    def group(self, relative: str) -> Group:
        return Group(self.version, self._dirs(relative))

    def make(self, relative: str, limits: Limits) -> Group:
        """Create the group ``ha-celery/<relative>`` (and its parents) and write ``limits`` to it."""
        group = self.group(relative)
        if self.version == 2:
            self._enable_v2_controllers(group.dirs[""])
        for directory in group.dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        for controller, values in knobs(limits, self.version).items():
            for name, value in values.items():
                path = group.dirs[controller] / name
                if name in OPTIONAL_KNOBS and not path.exists():
                    continue
                self._write(path, value)
        return group

    def _enable_v2_controllers(self, leaf: Path) -> None:
        # v2 hands a controller to children only through each ancestor's cgroup.subtree_control.
        ancestors = [p for p in [leaf, *leaf.parents] if p != self.root and self.root in p.parents][1:]
        for directory in [self.root, *reversed(ancestors)]:
            directory.mkdir(exist_ok=True)
            for controller in ("memory", "cpu", "pids"):
                self._write(directory / "cgroup.subtree_control", f"+{controller}")

    @staticmethod
    def _write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise CgroupError(f"cannot write {value!r} to {path}: {exc}") from exc

    def remove(self, relative: str) -> None:
        """Remove the group and what is left below it (each must be empty of processes)."""
        for directory in self.group(relative).dirs.values():
            remove_tree(directory)


def remove_tree(directory: Path) -> list[Path]:
    """rmdir ``directory`` and its subgroups, deepest first; return those still busy."""
    if not directory.is_dir():
        return []
    busy: list[Path] = []
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        busy += _rmdir(sub)
    return busy + _rmdir(directory)


def _rmdir(directory: Path) -> list[Path]:
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        return [directory]
    return []


def cleanup_stale(root: Path = CGROUP_ROOT) -> list[str]:
    """Remove the runner's groups left empty by crashed runs (busy ones, of live runs, stay)."""
    version = detect_version(root)
    if version is None:
        return []
    tops = [root / RUNNER_GROUP] if version == 2 else [root / c / RUNNER_GROUP for c in V1_CONTROLLERS]
    cleaned: list[str] = []
    for top in tops:
        for pod in sorted(top.glob("pod*")) if top.is_dir() else []:
            with contextlib.suppress(OSError):
                if not remove_tree(pod):
                    cleaned.append(str(pod))
    return cleaned


__all__ = [
    "CgroupError",
    "Group",
    "Hierarchy",
    "Limits",
    "detect_version",
    "knobs",
    "oom_kills",
    "out_of_memory",
    "quota_us",
    "shares",
    "under_oom",
    "weight",
]
