"""Settings: every invalid value fails before any resource exists, naming key, value and what is allowed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

import settings
from settings import BrokerStorage, DiskType, Environment, SettingsError

ROOT = Path(__file__).resolve().parent.parent
DEV: dict[str, str] = {"location": "us-east1-c"}
PROD: dict[str, str] = {
    "environment": "prod",
    "location": "us-east1",
    "nodeZones": '["us-east1-b", "us-east1-c", "us-east1-d"]',
    "spotNodes": "false",
}


def parse(base: dict[str, str], project: str | None = "my-project-1", **overrides: Any) -> settings.Settings:
    raw = dict(base)
    raw.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in overrides.items()})
    return settings.parse("test", raw, project)


def test_defaults_come_from_pulumi_yaml() -> None:
    s = parse(DEV)
    schema = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert s.cluster.node_count == schema["nodeCount"]["default"]
    assert s.broker.image == schema["brokerImage"]["default"]
    assert s.broker.storage is BrokerStorage(schema["brokerStorage"]["default"])
    assert s.environment is Environment.DEV


def test_every_key_has_type_and_description() -> None:
    for key, spec in settings.schema().items():
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
        assert spec.get("description"), f"{key} has no description"


def test_zonal_and_regional() -> None:
    dev = parse(DEV)
    assert (dev.cluster.regional, dev.cluster.region, dev.cluster.node_zones) == (False, "us-east1", ("us-east1-c",))
    assert dev.cluster.nodes_per_zone == 3
    prod = parse(PROD)
    assert prod.cluster.regional
    assert prod.cluster.nodes_per_zone == 1, "regional node_count is per zone: 3 nodes over 3 zones is 1 per zone"


def test_storage_kinds_map_to_disk_types() -> None:
    assert parse(DEV, brokerStorage="ssd").broker.storage.disk_type is DiskType.PD_SSD
    assert parse(DEV, brokerStorage="standard").broker.storage.disk_type is DiskType.PD_STANDARD
    assert parse(DEV, brokerStorage="balanced").broker.storage.disk_type is DiskType.PD_BALANCED


BAD: list[tuple[str, dict[str, str], dict[str, Any], str, str]] = [
    # id, base, overrides, key named, words of the allowed values
    (
        "unknown-storage",
        DEV,
        {"brokerStorage": "nvme"},
        "ha-celery:brokerStorage",
        "ssd | balanced | standard | hyperdisk",
    ),
    ("even-replicas-prod", PROD, {"brokerReplicas": 4}, "ha-celery:brokerReplicas", "odd number >= 3"),
    ("one-replica-prod", PROD, {"brokerReplicas": 1}, "ha-celery:brokerReplicas", "odd number >= 3"),
    ("zero-nodes", DEV, {"nodeCount": 0}, "ha-celery:nodeCount", ">= 1"),
    ("negative-nodes", DEV, {"nodeCount": -3}, "ha-celery:nodeCount", ">= 1"),
    ("nodes-not-fitting-zones", PROD, {"nodeCount": 4}, "ha-celery:nodeCount", "multiple of the 3 zones"),
    (
        "n4-with-pd-disk",
        DEV,
        {"machineType": "n4-standard-4", "nodeDiskType": "pd-balanced"},
        "ha-celery:nodeDiskType",
        "Hyperdisk",
    ),
    (
        "c4-with-pd-ssd-broker",
        DEV,
        {"machineType": "c4-standard-4", "nodeDiskType": "hyperdisk-balanced", "brokerStorage": "ssd"},
        "ha-celery:brokerStorage",
        "Hyperdisk",
    ),
    ("e2-with-hyperdisk", DEV, {"nodeDiskType": "hyperdisk-balanced"}, "ha-celery:nodeDiskType", "cannot attach"),
    ("malformed-location", DEV, {"location": "US_EAST"}, "ha-celery:location", "a region like us-east1"),
    (
        "zone-of-other-region",
        PROD,
        {"nodeZones": ["us-west1-a", "us-east1-c", "us-east1-d"]},
        "ha-celery:nodeZones",
        "a zone of region us-east1",
    ),
    ("regional-without-zones", PROD, {"nodeZones": []}, "ha-celery:nodeZones", "one or more zones"),
    ("zero-storage", DEV, {"brokerStorageGi": 0}, "ha-celery:brokerStorageGi", ">= 1"),
    ("tiny-memory", DEV, {"brokerMemoryMiB": 64}, "ha-celery:brokerMemoryMiB", ">= 512"),
    ("zero-concurrency", DEV, {"workerConcurrency": 0}, "ha-celery:workerConcurrency", ">= 1"),
    ("not-a-number", DEV, {"nodeCount": "three"}, "ha-celery:nodeCount", "whole number"),
    ("floating-image", DEV, {"brokerImage": "rabbitmq:latest"}, "ha-celery:brokerImage", "full version"),
    ("spot-in-prod", PROD, {"spotNodes": True}, "ha-celery:spotNodes", "false in prod"),
    ("bad-environment", DEV, {"environment": "production"}, "ha-celery:environment", "dev | prod"),
    ("bad-channel", DEV, {"releaseChannel": "beta"}, "ha-celery:releaseChannel", "RAPID | REGULAR | STABLE"),
    ("bad-autoscaling", DEV, {"autoscaling": "vpa"}, "ha-celery:autoscaling", "none | hpa | keda"),
    ("bad-k8s-version", DEV, {"kubernetesVersion": "1.35.2"}, "ha-celery:kubernetesVersion", "major.minor"),
    ("unknown-key", DEV, {"brokerReplica": 3}, "ha-celery:brokerReplica", "one of the keys in Pulumi.yaml"),
]


@pytest.mark.parametrize(("base", "overrides", "key", "allowed"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_value_names_key_value_and_allowed(
    base: dict[str, str], overrides: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as error:
        parse(base, **overrides)
    message = str(error.value)
    assert f"{key}: got " in message, message
    assert allowed in message, message


@pytest.mark.parametrize("project", [None, "", "My_Project"])
def test_missing_or_malformed_gcp_project(project: str | None) -> None:
    with pytest.raises(SettingsError, match=r"gcp:project: got .*pulumi config set gcp:project"):
        parse(DEV, project=project)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        parse(PROD, brokerReplicas=2, brokerStorage="nvme", nodeCount=0)
    assert len(error.value.problems) == 3, error.value.problems


def test_a_rejected_value_is_reported_once() -> None:
    # The cross-field rules see the default put in place of a rejected value (pd-balanced on
    # a Hyperdisk-only N4, 1 broker in prod): they must not report the key a second time.
    with pytest.raises(SettingsError) as error:
        parse(PROD, machineType="n4-standard-4", nodeDiskType="nvme", brokerReplicas="three")
    assert error.value.problems == [
        "ha-celery:nodeDiskType: got 'nvme'; allowed: pd-standard | pd-balanced | pd-ssd | hyperdisk-balanced",
        "ha-celery:brokerReplicas: got 'three'; allowed: a whole number >= 1",
        "ha-celery:brokerStorage: got 'standard'; allowed: hyperdisk kinds only: N4 machines (n4-standard-4) attach"
        " Hyperdisk, not pd-standard",
    ]


def test_dev_allows_what_prod_forbids() -> None:
    s = parse(DEV, brokerReplicas=1, spotNodes=True)
    assert s.broker.replicas == 1
    assert s.cluster.spot_nodes


@pytest.mark.parametrize(
    ("stack", "override", "key"),
    [
        ("prod", "brokerReplicas=4", "ha-celery:brokerReplicas"),
        ("dev", "brokerStorage=nvme", "ha-celery:brokerStorage"),
        ("prod", "nodeCount=2", "ha-celery:nodeCount"),
        ("dev", "gcp:project=", "gcp:project"),
    ],
)
def test_make_plan_fails_before_any_resource(
    plan_runner: Callable[..., CompletedProcess[str]], stack: str, override: str, key: str
) -> None:
    done = plan_runner(stack, override)
    assert done.returncode == 2, done.stderr
    assert f"{key}: got " in done.stderr
    assert "0 resources were registered" in done.stderr
