"""The GCP side of each stack's plan: cluster, node pool, registry, image, provider.

Most tests read the plan (resources.json). What the plan does not record, the resource options
that order and protect resources (depends_on, ignore_changes), comes from `registered`: the
program run in this process under the same mocks, recording every RegisterResource request.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, cast

import yaml

from contract.image import (
    MIRROR_CONTEXT,
    MIRROR_IMAGE_ARG,
    WORKER_DOCKERFILE,
    WORKER_SOURCES,
    ImagePlatforms,
    context_files,
    mirror_tag,
    source_tag,
)
from tests.conftest import ROOT, Plan

CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
SERVICE = "gcp:projects/service:Service"
APIS = {
    "container.googleapis.com",
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "artifactregistry.googleapis.com",
    "containerscanning.googleapis.com",
    "monitoring.googleapis.com",  # metricsCollection: managed (the default)
}
IMAGE = "docker-build:index:Image"
KEY_RING = "gcp:kms/keyRing:KeyRing"
KEY = "gcp:kms/cryptoKey:CryptoKey"
KEY_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
KMS_API = "cloudkms.googleapis.com"
REPOSITORY = "gcp:artifactregistry/repository:Repository"


@dataclass(frozen=True)
class Registered:
    """One resource as the program registered it: what the engine would get, options included."""

    type: str
    name: str
    inputs: dict[str, Any]
    parent: tuple[str, str] | None
    dependencies: frozenset[tuple[str, str]]
    """(type, name) of every resource it waits for: depends_on and the inputs' own."""
    ignore_changes: tuple[str, ...]
    retain_on_delete: bool


def _key(urn: str) -> tuple[str, str]:
    *_, chain, name = urn.split("::")
    return chain.split("$")[-1], name


@functools.cache
def registered(stack: str = "dev", overrides: tuple[str, ...] = ()) -> dict[tuple[str, str], Registered]:
    """(type, name) -> the resource's registration, from one in-process run of the program."""
    import pulumi
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from plan.__main__ import run_program, stack_config
    from plan.mocks import RecordingMocks
    from settings import PROJECT

    class Recorder(MockMonitor):
        def __init__(self, mocks: RecordingMocks) -> None:
            super().__init__(mocks)
            self.requests: list[Any] = []

        def RegisterResource(self, request: Any) -> Any:
            self.requests.append(request)
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]

    config = stack_config(stack, overrides)
    mocks = RecordingMocks(project=config.get("gcp:project", "mock-project"))
    monitor = Recorder(mocks)
    pulumi.runtime.set_all_config(config)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    _sync_await(run_pulumi_func(run_program))
    inputs = {(r.type, r.name): r.inputs for r in mocks.registrations}
    return {
        (r.type, r.name): Registered(
            r.type,
            r.name,
            inputs.get((r.type, r.name), {}),
            _key(r.parent) if r.parent and _key(r.parent)[0] != "pulumi:pulumi:Stack" else None,
            frozenset(_key(u) for u in r.dependencies),
            tuple(r.ignoreChanges),
            bool(r.retainOnDelete),
        )
        for r in monitor.requests
        if r.type != "pulumi:pulumi:Stack"
    }


def waits_for(resource: Registered, graph: dict[tuple[str, str], Registered]) -> set[tuple[str, str]]:
    """Everything the resource is created after: its dependencies and its parents', transitively."""
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [*resource.dependencies, *([resource.parent] if resource.parent else [])]
    while todo:
        key = todo.pop()
        if key in seen or key not in graph:
            continue
        seen.add(key)
        node = graph[key]
        todo += [*node.dependencies, *([node.parent] if node.parent else [])]
    return seen


def one(graph: dict[tuple[str, str], Registered], token: str) -> Registered:
    found = [r for r in graph.values() if r.type == token]
    assert len(found) == 1, f"expected one {token}, found {[r.name for r in found]}"
    return found[0]


def of_type(graph: dict[tuple[str, str], Registered], prefix: str) -> Iterator[Registered]:
    return (r for r in graph.values() if r.type.startswith(prefix))


def test_cluster_has_no_default_pool_and_no_node_config(plan: Plan) -> None:
    cluster = plan.one(CLUSTER)["inputs"]
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["initialNodeCount"] == 1
    assert set(cluster["nodeConfig"]) == {"serviceAccount", "oauthScopes"}, "only the bootstrap pool's identity"
    assert "nodePools" not in cluster


def test_bootstrap_pool_runs_as_the_node_account(plan: Plan) -> None:
    """Not as the Compute Engine default account, which many orgs disable (the create then fails)."""
    node = plan.one(CLUSTER)["inputs"]["nodeConfig"]
    assert node["serviceAccount"] == plan.one(POOL)["inputs"]["nodeConfig"]["serviceAccount"]
    graph = registered()
    cluster = one(graph, CLUSTER)
    assert "nodeConfig" in cluster.ignore_changes, "the read-back nodeConfig would replace the cluster every up"
    grants = {(r.type, r.name) for r in of_type(graph, "gcp:projects/iAMMember:")}
    assert grants
    assert grants <= cluster.dependencies, "the bootstrap nodes need the account's roles"


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
    # The identity the README sets up (and CI has): ADC, not gcloud's active account.
    assert user["exec"]["args"] == ["--use_application_default_credentials"]
    assert "token" not in user
    assert "client-key-data" not in user
    assert config["clusters"][0]["cluster"]["server"] == "https://203.0.113.10"


def test_registry_is_artifact_registry_docker(plan: Plan) -> None:
    repo = plan.one(REPOSITORY)
    assert repo["parent"] == "ha-celery:index:Registry"
    assert repo["inputs"]["format"] == "DOCKER"
    assert repo["inputs"]["dockerConfig"] == {"immutableTags": True}
    assert repo["inputs"]["vulnerabilityScanningConfig"] == {"enablementConfig": "INHERITED"}, repo["name"]


def test_worker_image_is_pushed_and_pinned(plan: Plan) -> None:
    images = [i for i in plan.of_type(IMAGE) if i["name"].endswith("-worker")]
    assert len(images) == 1
    image = images[0]["inputs"]
    assert image["push"] is True
    assert image["buildOnPreview"] is False, "`pulumi preview` must not need a Docker daemon"
    assert image["platforms"] == ["linux/amd64"]
    [registry] = image["registries"]
    assert registry["password"] == "[secret]", "the registry token must stay secret"
    [tag] = image["tags"]
    assert tag.startswith("us-east1-docker.pkg.dev/"), tag
    assert tag.endswith(f"/worker:{source_tag(ROOT)}-amd64"), tag


def _variant(plan_runner: object, *overrides: str) -> Plan:
    run = cast(Callable[..., CompletedProcess[str]], plan_runner)
    done = run("dev", *overrides)
    assert done.returncode == 0, done.stderr
    out = Path(done.stdout.split("-> ")[-1].strip())
    return Plan("dev", out, json.loads((out / "resources.json").read_text()))


def _mirror(plan: Plan) -> dict[str, Any]:
    mirrors = [r for r in plan.of_type(IMAGE) if r["name"].endswith("broker-mirror")]
    assert len(mirrors) == 1, [r["name"] for r in plan.of_type(IMAGE)]
    inputs: dict[str, Any] = mirrors[0]["inputs"]
    return inputs


def test_mirror_switch_adds_broker_image(plan_runner: object) -> None:
    mirror = _mirror(_variant(plan_runner, "mirrorRabbitmqImage=true"))
    assert mirror["buildArgs"] == {MIRROR_IMAGE_ARG: "rabbitmq:4.3.6-management"}
    assert mirror["buildOnPreview"] is False, "`pulumi preview` must not need a Docker daemon"
    [tag] = mirror["tags"]
    assert re.fullmatch(
        r"us-east1-docker\.pkg\.dev/[^/]+/ha-celery-dev/rabbitmq:4\.3\.6-management-amd64-[0-9a-f]{8}", tag
    )


def test_mirror_has_its_own_context(plan_runner: object, tmp_path: Path) -> None:
    """Not the worker's: a change under app/ must not rebuild (and re-push, re-roll) the brokers."""
    plan = _variant(plan_runner, "mirrorRabbitmqImage=true")
    mirror = _mirror(plan)
    [worker] = [r["inputs"] for r in plan.of_type(IMAGE) if r["name"].endswith("-worker")]
    assert mirror["context"] == {"location": MIRROR_CONTEXT}
    assert mirror["dockerfile"] == {"location": f"{MIRROR_CONTEXT}/Dockerfile"}
    assert worker["context"]["location"] == "."
    # The mirror context holds nothing of the worker's: only its Dockerfile, which takes the image as a build arg.
    assert sorted(p.name for p in (ROOT / MIRROR_CONTEXT).iterdir()) == ["Dockerfile"]
    dockerfile = (ROOT / MIRROR_CONTEXT / "Dockerfile").read_text()
    assert [line for line in dockerfile.splitlines() if line and not line.startswith("#")] == [
        f"ARG {MIRROR_IMAGE_ARG}",
        f"FROM ${{{MIRROR_IMAGE_ARG}}}",
    ]
    # A change under app/ changes the worker's tag, never the mirror's inputs.
    tree = _tree(tmp_path / "tree")
    before = (source_tag(tree), mirror_tag(tree, "rabbitmq:4.3.6-management", ImagePlatforms.AMD64))
    (tree / "app/tasks.py").write_text("changed = True\n")
    after = (source_tag(tree), mirror_tag(tree, "rabbitmq:4.3.6-management", ImagePlatforms.AMD64))
    assert before[0] != after[0]
    assert before[1] == after[1]
    assert mirror_tag(tree, "rabbitmq:4.3.7-management", ImagePlatforms.AMD64) != before[1]


def test_gcr_domain_repository_and_image_names(plan_runner: object) -> None:
    plan = _variant(plan_runner, "registryDomain=gcr.io", "mirrorRabbitmqImage=true")
    repo = plan.one(REPOSITORY)["inputs"]
    assert (repo["repositoryId"], repo["location"], repo["format"]) == ("gcr.io", "us", "DOCKER")
    assert "cleanupPolicies" not in repo, "the project-wide gcr.io repository holds others' images too"
    project = repo["project"]
    deployment = next(d for d in plan.objects("Deployment") if d["metadata"]["name"] == "celery-worker")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(
        rf"gcr\.io/{project}/ha-celery-worker:[0-9a-f]{{16}}-amd64@sha256:[0-9a-f]{{64}}", container["image"]
    )
    [broker] = plan.object("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert broker["image"].startswith(f"gcr.io/{project}/ha-celery-rabbitmq:4.3.6-management-amd64-"), broker["image"]


def test_gcr_domain_repository_is_kept_on_destroy() -> None:
    """The stack's own repository goes with the stack; the project's gcr.io repository (and its images) stays."""
    assert one(registered("dev"), REPOSITORY).retain_on_delete is False
    gcr = one(registered("dev", ("registryDomain=gcr.io",)), REPOSITORY)
    assert gcr.inputs["repositoryId"] == "gcr.io"
    assert gcr.retain_on_delete is True, "`pulumi destroy` would delete every gcr.io image of the project"


def test_multi_arch_builds_both_platforms(plan_runner: object) -> None:
    plan = _variant(plan_runner, "imagePlatforms=amd64,arm64", "mirrorRabbitmqImage=true")
    images = plan.of_type(IMAGE)
    assert len(images) == 2
    for image in images:
        assert image["inputs"]["platforms"] == ["linux/amd64", "linux/arm64"], image["name"]
        [tag] = image["inputs"]["tags"]
        assert "-amd64-arm64" in tag, f"{image['name']}: a platform change rebuilds, so it needs a new tag: {tag}"


# --- the tag names what docker-build hashes (its contextHash includes file modes) ---------------------


def _tree(root: Path) -> Path:
    """A small copy of the worker's build context, with the real Dockerfile and ignore file."""
    (root / "app").mkdir(parents=True)
    (root / "contract").mkdir()
    for name in ("Dockerfile", "Dockerfile.dockerignore"):
        shutil.copyfile(ROOT / "app" / name, root / "app" / name)
    (root / "app/tasks.py").write_text("x = 1\n")
    (root / "contract/wire.py").write_text("y = 2\n")
    (root / MIRROR_CONTEXT).mkdir(parents=True)
    shutil.copyfile(ROOT / MIRROR_CONTEXT / "Dockerfile", root / MIRROR_CONTEXT / "Dockerfile")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_tag_follows_file_modes(tmp_path: Path) -> None:
    one_tree, other = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert source_tag(one_tree) == source_tag(other), "same content and modes: same tag (no rebuild)"
    (other / "app/tasks.py").chmod(0o664)  # another umask at checkout
    assert source_tag(one_tree) != source_tag(other), "docker-build rebuilds on a mode change: the tag must change"
    (other / "app/tasks.py").chmod(0o644)
    assert source_tag(one_tree) == source_tag(other)


def test_tag_ignores_what_the_context_excludes(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "a")
    tag = source_tag(tree)
    (tree / "app/__pycache__").mkdir()
    (tree / "app/__pycache__/tasks.cpython-311.pyc").write_bytes(b"\0")
    (tree / "drill").mkdir()
    (tree / "drill/x.py").write_text("z = 3\n")
    (tree / "README.md").write_text("docs\n")
    assert source_tag(tree) == tag, "files the .dockerignore excludes are not hashed by docker-build either"
    (tree / "app/new.py").write_text("")
    assert source_tag(tree) != tag, "a new (even empty) file is a new path in the context"
    tag = source_tag(tree)
    with (tree / "app/Dockerfile").open("a") as f:
        f.write("# a comment\n")
    assert source_tag(tree) != tag, "docker-build hashes the Dockerfile's content"


def test_context_is_app_and_contract() -> None:
    files = {p.relative_to(ROOT).parts[0] for p in context_files(ROOT, ROOT / WORKER_DOCKERFILE)}
    assert files == set(WORKER_SOURCES)
    names = {p.relative_to(ROOT).as_posix() for p in context_files(ROOT, ROOT / WORKER_DOCKERFILE)}
    assert "app/requirements.txt" in names
    assert not {"app/Dockerfile", "app/Dockerfile.dockerignore"} & names, "the ignore file excludes them"
    assert not any("__pycache__" in n for n in names)


def test_components_are_parents_of_their_children(plan: Plan) -> None:
    components = {r["type"] for r in plan.resources if r["type"].startswith("ha-celery:index:")}
    assert {"ha-celery:index:GkeCluster", "ha-celery:index:Registry"} <= components
    shared = {"kubernetes:core/v1:Namespace"}  # one namespace for all components, made by the program
    for resource in plan.resources:
        if not resource["type"].startswith("ha-celery:index:") and resource["type"] not in shared:
            assert resource["parent"] in components, f"{resource['type']} {resource['name']} has no component parent"


def test_the_program_enables_the_apis_it_uses(plan: Plan) -> None:
    services = plan.of_type(SERVICE)
    # cloudkms only with a Secrets key (prod): an API the stack does not use stays off.
    assert {s["inputs"]["service"] for s in services} == APIS | ({KMS_API} if plan.of_type(KEY) else set())
    for service in services:
        assert service["parent"] == "ha-celery:index:GkeCluster", service["name"]
        assert service["inputs"]["disableOnDestroy"] is False, f"{service['name']}: destroy must not disable it"


def test_every_cloud_resource_waits_for_the_apis() -> None:
    graph = registered()
    apis = {(r.type, r.name) for r in of_type(graph, SERVICE)}
    assert len(apis) == len(APIS)
    cloud = [r for r in graph.values() if r.type.split(":")[0] in {"gcp", "docker-build"} and r.type != SERVICE]
    assert cloud
    for resource in cloud:
        missing = apis - waits_for(resource, graph)
        assert not missing, f"{resource.type} {resource.name} may start before {sorted(n for _, n in missing)}"


# --- a hardened cluster: private nodes, authorized networks, Secrets encryption, maintenance -----------


def test_prod_cluster_is_hardened(plans: dict[str, Plan]) -> None:
    cluster = plans["prod"].one(CLUSTER)["inputs"]
    assert cluster["maintenancePolicy"] == {"dailyMaintenanceWindow": {"startTime": "03:00"}}
    assert cluster["databaseEncryption"]["state"] == "ENCRYPTED"
    assert "masterAuthorizedNetworksConfig" not in cluster, "no CIDRs in the prod stack file: nothing to authorize"


def test_prod_secrets_are_encrypted_with_a_kms_key(plans: dict[str, Plan]) -> None:
    prod = plans["prod"]
    cluster = prod.one(CLUSTER)["inputs"]
    ring, key, grant = prod.one(KEY_RING), prod.one(KEY), prod.one(KEY_GRANT)
    assert ring["inputs"]["location"] == cluster["location"] == "us-east1", "GKE wants the key in the cluster's region"
    assert "name" not in ring["inputs"], "key rings are never deleted: a fixed name fails a re-created stack"
    assert key["inputs"]["purpose"] == "ENCRYPT_DECRYPT"
    assert key["inputs"]["rotationPeriod"] == "7776000s"
    assert key["inputs"]["keyRing"] == f"{ring['name']}-id", "the key belongs to the stack's ring"
    assert cluster["databaseEncryption"] == {"state": "ENCRYPTED", "keyName": f"{key['name']}-id"}
    assert grant["inputs"]["cryptoKeyId"] == f"{key['name']}-id"
    assert grant["inputs"]["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert re.fullmatch(
        r"serviceAccount:service-[0-9]+@container-engine-robot\.iam\.gserviceaccount\.com", grant["inputs"]["member"]
    ), f"{grant['name']}: GKE's service agent must be the one granted: {grant['inputs']['member']}"
    for resource in (ring, key, grant):
        assert resource["parent"] == "ha-celery:index:GkeCluster", resource["name"]


def test_the_cluster_waits_for_the_key_grant() -> None:
    """GKE checks at create time that its service agent can use the key; the key waits for the KMS API."""
    graph = registered("prod")
    cluster, grant = one(graph, CLUSTER), one(graph, KEY_GRANT)
    assert (grant.type, grant.name) in cluster.dependencies, "the cluster would be created before its key is usable"
    apis = {(r.type, r.name) for r in of_type(graph, SERVICE)}
    assert any(r.inputs["service"] == KMS_API for r in of_type(graph, SERVICE))
    for resource in (one(graph, KEY_RING), one(graph, KEY), grant):
        missing = apis - waits_for(resource, graph)
        assert not missing, f"{resource.type} {resource.name} may start before {sorted(n for _, n in missing)}"


def test_dev_has_no_hardening_by_default(plans: dict[str, Plan]) -> None:
    dev = plans["dev"]
    cluster = dev.one(CLUSTER)["inputs"]
    for field in ("privateClusterConfig", "masterAuthorizedNetworksConfig", "databaseEncryption", "maintenancePolicy"):
        assert field not in cluster, f"dev cluster: {field} is off unless the stack turns it on"
    assert not dev.of_type(KEY_RING), "dev pays for no KMS key"
    assert not dev.of_type(KEY), "dev pays for no KMS key"


def test_master_authorized_networks_come_from_the_setting() -> None:
    graph = registered("dev", ('masterAuthorizedNetworks=["203.0.113.0/24", "198.51.100.7/32"]',))
    config = one(graph, CLUSTER).inputs["masterAuthorizedNetworksConfig"]
    assert [b["cidrBlock"] for b in config["cidrBlocks"]] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert config["gcpPublicCidrsAccessEnabled"] is False, "any Compute Engine address would reach the API server"


def test_private_nodes_in_dev_on_request() -> None:
    graph = registered("dev", ("privateNodes=true", "mirrorRabbitmqImage=true"))
    cluster = one(graph, CLUSTER).inputs
    assert cluster["privateClusterConfig"] == {"enablePrivateNodes": True, "enablePrivateEndpoint": False}
    assert not list(of_type(graph, "gcp:compute/")), "no Cloud NAT or router: images come over Private Google Access"


def test_maintenance_window_and_exclusions() -> None:
    graph = registered(
        "dev", ("maintenanceWindow=22:30", 'maintenanceExclusions=["2026-12-20/2027-01-03", "2027-03-01/2027-03-01"]')
    )
    policy = one(graph, CLUSTER).inputs["maintenancePolicy"]
    assert policy["dailyMaintenanceWindow"] == {"startTime": "22:30"}
    assert policy["maintenanceExclusions"] == [
        {
            "exclusionName": "no-upgrades-2026-12-20",
            "startTime": "2026-12-20T00:00:00Z",
            "endTime": "2027-01-04T00:00:00Z",
            "exclusionOptions": {"scope": "NO_UPGRADES"},
        },
        {
            "exclusionName": "no-upgrades-2027-03-01",
            "startTime": "2027-03-01T00:00:00Z",
            "endTime": "2027-03-02T00:00:00Z",
            "exclusionOptions": {"scope": "NO_UPGRADES"},
        },
    ], "the last day is part of the exclusion"
