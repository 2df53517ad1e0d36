"""Fixtures that boot real local RabbitMQ clusters (Debian's rabbitmq-server 3.10).

Missing rabbitmq-server (or root, for network namespaces) skips these tests on a developer machine
and fails them under ``CI=true`` (tests/requires.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.seed.cluster import LocalCluster
from tests.requires import requires


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
    requires("rabbitmq-server")


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[LocalCluster]:
    """One started single-node cluster, shared by the whole session (do not kill it)."""
    requires("rabbitmq-server")
    yield from _run(LocalCluster(cluster_workdir("node"), nodes=1))


@pytest.fixture(scope="package")
def rabbit_cluster() -> Iterator[LocalCluster]:
    """A started 3-node cluster shared by the modules here (one boot, ~25 s, instead of one per module);
    a test that kills or stops a node must bring it back."""
    requires("rabbitmq-server")
    yield from _run(LocalCluster(cluster_workdir("cluster"), nodes=3))
