"""Shared fixtures: a minimal StatefulSet/Deployment manifest to mutate, and the real plan directories."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Plan

STS: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {"name": "rabbitmq", "namespace": "ns", "labels": {"app": "rabbitmq"}},
    "spec": {
        "replicas": 3,
        "serviceName": "rabbitmq-nodes",
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": {"app": "rabbitmq"}},
        "template": {
            "metadata": {"labels": {"app": "rabbitmq"}},
            "spec": {
                "containers": [
                    {
                        "name": "rabbitmq",
                        "image": "rabbitmq:4.3",
                        "ports": [{"name": "amqp", "containerPort": 5672}],
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/rabbitmq/mnesia"}],
                    }
                ],
                "volumes": [],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
        ],
    },
}

DEPLOY: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "worker", "namespace": "ns"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "worker"}},
        "template": {
            "metadata": {"labels": {"app": "worker"}},
            "spec": {"containers": [{"name": "worker", "image": "worker:1", "command": ["celery"]}]},
        },
    },
}


@pytest.fixture
def sts() -> dict[str, Any]:
    """A fresh, minimal, fully supported StatefulSet manifest."""
    return copy.deepcopy(STS)


@pytest.fixture
def deploy() -> dict[str, Any]:
    """A fresh, minimal, fully supported Deployment manifest."""
    return copy.deepcopy(DEPLOY)


def container(obj: dict[str, Any], i: int = 0) -> dict[str, Any]:
    """The i-th container of a workload manifest, to mutate."""
    c: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][i]
    return c


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload manifest, to mutate."""
    p: dict[str, Any] = obj["spec"]["template"]["spec"]
    return p


@pytest.fixture(params=["dev", "prod"])
def plan_dir(request: pytest.FixtureRequest, plans: dict[str, Plan]) -> Path:
    """A real plan directory of each stack, built once per session by the top-level conftest."""
    return plans[str(request.param)].directory
