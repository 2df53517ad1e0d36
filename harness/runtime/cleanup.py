"""What crashed runs left behind: their process groups and network namespaces.

Its own module, not :mod:`harness.runtime.processes`: it needs both ``processes`` and ``netns``,
and ``netns`` already imports ``processes``.
"""

from __future__ import annotations

import os
import subprocess

from harness.runtime import cgroups, processes, rootfs
from harness.runtime import netns as nsmod


def _group_is_a_broker(pgid: int) -> bool:
    # A recorded group id may have been reused since: only kill what still looks like ours.
    # ha-celery-rootfs: a pod runner's container (harness.runtime.rootfs.CONTAINER_STAGE), broker or worker;
    # ha-celery-prometheus: the drills' Prometheus (its config file, harness.prometheus.CONFIG_NAME).
    markers = (b"rabbitmq", b"beam.smp", b"epmd", b"ha-celery-rootfs", b"ha-celery-prometheus")
    return any(marker in cmdline for cmdline in processes.group_cmdlines(pgid) for marker in markers)


def cleanup_stale() -> list[str]:
    """Kill what clusters of dead processes left running; return what was cleaned.

    The nodes and pods run in sessions of their own (so that one ``killpg`` takes a whole node or
    container down), which also means they outlive a harness that is SIGKILLed before ``stop()``.
    Groups recorded by runs whose owner is gone are killed here, then (as root) the namespaces
    of dead owners. Clusters of live processes, e.g. a concurrent test run, are left alone.
    ``LocalCluster.start`` and ``KubeCluster.start`` call this first.
    """
    cleaned = processes.cleanup_stale(_group_is_a_broker)
    if os.geteuid() == 0:
        # A dead run's memory-backed emptyDirs (tmpfs, harness.kube.limits) stay mounted under its workdir.
        for point in (p for workdir in cleaned for p in sorted(rootfs.mounts_under(workdir), reverse=True)):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        cleaned += nsmod.cleanup_stale()
        # Only groups left empty: a live run's pods still hold theirs.
        cleaned += cgroups.cleanup_stale()
    return cleaned
