"""Settings: every invalid value fails before any resource exists, naming key, value and what is allowed."""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import sys
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as runtime_settings

import settings
from app.config import ConfigError, from_env
from contract.image import ImagePlatforms
from contract.wire import ENV_BROKER_URLS, ENV_CONCURRENCY, MAX_CONCURRENCY
from settings import ARM_FAMILIES, STACK_MAX, BrokerStorage, DiskType, Environment, RegistryDomain, SettingsError
from tests.conftest import ROOT

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
    ("scheduler-run-not-a-name", DEV, {"schedulerRun": "Run_2"}, "ha-celery:schedulerRun", "lower-case letters"),
    ("scheduler-run-too-long", DEV, {"schedulerRun": "r" * 33}, "ha-celery:schedulerRun", "1-32 characters"),
    ("not-a-number", DEV, {"nodeCount": "three"}, "ha-celery:nodeCount", "whole number"),
    ("floating-image", DEV, {"brokerImage": "rabbitmq:latest"}, "ha-celery:brokerImage", "full version"),
    ("spot-in-prod", PROD, {"spotNodes": True}, "ha-celery:spotNodes", "false in prod"),
    ("bad-environment", DEV, {"environment": "production"}, "ha-celery:environment", "dev | prod"),
    ("bad-channel", DEV, {"releaseChannel": "beta"}, "ha-celery:releaseChannel", "RAPID | REGULAR | STABLE"),
    ("bad-autoscaling", DEV, {"autoscaling": "vpa"}, "ha-celery:autoscaling", "none | hpa | keda"),
    ("bad-k8s-version", DEV, {"kubernetesVersion": "1.35.2"}, "ha-celery:kubernetesVersion", "major.minor"),
    ("unknown-key", DEV, {"brokerReplica": 3}, "ha-celery:brokerReplica", "one of the keys in Pulumi.yaml"),
    ("unknown-key-suggestion", DEV, {"workerConcurency": 3}, "ha-celery:workerConcurency", "did you mean"),
    # The broker config (broker.config.BrokerConfig) refuses an even cluster in every environment.
    ("even-replicas-dev", DEV, {"brokerReplicas": 2}, "ha-celery:brokerReplicas", "an odd number >= 3 (3, 5, 7, ...)"),
    ("even-replicas-prod-2", PROD, {"brokerReplicas": 2}, "ha-celery:brokerReplicas", "odd number >= 3"),
    # The worker refuses WORKER_CONCURRENCY above contract.wire.MAX_CONCURRENCY at start.
    (
        "concurrency-above-worker-max",
        DEV,
        {"workerConcurrency": MAX_CONCURRENCY + 1},
        "ha-celery:workerConcurrency",
        f"a whole number >= 1 and <= {MAX_CONCURRENCY}",
    ),
    # The pool's recycling threshold (worker_max_memory_per_child) needs room under the limit.
    (
        "worker-memory-too-small-for-the-pool",
        DEV,
        {"workerMemoryMiB": 128, "workerConcurrency": 4},
        "ha-celery:workerMemoryMiB",
        "with workerConcurrency 4: 128 MiB leaves 16 MiB for 4 pool process(es)",
    ),
    # Required one-broker-per-node anti-affinity in prod: more brokers than nodes never schedule.
    ("more-brokers-than-nodes-prod", PROD, {"brokerReplicas": 5}, "ha-celery:brokerReplicas", "<= nodeCount (3)"),
    # The images are linux/amd64 only: an Arm node runs none of them.
    ("arm-t2a", DEV, {"machineType": "t2a-standard-4"}, "ha-celery:machineType", "an x86-64 machine type"),
    (
        "arm-c4a",
        DEV,
        {"machineType": "c4a-standard-4", "nodeDiskType": "hyperdisk-balanced", "brokerStorage": "hyperdisk"},
        "ha-celery:machineType",
        "linux/amd64 only",
    ),
    (
        "arm-n4a",
        DEV,
        {"machineType": "n4a-standard-4", "nodeDiskType": "hyperdisk-balanced", "brokerStorage": "hyperdisk"},
        "ha-celery:machineType",
        "not the Arm families a4x, c4a, n4a, t2a",
    ),
    # The hardened cluster's settings.
    ("private-nodes-docker-hub", DEV, {"privateNodes": True}, "ha-celery:privateNodes", "mirrorRabbitmqImage true"),
    ("private-nodes-not-bool", DEV, {"privateNodes": "yes"}, "ha-celery:privateNodes", "true | false"),
    ("secrets-encryption-not-bool", DEV, {"secretsEncryption": 1}, "ha-celery:secretsEncryption", "true | false"),
    ("broker-tls-not-bool", DEV, {"brokerTls": "yes"}, "ha-celery:brokerTls", "true | false"),
    (
        "cidr-not-a-list",
        DEV,
        {"masterAuthorizedNetworks": "10.0.0.0/8"},
        "ha-celery:masterAuthorizedNetworks",
        "a list",
    ),
    ("cidr-host-bits", DEV, {"masterAuthorizedNetworks": ["10.0.0.1/8"]}, "ha-celery:masterAuthorizedNetworks", "IPv4"),
    ("cidr-anywhere", DEV, {"masterAuthorizedNetworks": ["0.0.0.0/0"]}, "ha-celery:masterAuthorizedNetworks", "not 0."),
    ("cidr-ipv6", DEV, {"masterAuthorizedNetworks": ["2001:db8::/32"]}, "ha-celery:masterAuthorizedNetworks", "IPv4"),
    (
        "cidr-twice",
        DEV,
        {"masterAuthorizedNetworks": ["10.0.0.0/8", "10.0.0.0/8"]},
        "ha-celery:masterAuthorizedNetworks",
        "distinct",
    ),
    ("window-hour-24", DEV, {"maintenanceWindow": "24:00"}, "ha-celery:maintenanceWindow", "HH:MM in UTC"),
    ("window-am", DEV, {"maintenanceWindow": "3am"}, "ha-celery:maintenanceWindow", "HH:MM in UTC"),
    (
        "exclusion-without-window",
        DEV,
        {"maintenanceExclusions": ["2026-12-20/2027-01-03"]},
        "ha-celery:maintenanceExclusions",
        "unless ha-celery:maintenanceWindow is set",
    ),
    (
        "exclusion-too-long",
        DEV,
        {"maintenanceWindow": "03:00", "maintenanceExclusions": ["2026-12-01/2026-12-31"]},
        "ha-celery:maintenanceExclusions",
        "at most 30 days",
    ),
    (
        "exclusion-backwards",
        DEV,
        {"maintenanceWindow": "03:00", "maintenanceExclusions": ["2027-01-03/2026-12-20"]},
        "ha-celery:maintenanceExclusions",
        "FIRST/LAST",
    ),
    (
        "exclusion-not-a-date",
        DEV,
        {"maintenanceWindow": "03:00", "maintenanceExclusions": ["2026-02-30/2026-03-02"]},
        "ha-celery:maintenanceExclusions",
        "FIRST/LAST",
    ),
    (
        "exclusions-overlap",
        DEV,
        {"maintenanceWindow": "03:00", "maintenanceExclusions": ["2026-12-20/2026-12-31", "2026-12-31/2027-01-05"]},
        "ha-celery:maintenanceExclusions",
        "not overlapping",
    ),
    # Who the NetworkPolicies admit.
    ("ops-namespace-empty", DEV, {"opsNamespace": ""}, "ha-celery:opsNamespace", "a Kubernetes namespace name"),
    ("ops-namespace-upper", DEV, {"opsNamespace": "Ops"}, "ha-celery:opsNamespace", "lower-case letters"),
    ("ops-namespace-long", DEV, {"opsNamespace": "a" * 64}, "ha-celery:opsNamespace", "1-63"),
    (
        "prometheus-namespace-dot",
        DEV,
        {"prometheusNamespace": "mon.itoring"},
        "ha-celery:prometheusNamespace",
        '"" (none)',
    ),
    (
        "prometheus-namespace-dash",
        DEV,
        {"prometheusNamespace": "-mon"},
        "ha-celery:prometheusNamespace",
        "alphanumeric",
    ),
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


def test_hardening_settings() -> None:
    dev = parse(DEV).cluster
    assert (dev.private_nodes, dev.master_authorized_networks, dev.secrets_encryption) == (False, (), False)
    assert (dev.maintenance_window, dev.maintenance_exclusions) == ("", ())
    hardened = parse(
        DEV,
        privateNodes=True,
        mirrorRabbitmqImage=True,
        masterAuthorizedNetworks=["203.0.113.0/24", "198.51.100.7/32"],
        secretsEncryption=True,
        maintenanceWindow="03:00",
        maintenanceExclusions=["2026-12-20/2027-01-18"],
    ).cluster
    assert hardened.private_nodes
    assert hardened.master_authorized_networks == ("203.0.113.0/24", "198.51.100.7/32")
    assert hardened.secrets_encryption
    assert hardened.maintenance_window == "03:00"
    assert hardened.maintenance_exclusions == (("2026-12-20", "2027-01-18"),), "30 days, the last one included"
    # A broker image already in Artifact Registry needs no mirror.
    image = "us-east1-docker.pkg.dev/my-project-1/images/rabbitmq:4.3.6-management"
    assert parse(DEV, privateNodes=True, brokerImage=image).cluster.private_nodes


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
    s = parse(DEV, brokerReplicas=5, spotNodes=True)
    assert s.broker.replicas == 5
    assert s.cluster.spot_nodes


@pytest.mark.parametrize(
    ("stack", "override", "key"),
    [
        ("prod", "brokerReplicas=4", "ha-celery:brokerReplicas"),
        ("dev", "brokerStorage=nvme", "ha-celery:brokerStorage"),
        ("prod", "nodeCount=2", "ha-celery:nodeCount"),
        ("dev", "gcp:project=", "gcp:project"),
        ("dev", "brokerReplicas=2", "ha-celery:brokerReplicas"),
        ("dev", "workerConcurrency=100", "ha-celery:workerConcurrency"),
        ("prod", "brokerReplicas=5", "ha-celery:brokerReplicas"),
        ("dev", "machineType=t2a-standard-4", "ha-celery:machineType"),
        ("dev", "brokerReplica=3", "ha-celery:brokerReplica"),
    ],
)
def test_make_plan_fails_before_any_resource(
    plan_runner: Callable[..., CompletedProcess[str]], stack: str, override: str, key: str
) -> None:
    done = plan_runner(stack, override)
    assert done.returncode == 2, done.stderr
    assert f"{key}: got " in done.stderr
    assert "; allowed: " in done.stderr
    assert "0 resources were registered" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("stack", "overrides"),
    [
        ("dev", ("brokerReplicas=5",)),
        # 64 pool processes need room under the memory limit (contract.wire.max_memory_per_child_kib).
        ("dev", (f"workerConcurrency={MAX_CONCURRENCY}", "workerMemoryMiB=1536")),
        ("prod", ("brokerReplicas=5", "nodeCount=6")),
    ],
)
def test_make_plan_runs_the_edge_values_settings_accept(
    plan_runner: Callable[..., CompletedProcess[str]], stack: str, overrides: tuple[str, ...]
) -> None:
    done = plan_runner(stack, *overrides)
    assert done.returncode == 0, done.stderr


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(SettingsError) as error:
        parse(DEV, brokerReplica=3, workerConcurency=3)
    assert error.value.problems[0].startswith(
        "ha-celery:brokerReplica: got '3'; allowed: one of the keys in Pulumi.yaml"
        " (did you mean ha-celery:brokerReplicas?): environment, location,"
    ), error.value.problems
    assert "(did you mean ha-celery:workerConcurrency?)" in error.value.problems[1], error.value.problems
    with pytest.raises(SettingsError) as far:
        parse(DEV, colour="blue")
    assert "did you mean" not in str(far.value), "no suggestion when nothing is close"


def test_a_secret_value_is_never_shown() -> None:
    with pytest.raises(SettingsError) as error:
        settings.parse(
            "dev", {**DEV, "ha-celery:brokerPasword": "hunter2"}, "my-project-1", {"ha-celery:brokerPasword"}
        )
    assert "ha-celery:brokerPasword: got '[secret]'" in str(error.value)
    assert "hunter2" not in str(error.value)


# --- broker replicas: what the broker config and the scheduler can run --------------------------


@pytest.mark.parametrize("replicas", [3, 5])
def test_odd_broker_counts_pass_in_dev(replicas: int) -> None:
    # dev's anti-affinity is preferred: 5 brokers on 3 nodes schedule (two share a node).
    assert parse(DEV, brokerReplicas=replicas).broker.replicas == replicas


def test_prod_brokers_fit_the_nodes() -> None:
    assert parse(PROD, brokerReplicas=3).broker.replicas == 3
    # Two nodes per zone: 6 nodes carry 5 brokers, one per node.
    roomy = parse(PROD, brokerReplicas=5, nodeCount=6)
    assert (roomy.broker.replicas, roomy.cluster.node_count) == (5, 6)


def test_more_brokers_than_nodes_names_both_counts() -> None:
    with pytest.raises(SettingsError) as error:
        parse(PROD, brokerReplicas=7, nodeCount=6)
    assert error.value.problems == [
        "ha-celery:brokerReplicas: got 7; allowed: <= nodeCount (6) in prod: the required one-broker-per-node"
        " anti-affinity leaves every broker beyond the 6 nodes unschedulable (raise nodeCount or lower"
        " brokerReplicas)"
    ]


def test_settings_refuse_what_the_broker_config_refuses() -> None:
    from broker.config import BrokerConfig, PeerDiscovery, RabbitVersion

    for replicas in range(1, 8):
        try:
            BrokerConfig(version=RabbitVersion.V4_3, peer_discovery=PeerDiscovery.K8S, cluster_size=replicas)
            runs = True
        except ValueError:
            runs = False
        try:
            parse(DEV, brokerReplicas=replicas)
            accepted = True
        except SettingsError:
            accepted = False
        # The policy pack refuses a single broker that BrokerConfig could run: settings side with the pack.
        assert accepted == (runs and replicas >= 3), f"brokerReplicas={replicas}: settings accept={accepted}"


# --- worker concurrency: one bound, the worker's ---------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, MAX_CONCURRENCY, MAX_CONCURRENCY + 1])
def test_settings_accept_exactly_the_concurrency_the_worker_runs(concurrency: int) -> None:
    env = {ENV_BROKER_URLS: "amqp://u:p@rabbitmq-0:5672/", ENV_CONCURRENCY: str(concurrency)}
    try:
        from_env(env)
        runs = True
    except ConfigError:
        runs = False
    try:
        # Memory enough for any concurrency the worker runs: only the concurrency bound is under test.
        parse(DEV, workerConcurrency=concurrency, workerMemoryMiB=2048)
        accepted = True
    except SettingsError:
        accepted = False
    assert accepted == runs, f"workerConcurrency={concurrency}: settings accept={accepted}, worker runs={runs}"
    assert runs == (concurrency <= MAX_CONCURRENCY)


# --- machine architecture --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "disk"),
    [("e2-standard-2", "pd-balanced"), ("n2d-standard-4", "pd-balanced"), ("c4d-standard-4", "hyperdisk-balanced")],
)
def test_x86_machine_types_pass(machine: str, disk: str) -> None:
    storage = "hyperdisk" if disk.startswith("hyperdisk") else "standard"
    assert parse(DEV, machineType=machine, nodeDiskType=disk, brokerStorage=storage).cluster.machine_type == machine


def test_arm_refusal_says_why_and_follows_the_image_platforms() -> None:
    assert {"t2a", "c4a"} <= ARM_FAMILIES
    with pytest.raises(SettingsError) as error:
        parse(DEV, machineType="t2a-standard-4")
    assert error.value.problems == [
        "ha-celery:machineType: got 't2a-standard-4'; allowed: an x86-64 machine type (not the Arm families a4x,"
        " c4a, n4a, t2a): the images are built for linux/amd64 only (ha-celery:imagePlatforms is 'amd64'), so on T2A"
        " machines every container would fail with 'exec format error'; set ha-celery:imagePlatforms to"
        " 'amd64,arm64' to build arm64 images too"
    ]


@pytest.mark.parametrize(
    ("machine", "disk"), [("t2a-standard-4", "pd-balanced"), ("c4a-standard-4", "hyperdisk-balanced")]
)
def test_arm_machine_types_pass_with_arm64_images(machine: str, disk: str) -> None:
    storage = "hyperdisk" if disk.startswith("hyperdisk") else "standard"
    s = parse(DEV, machineType=machine, nodeDiskType=disk, brokerStorage=storage, imagePlatforms="amd64,arm64")
    assert s.cluster.machine_type == machine
    assert s.registry.image_platforms.platforms == ("linux/amd64", "linux/arm64")


def test_image_platforms_default_and_refusal() -> None:
    assert parse(DEV).registry.image_platforms is ImagePlatforms.AMD64
    with pytest.raises(SettingsError) as error:
        parse(DEV, imagePlatforms="arm64")
    assert error.value.problems == ["ha-celery:imagePlatforms: got 'arm64'; allowed: amd64 | amd64,arm64"]


# --- the registry: a regional Artifact Registry repository or a gcr.io domain ----------------------


def test_registry_defaults_to_a_regional_repository() -> None:
    registry = parse(DEV).registry
    assert (registry.domain, registry.location, registry.repository_id) == (RegistryDomain.PKG_DEV, "us-east1", None)


@pytest.mark.parametrize(
    ("domain", "location"), [("gcr.io", "us"), ("us.gcr.io", "us"), ("eu.gcr.io", "europe"), ("asia.gcr.io", "asia")]
)
def test_gcr_domain_fixes_the_repository_id_and_multi_region(domain: str, location: str) -> None:
    registry = parse(DEV, registryDomain=domain).registry
    assert (registry.domain.value, registry.location, registry.repository_id) == (domain, location, domain)


@pytest.mark.parametrize("domain", ["gcr", "docker.pkg.dev", "europe.gcr.io", "GCR.IO", ""])
def test_registry_domain_refusal_names_the_allowed_values(domain: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse(DEV, registryDomain=domain)
    assert error.value.problems == [
        f"ha-celery:registryDomain: got {domain!r}; allowed: pkg.dev | gcr.io | us.gcr.io | eu.gcr.io | asia.gcr.io"
    ]


# --- the stack name: a GCP service account id, repository id and label value ---------------------

LONGEST_STACK = "eu-west-prod-1"


@pytest.mark.parametrize("stack", ["dev", "prod", "x", "staging2", LONGEST_STACK])
def test_stack_names_that_fit_gcp_pass(stack: str) -> None:
    assert settings.parse(stack, DEV, "my-project-1").stack == stack


@pytest.mark.parametrize(
    "stack",
    ["My_Stack", "Dev", "dev_eu", "dev.eu", "1dev", "-dev", "dev-", "", LONGEST_STACK + "x", "a" * 64],
)
def test_stack_names_gcp_refuses(stack: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings.parse(stack, DEV, "my-project-1")
    assert error.value.problems == [
        f"stack: got {stack!r}; allowed: 1-{STACK_MAX} lowercase letters, digits and hyphens, starting with a letter"
        " and not ending with a hyphen: the stack name becomes the GCP service account id ha-celery-<stack>-nodes"
        " (at most 30 characters), the Artifact Registry repository id ha-celery-<stack> and a GCP label value;"
        " `pulumi stack rename <name>` fixes it"
    ]


# The plan of the dev stack file under another stack name; prints the GCP names built from it.
_PLAN_AS = """
import json, sys
from plan.__main__ import run, stack_config
resources = run(sys.argv[1], stack_config("dev", []))
def one(token, key):
    return [r["inputs"][key] for r in resources if r["type"] == token]
print(json.dumps({
    "accountId": one("gcp:serviceaccount/account:Account", "accountId"),
    "repositoryId": one("gcp:artifactregistry/repository:Repository", "repositoryId"),
    "labels": one("gcp:container/cluster:Cluster", "resourceLabels"),
}))
"""
SA_ID_RE = re.compile(r"^[a-z](?:[a-z0-9-]{4,28})[a-z0-9]$")
REPOSITORY_ID_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


def _plan_as(stack: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", _PLAN_AS, stack]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_longest_stack_name_builds_valid_gcp_names_untruncated() -> None:
    done = _plan_as(LONGEST_STACK)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.splitlines()[-1])
    assert names["accountId"] == [f"ha-celery-{LONGEST_STACK}-nodes"], "components.gke cut the service account id"
    assert SA_ID_RE.match(names["accountId"][0]), names
    assert all(REPOSITORY_ID_RE.match(r) for r in names["repositoryId"]), names
    assert all(LABEL_VALUE_RE.match(v) for labels in names["labels"] for v in labels.values()), names


def test_bad_stack_name_fails_before_any_resource() -> None:
    done = _plan_as("Dev_EU")
    assert done.returncode == 2, done.stderr
    assert "stack: got 'Dev_EU'; allowed: 1-14 lowercase letters" in done.stderr
    assert "0 resources were registered" in done.stderr
    assert "Traceback" not in done.stderr


# --- `pulumi up`: every key of the project's namespace is checked -------------------------------


@pytest.fixture
def runtime_context() -> contextvars.Context:
    """A copy of the context, so the SDK's config and stack (context variables) set here stay here."""
    context = contextvars.copy_context()
    context.run(runtime_config.set_all_config, {})
    context.run(runtime_settings._set_stack, "dev")
    return context


def _language_host_config(monkeypatch: pytest.MonkeyPatch, config: dict[str, str], secret: list[str]) -> None:
    """What the Python language host hands a `pulumi up` program: JSON in PULUMI_CONFIG."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(secret))


def test_load_reads_the_language_host_config(
    monkeypatch: pytest.MonkeyPatch, runtime_context: contextvars.Context
) -> None:
    config = {
        "gcp:project": "my-project-1",
        "gcp:region": "us-east1",
        "ha-celery:environment": "prod",
        "ha-celery:location": "us-east1",
        "ha-celery:nodeZones": '["us-east1-b","us-east1-c","us-east1-d"]',
        "ha-celery:brokerReplicas": "3",
        "ha-celery:workerConcurrency": "4",
    }
    _language_host_config(monkeypatch, config, [])
    loaded = runtime_context.run(settings.load)
    assert (loaded.stack, loaded.environment, loaded.cluster.node_zones) == (
        "dev",
        Environment.PROD,
        ("us-east1-b", "us-east1-c", "us-east1-d"),
    )
    assert loaded.workers.concurrency == 4


def test_load_refuses_a_misspelt_key_on_pulumi_up(
    monkeypatch: pytest.MonkeyPatch, runtime_context: contextvars.Context
) -> None:
    config = {
        "gcp:project": "my-project-1",
        "ha-celery:location": "us-east1-c",
        "ha-celery:brokerReplica": "5",
        "ha-celery:brokerPasword": "hunter2",
    }
    _language_host_config(monkeypatch, config, ["ha-celery:brokerPasword"])
    with pytest.raises(SettingsError) as error:
        runtime_context.run(settings.load)
    problems = error.value.problems
    assert [p.split(";")[0] for p in problems] == [
        "ha-celery:brokerPasword: got '[secret]'",
        "ha-celery:brokerReplica: got '5'",
    ], problems
    assert "(did you mean ha-celery:brokerReplicas?)" in problems[1]
    assert "hunter2" not in str(error.value)


def test_load_reads_config_set_by_the_sdk(
    monkeypatch: pytest.MonkeyPatch, runtime_context: contextvars.Context
) -> None:
    # Mocks and the Automation API's inline programs set the config in the SDK, not the environment.
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    config = {"gcp:project": "my-project-1", "ha-celery:location": "us-east1-c", "ha-celery:nodeCont": "3"}
    runtime_context.run(runtime_config.set_all_config, config)
    with pytest.raises(SettingsError, match=r"ha-celery:nodeCont: got '3'.*did you mean ha-celery:nodeCount\?"):
        runtime_context.run(settings.load)


def test_network_settings() -> None:
    default = parse(DEV).network
    assert (default.ops_namespace, default.metrics_namespaces) == ("ha-celery", ("gmp-system",))
    custom = parse(DEV, opsNamespace="ops-tools", prometheusNamespace="monitoring").network
    assert (custom.ops_namespace, custom.metrics_namespaces) == ("ops-tools", ("gmp-system", "monitoring"))
    assert parse(DEV, prometheusNamespace="gmp-system").network.metrics_namespaces == ("gmp-system",)
