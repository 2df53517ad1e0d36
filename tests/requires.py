"""What a test needs from the machine, and the one rule when it is missing: skip on a developer's machine,
fail under ``CI=true``.

A developer without root or promtool still runs everything else; in CI the same absence means the pipeline
is broken (``make setup`` installs every tool), so a skip there would count an untested path as passing.
Call :func:`requires` in the test or in the fixture that uses the thing, before using it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Final

import pytest

from harness.prometheus import prometheus_installed
from harness.runtime import nft
from harness.seed.cluster import rabbitmq_installed

CI_VALUES: Final = frozenset({"1", "true", "yes"})
"""Values of ``CI`` that mean "this is the pipeline" (GitHub Actions and most CIs set ``CI=true``)."""


def _tool(name: str, hint: str) -> tuple[Callable[[], bool], str]:
    return (lambda: shutil.which(name) is not None), f"{name} is not installed ({hint})"


THINGS: Final[dict[str, tuple[Callable[[], bool], str]]] = {
    "rabbitmq-server": (
        rabbitmq_installed,
        "rabbitmq-server is not installed (make system-deps: Debian's rabbitmq-server, 3.10)",
    ),
    "root": (lambda: os.geteuid() == 0, "needs root (network namespaces, mounts, chroot)"),
    "promtool": _tool("promtool", "make system-deps: Debian's prometheus package"),
    "prometheus": (prometheus_installed, "prometheus is not installed (make system-deps: Debian's prometheus package)"),
    "uv": _tool("uv", "make setup installs it"),
    "zstd": _tool("zstd", "make system-deps"),
    "nft": (nft.available, "nft is not installed (make system-deps: Debian's nftables, the pods' NetworkPolicy rules)"),
}
"""Each thing a test may need -> (is it here?, what to tell the developer when it is not)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in CI_VALUES


def requires(*things: str) -> None:
    """Skip the test when one of ``things`` is missing here; fail it instead under ``CI=true``."""
    unknown = [t for t in things if t not in THINGS]
    if unknown:
        raise ValueError(f"requires(): unknown {unknown}; known: {' | '.join(THINGS)}")
    for thing in things:
        present, reason = THINGS[thing]
        if present():
            continue
        if in_ci():
            pytest.fail(f"{reason} (CI=true: a missing tool is a broken pipeline, not an optional test)")
        pytest.skip(reason)
