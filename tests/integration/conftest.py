"""Fixtures that boot real local RabbitMQ clusters (Debian's rabbitmq-server 3.10).

Missing rabbitmq-server skips these tests on a developer machine and fails them in CI
(``CI=true``), where its absence means the pipeline is broken, not that the tests are optional.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.seed.cluster import LocalCluster, rabbitmq_installed


def require_rabbitmq() -> None:
    if rabbitmq_installed():
        return
    reason = "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")


def cluster_workdir(prefix: str) -> Path:
    # Not pytest's tmp_path: /tmp/pytest-of-<user> is 0700, the rabbitmq user cannot enter it.
    return Path(tempfile.mkdtemp(prefix=f"hacel-{prefix}-"))


def _run(cluster: LocalCluster) -> Iterator[LocalCluster]:
    try:
        with cluster:
            yield cluster
    finally:
        shutil.rmtree(cluster.workdir, ignore_errors=True)


@pytest.fixture
def rabbitmq_available() -> None:
    """For tests that start their own LocalCluster: skip/fail like the cluster fixtures."""
    require_rabbitmq()


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[LocalCluster]:
    """One started single-node cluster, shared by the whole session (do not kill it)."""
    require_rabbitmq()
    yield from _run(LocalCluster(cluster_workdir("node"), nodes=1))


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[LocalCluster]:
    """A started 3-node cluster per test module; tests that kill a node must bring it back."""
    require_rabbitmq()
    yield from _run(LocalCluster(cluster_workdir("cluster"), nodes=3))


@pytest.fixture(scope="module")
def netns_cluster() -> Iterator[LocalCluster]:
    """A started 3-node cluster, one network namespace per node (root only)."""
    require_rabbitmq()
    require_root()
    yield from _run(LocalCluster(cluster_workdir("netns"), nodes=3, netns=True))
