"""The GCP side of each stack's plan: cluster, node pool, registry, image, provider."""

from __future__ import annotations

import yaml

from tests.conftest import Plan

CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"


def test_cluster_has_no_default_pool_and_no_node_config(plan: Plan) -> None:
    cluster = plan.one(CLUSTER)["inputs"]
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["initialNodeCount"] == 1
    assert "nodeConfig" not in cluster, "a node_config on the cluster replaces it on every change"
    assert "nodePools" not in cluster


def test_cluster_security_and_networking(plan: Plan) -> None:
    cluster = plan.one(CLUSTER)["inputs"]
    assert cluster["releaseChannel"] == {"channel": "REGULAR"}
    assert cluster["workloadIdentityConfig"]["workloadPool"] == f"{cluster['project']}.svc.id.goog"
    assert cluster["enableShieldedNodes"] is True
    assert cluster["networkingMode"] == "VPC_NATIVE"
    assert "ipAllocationPolicy" in cluster
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH", "NetworkPolicy needs Dataplane V2"


def test_node_pool(plan: Plan) -> None:
    pool = plan.one(POOL)
    assert pool["parent"] == "ha-celery:index:GkeCluster"
    inputs = pool["inputs"]
    assert inputs["management"] == {"autoRepair": True, "autoUpgrade": True}
    assert inputs["upgradeSettings"]["maxUnavailable"] == 0
    node = inputs["nodeConfig"]
    assert node["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    account = plan.one("gcp:serviceaccount/account:Account")["inputs"]["accountId"]
    assert node["serviceAccount"].startswith(account + "@"), "nodes must run as the dedicated service account"
    assert node["shieldedInstanceConfig"] == {"enableIntegrityMonitoring": True, "enableSecureBoot": True}


def test_three_nodes_in_all(plan: Plan) -> None:
    pool = plan.one(POOL)["inputs"]
    assert pool["nodeCount"] * len(pool["nodeLocations"]) == 3


def test_prod_is_regional_protected_and_on_demand(plans: dict[str, Plan]) -> None:
    prod = plans["prod"]
    cluster = prod.one(CLUSTER)["inputs"]
    assert cluster["location"] == "us-east1"
    assert len(cluster["nodeLocations"]) == 3
    assert cluster["deletionProtection"] is True
    assert prod.one(POOL)["inputs"]["nodeCount"] == 1
    assert prod.one(POOL)["inputs"]["nodeConfig"]["spot"] is False


def test_dev_is_zonal_cheap_and_destroyable(plans: dict[str, Plan]) -> None:
    dev = plans["dev"]
    cluster = dev.one(CLUSTER)["inputs"]
    assert cluster["location"] == "us-east1-c"
    assert cluster["deletionProtection"] is False
    pool = dev.one(POOL)["inputs"]
    assert pool["nodeCount"] == 3
    assert pool["nodeConfig"]["spot"] is True


def test_kubernetes_provider(plan: Plan) -> None:
    provider = plan.one("pulumi:providers:kubernetes")
    assert provider["parent"] == "ha-celery:index:GkeCluster"
    inputs = provider["inputs"]
    assert inputs["kubeconfig"] == "[secret]"
    assert inputs["clusterIdentifier"].startswith("projects/"), "a stable identity keeps workloads on kubeconfig change"


def test_kubeconfig_uses_the_auth_plugin() -> None:
    from components.gke import AUTH_PLUGIN, render_kubeconfig

    config = yaml.safe_load(render_kubeconfig("c", "203.0.113.10", "Y2E="))
    user = config["users"][0]["user"]
    assert user["exec"]["command"] == AUTH_PLUGIN
    assert "token" not in user
    assert "client-key-data" not in user
    assert config["clusters"][0]["cluster"]["server"] == "https://203.0.113.10"


def test_registry_is_artifact_registry_docker(plan: Plan) -> None:
    repo = plan.one("gcp:artifactregistry/repository:Repository")
    assert repo["parent"] == "ha-celery:index:Registry"
    assert repo["inputs"]["format"] == "DOCKER"
    assert repo["inputs"]["dockerConfig"] == {"immutableTags": True}


def test_worker_image_is_pushed_and_pinned(plan: Plan) -> None:
    images = [i for i in plan.of_type("docker-build:index:Image") if i["name"].endswith("-worker")]
    assert len(images) == 1
    image = images[0]["inputs"]
    assert image["push"] is True
    [registry] = image["registries"]
    assert registry["password"] == "[secret]", "the registry token must stay secret"
    [tag] = image["tags"]
    assert tag.startswith("us-east1-docker.pkg.dev/"), tag
    assert not tag.endswith(":latest")


def test_mirror_switch_adds_broker_image(plan_runner: object) -> None:
    import json
    from collections.abc import Callable
    from subprocess import CompletedProcess
    from typing import cast

    run = cast(Callable[..., CompletedProcess[str]], plan_runner)
    done = run("dev", "mirrorRabbitmqImage=true")
    assert done.returncode == 0, done.stderr
    out = done.stdout.split("-> ")[-1].strip()
    with open(f"{out}/resources.json") as f:
        resources = json.load(f)
    mirrors = [r for r in resources if r["type"] == "docker-build:index:Image" and r["name"].endswith("broker-mirror")]
    assert len(mirrors) == 1
    assert mirrors[0]["inputs"]["dockerfile"]["inline"].startswith("FROM rabbitmq:4.3.")


def test_components_are_parents_of_their_children(plan: Plan) -> None:
    components = {r["type"] for r in plan.resources if r["type"].startswith("ha-celery:index:")}
    assert {"ha-celery:index:GkeCluster", "ha-celery:index:Registry"} <= components
    shared = {"kubernetes:core/v1:Namespace"}  # one namespace for all components, made by the program
    for resource in plan.resources:
        if not resource["type"].startswith("ha-celery:index:") and resource["type"] not in shared:
            assert resource["parent"] in components, f"{resource['type']} {resource['name']} has no component parent"
