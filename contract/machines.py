"""The Compute Engine machine types a stack may use, and what GKE leaves of each for pods.

Settings check every pod's request against a node's allocatable CPU and memory, so a broker
that no node can hold (16 GiB on an 8 GB machine) is refused before `pulumi up`, not left
Pending. The shapes are Compute Engine's predefined ones (cloud.google.com/compute/docs/
general-purpose-machines); shared-core types (e2-medium, e2-small) are left out: GKE's
reservations are different for them and they are too small for a broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_PODS_PER_NODE: Final = 110
"""GKE Standard's default maximum pods per node (the node pool does not set another)."""

EVICTION_THRESHOLD_MIB: Final = 100
"""The kubelet's hard eviction threshold GKE reserves on every node (memory.available < 100Mi)."""

# family -> shape -> (GB of memory per vCPU, the vCPU counts Compute Engine offers). Compute
# Engine's "GB" of machine memory are GiB: an e2-standard-2 has 8 GiB.
_SHAPES: Final[dict[str, dict[str, tuple[float, tuple[int, ...]]]]] = {
    "e2": {
        "standard": (4, (2, 4, 8, 16, 32)),
        "highmem": (8, (2, 4, 8, 16)),
        "highcpu": (1, (2, 4, 8, 16, 32)),
    },
    "n2": {
        "standard": (4, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
        "highmem": (8, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
        "highcpu": (1, (2, 4, 8, 16, 32, 48, 64, 80, 96)),
    },
    "n2d": {
        "standard": (4, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224)),
        "highmem": (8, (2, 4, 8, 16, 32, 48, 64, 80, 96)),
        "highcpu": (1, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224)),
    },
    "n4": {
        "standard": (4, (2, 4, 8, 16, 32, 48, 64, 80)),
        "highmem": (8, (2, 4, 8, 16, 32, 48, 64, 80)),
        "highcpu": (2, (2, 4, 8, 16, 32, 48, 64, 80)),
    },
    "c4": {
        "standard": (3.75, (2, 4, 8, 16, 24, 32, 48, 96, 192)),
        "highmem": (7.75, (2, 4, 8, 16, 24, 32, 48, 96, 192)),
        "highcpu": (2, (2, 4, 8, 16, 24, 32, 48, 96, 192)),
    },
    "c4d": {
        "standard": (3.875, (2, 4, 8, 16, 32, 48, 64, 96, 192, 384)),
        "highmem": (7.875, (2, 4, 8, 16, 32, 48, 64, 96, 192, 384)),
        "highcpu": (1.875, (2, 4, 8, 16, 32, 48, 64, 96, 192, 384)),
    },
    # Arm families (settings refuse them unless the images are built for arm64).
    "t2a": {"standard": (4, (1, 2, 4, 8, 16, 32, 48))},
    "c4a": {
        "standard": (4, (1, 2, 4, 8, 16, 32, 48, 64, 72)),
        "highmem": (8, (1, 2, 4, 8, 16, 32, 48, 64, 72)),
        "highcpu": (2, (1, 2, 4, 8, 16, 32, 48, 64, 72)),
    },
    "n4a": {"standard": (4, (1, 2, 4, 8, 16, 32, 48, 64))},
}

_NAME_RE: Final = re.compile(r"(?P<family>[a-z][a-z0-9]{0,5})-(?P<shape>[a-z]{1,10})-(?P<vcpus>[1-9][0-9]{0,2})")


@dataclass(frozen=True)
class MachineType:
    name: str
    family: str
    vcpus: int
    memory_mib: int

    @property
    def allocatable_cpu_millis(self) -> int:
        """vCPUs minus GKE's CPU reservation (cloud.google.com/kubernetes-engine/docs/concepts/
        plan-node-sizes#cpu_reservations): 6% of the first core, 1% of the second, 0.5% of the
        next two, 0.25% of every core above four."""
        cores = self.vcpus * 1000
        tiers = ((1000, 0.06), (1000, 0.01), (2000, 0.005), (cores, 0.0025))
        return cores - round(_reserved(cores, tiers))

    @property
    def allocatable_memory_mib(self) -> int:
        """Memory minus GKE's reservation (the same page, #memory_reservations) and the eviction
        threshold: 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next
        112, 2% of everything above 128 GiB."""
        mib = self.memory_mib
        tiers = ((4096, 0.25), (4096, 0.20), (8192, 0.10), (114688, 0.06), (mib, 0.02))
        return mib - round(_reserved(mib, tiers)) - EVICTION_THRESHOLD_MIB


def _reserved(total: int, tiers: tuple[tuple[int, float], ...]) -> float:
    reserved, left = 0.0, total
    for size, share in tiers:
        part = min(left, size)
        reserved += part * share
        left -= part
    return reserved


def machine_type(name: str) -> MachineType | None:
    """The machine type called ``name``, or None when it is not one the table holds."""
    m = _NAME_RE.fullmatch(name)
    if not m:
        return None
    shape = _SHAPES.get(m["family"], {}).get(m["shape"])
    vcpus = int(m["vcpus"])
    if shape is None or vcpus not in shape[1]:
        return None
    return MachineType(name, m["family"], vcpus, round(shape[0] * vcpus * 1024))


def families() -> tuple[str, ...]:
    return tuple(_SHAPES)


def example_names() -> str:
    """A short description of the table for error messages."""
    return (
        "; ".join(f"{family}-{{{','.join(shapes)}}}-<vCPUs>" for family, shapes in _SHAPES.items())
        + " (Compute Engine's predefined sizes)"
    )
