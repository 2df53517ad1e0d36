"""plan/diff.py's rules on small synthetic plans: each test changes one thing and checks the step it gives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from plan.diff import (
    CREATE,
    DELETE,
    DELETE_BEFORE_REPLACE,
    REPLACE,
    SAME,
    UPDATE,
    Plan,
    PlanError,
    Resource,
    Step,
    diff_plans,
    operations,
    stateful_losses,
)
from plan.rules import covers, format_path, parse_path

PROVIDER = "pulumi:providers:kubernetes::k8s"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_POOL = "gcp:container/nodePool:NodePool"
CLUSTER = "gcp:container/cluster:Cluster"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
IMAGE = "docker-build:index:Image"


def provider(**inputs: Any) -> Resource:
    return Resource("pulumi:providers:kubernetes", "k8s", {"clusterIdentifier": "c1", **inputs}, {"custom": True})


def resource(token: str, name: str, inputs: Mapping[str, Any], **engine: Any) -> Resource:
    defaults: dict[str, Any] = {"custom": True, "provider": PROVIDER if token.startswith("kubernetes:") else None}
    return Resource(token, name, dict(inputs), {**defaults, **engine})


def obj(api: str, kind: str, name: str | None, **fields: Any) -> dict[str, Any]:
    metadata = {"namespace": "ns", **({"name": name} if name else {})}
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **fields}


def config_map(data: str, **engine: Any) -> Resource:
    return resource(CONFIG_MAP, "config", obj("v1", "ConfigMap", "config", data={"a.conf": data}), **engine)


def statefulset(annotation: str = "1", storage: str = "10Gi", **engine: Any) -> Resource:
    spec = {
        "serviceName": "nodes",
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": {"app": "b"}},
        "template": {
            "metadata": {"annotations": {"checksum": annotation}},
            "spec": {
                "containers": [{"name": "b", "image": "b:1"}],
                "volumes": [{"name": "c", "configMap": {"name": "config"}}],
            },
        },
        "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": storage}}}}],
    }
    return resource(STATEFULSET, "sts", obj("apps/v1", "StatefulSet", "sts", spec=spec), **engine)


def plan(*resources: Resource) -> Plan:
    return Plan(Path("synthetic"), {r.key: r for r in resources})


def steps_of(base: Plan, new: Plan, replace: tuple[str, ...] = ()) -> dict[str, Step]:
    return {s.name: s for s in diff_plans(base, new, replace)}


def step(base: Plan, new: Plan, name: str, replace: tuple[str, ...] = ()) -> str:
    return steps_of(base, new, replace)[name].step


# --- pulumi-kubernetes: force-new fields and delete-before-replace --------------------------------


def test_unchanged_is_same_and_a_plain_field_is_an_update() -> None:
    base = resource(DEPLOYMENT, "d", obj("apps/v1", "Deployment", "d", spec={"replicas": 2}))
    more = resource(DEPLOYMENT, "d", obj("apps/v1", "Deployment", "d", spec={"replicas": 3}))
    assert step(plan(provider(), base), plan(provider(), base), "d") == SAME
    assert step(plan(provider(), base), plan(provider(), more), "d") == UPDATE


@pytest.mark.parametrize(("name", "expected"), [("d", DELETE_BEFORE_REPLACE), (None, REPLACE)])
def test_force_new_field_deletes_first_only_with_a_fixed_name(name: str | None, expected: str) -> None:
    def deployment(app: str) -> Resource:
        return resource(
            DEPLOYMENT, "d", obj("apps/v1", "Deployment", name, spec={"selector": {"matchLabels": {"app": app}}})
        )

    assert step(plan(provider(), deployment("a")), plan(provider(), deployment("b")), "d") == expected


def test_delete_before_replace_option_overrides_the_provider() -> None:
    def deployment(app: str) -> Resource:
        spec = {"selector": {"matchLabels": {"app": app}}}
        return resource(DEPLOYMENT, "d", obj("apps/v1", "Deployment", "d", spec=spec), deleteBeforeReplace=False)

    assert step(plan(provider(), deployment("a")), plan(provider(), deployment("b")), "d") == REPLACE


@pytest.mark.parametrize(
    ("flags", "immutable", "expected"),
    [
        ({}, False, DELETE_BEFORE_REPLACE),
        ({"enableConfigMapMutable": "true"}, False, UPDATE),
        ({"enableConfigMapMutable": "true"}, True, DELETE_BEFORE_REPLACE),
    ],
)
def test_config_map_data_is_immutable_unless_the_provider_says_otherwise(
    flags: dict[str, str], immutable: bool, expected: str
) -> None:
    def cm(data: str) -> Resource:
        inputs = obj("v1", "ConfigMap", "config", data={"a.conf": data}, **({"immutable": True} if immutable else {}))
        return resource(CONFIG_MAP, "config", inputs)

    assert step(plan(provider(**flags), cm("x")), plan(provider(**flags), cm("y")), "config") == expected


@pytest.mark.parametrize(("flags", "expected"), [({}, DELETE_BEFORE_REPLACE), ({"enableSecretMutable": True}, UPDATE)])
def test_a_masked_secret_change_is_seen_through_its_hash(flags: dict[str, Any], expected: str) -> None:
    def secret(digest: str) -> Resource:
        inputs = obj("v1", "Secret", "s", type="Opaque", stringData={"password": "[secret]"})
        return resource(SECRET, "s", inputs, secretHashes={'stringData["password"]': digest})

    assert step(plan(provider(**flags), secret("aa")), plan(provider(**flags), secret("aa")), "s") == SAME
    assert step(plan(provider(**flags), secret("aa")), plan(provider(**flags), secret("bb")), "s") == expected


def test_a_secret_type_change_replaces_even_when_secrets_are_mutable() -> None:
    def secret(kind: str) -> Resource:
        return resource(SECRET, "s", obj("v1", "Secret", "s", type=kind))

    flags = {"enableSecretMutable": "true"}
    assert step(
        plan(provider(**flags), secret("Opaque")), plan(provider(**flags), secret("kubernetes.io/tls")), "s"
    ) == (DELETE_BEFORE_REPLACE)


def test_ignore_changes_hides_a_force_new_change() -> None:
    ignore = ["spec.volumeClaimTemplates[0].spec.resources.requests.storage"]
    assert step(plan(provider(), statefulset()), plan(provider(), statefulset(storage="20Gi")), "sts") == (
        DELETE_BEFORE_REPLACE
    )
    assert (
        step(
            plan(provider(), statefulset(ignoreChanges=ignore)),
            plan(provider(), statefulset(storage="20Gi", ignoreChanges=ignore)),
            "sts",
        )
        == SAME
    )


def test_replace_on_changes_turns_an_update_into_a_replacement() -> None:
    def storage_class(policy: str, **engine: Any) -> Resource:
        inputs = obj("storage.k8s.io/v1", "StorageClass", "fast", reclaimPolicy=policy, provisioner="pd")
        return resource("kubernetes:storage.k8s.io/v1:StorageClass", "fast", inputs, **engine)

    assert step(plan(provider(), storage_class("Delete")), plan(provider(), storage_class("Retain")), "fast") == UPDATE
    options = {"replaceOnChanges": ["reclaimPolicy"], "deleteBeforeReplace": True}
    assert (
        step(
            plan(provider(), storage_class("Delete", **options)),
            plan(provider(), storage_class("Retain", **options)),
            "fast",
        )
        == DELETE_BEFORE_REPLACE
    )


# --- the engine: dependent replacement ---------------------------------------------------------------


def _cascade_plans(**sts_engine: Any) -> tuple[Plan, Plan]:
    cm_key = f"{CONFIG_MAP}::config"
    engine = {"dependencies": [cm_key], "propertyDependencies": {"spec": [cm_key]}} | sts_engine
    base = plan(provider(), config_map("x"), statefulset(**engine))
    new = plan(provider(), config_map("y"), statefulset(**engine))
    return base, new


def test_a_dependent_whose_spec_depends_on_a_condemned_config_map_is_deleted_first() -> None:
    steps = steps_of(*_cascade_plans())
    assert steps["config"].step == DELETE_BEFORE_REPLACE
    assert steps["sts"].step == DELETE_BEFORE_REPLACE
    assert steps["sts"].reasons[0].startswith("deleted first with config: spec depends on it")


def test_a_depends_on_edge_alone_does_not_cascade() -> None:
    steps = steps_of(*_cascade_plans(propertyDependencies={"spec": []}))
    assert steps["config"].step == DELETE_BEFORE_REPLACE
    assert steps["sts"].step == SAME


def test_ignore_changes_on_the_dependent_property_stops_the_cascade() -> None:
    steps = steps_of(*_cascade_plans(ignoreChanges=["spec"]))
    assert steps["sts"].step == SAME


def test_a_dependent_without_force_new_fields_under_the_property_is_kept() -> None:
    cm_key = f"{CONFIG_MAP}::config"
    pdb = resource(
        "kubernetes:policy/v1:PodDisruptionBudget",
        "pdb",
        obj("policy/v1", "PodDisruptionBudget", "pdb", spec={"maxUnavailable": 1}),
        propertyDependencies={"spec": [cm_key]},
    )
    steps = steps_of(plan(provider(), config_map("x"), pdb), plan(provider(), config_map("y"), pdb))
    assert steps["pdb"].step == SAME


def test_mutable_config_map_updates_and_the_annotation_rolls_the_pods() -> None:
    cm_key = f"{CONFIG_MAP}::config"
    engine: dict[str, Any] = {"propertyDependencies": {"spec": [cm_key]}}
    flags = {"enableConfigMapMutable": "true"}
    base = plan(provider(**flags), config_map("x"), statefulset("1", **engine))
    rolled = steps_of(base, plan(provider(**flags), config_map("y"), statefulset("2", **engine)))
    assert (rolled["config"].step, rolled["sts"].step, rolled["sts"].rolls) == (UPDATE, UPDATE, True)
    assert rolled["sts"].mounts_changed == ("ConfigMap/config",)
    stale = steps_of(base, plan(provider(**flags), config_map("y"), statefulset("1", **engine)))
    assert (stale["sts"].step, stale["sts"].rolls) == (SAME, False)
    assert any("keep the old ConfigMap/config" in r for r in stale["sts"].reasons)


# --- providers: Kubernetes provider replacement, pulumi-gcp, random and tls ------------------------------


def test_a_new_cluster_identifier_replaces_the_provider_and_its_objects() -> None:
    cm = config_map("x")
    steps = steps_of(plan(provider(), cm), plan(provider(clusterIdentifier="c2"), cm))
    assert (steps["k8s"].step, steps["config"].step) == (REPLACE, REPLACE)


def test_a_kubeconfig_change_alone_updates_the_provider_only() -> None:
    def prov(digest: str) -> Resource:
        r = provider(kubeconfig="[secret]")
        return Resource(r.type, r.name, r.inputs, {**r.engine, "secretHashes": {"kubeconfig": digest}})

    steps = steps_of(plan(prov("a"), config_map("x")), plan(prov("b"), config_map("x")))
    assert (steps["k8s"].step, steps["config"].step) == (UPDATE, SAME)


def test_a_replaced_cluster_makes_the_provider_unknown_and_replaces_everything_on_it() -> None:
    def cluster(location: str) -> Resource:
        return resource(CLUSTER, "gke", {"location": location, "minMasterVersion": "1.35"})

    prov = Resource(
        "pulumi:providers:kubernetes",
        "k8s",
        {"clusterIdentifier": "c1"},
        {"custom": True, "propertyDependencies": {"clusterIdentifier": [f"{CLUSTER}::gke"]}},
    )
    steps = steps_of(
        plan(cluster("us-east1-b"), prov, config_map("x")), plan(cluster("us-east1-c"), prov, config_map("x"))
    )
    assert [steps[n].step for n in ("gke", "k8s", "config")] == [REPLACE, REPLACE, REPLACE]


@pytest.mark.parametrize(
    ("token", "old", "new", "expected"),
    [
        (
            NODE_POOL,
            {"nodeConfig": {"machineType": "e2-standard-2"}},
            {"nodeConfig": {"machineType": "e2-standard-4"}},
            UPDATE,
        ),
        (NODE_POOL, {"nodeConfig": {"spot": True}}, {"nodeConfig": {"spot": False}}, REPLACE),
        (NODE_POOL, {"nodeCount": 3}, {"nodeCount": 5}, UPDATE),
        (CLUSTER, {"minMasterVersion": "1.35"}, {"minMasterVersion": "1.36"}, UPDATE),
        (CLUSTER, {"datapathProvider": "LEGACY_DATAPATH"}, {"datapathProvider": "ADVANCED_DATAPATH"}, REPLACE),
        ("gcp:artifactregistry/repository:Repository", {"description": "a"}, {"description": "b"}, UPDATE),
        ("gcp:artifactregistry/repository:Repository", {"repositoryId": "a"}, {"repositoryId": "b"}, REPLACE),
        ("random:index/randomPassword:RandomPassword", {"keepers": {"v": "1"}}, {"keepers": {"v": "2"}}, REPLACE),
        ("tls:index/locallySignedCert:LocallySignedCert", {"earlyRenewalHours": 1}, {"earlyRenewalHours": 2}, UPDATE),
        (
            "tls:index/locallySignedCert:LocallySignedCert",
            {"validityPeriodHours": 1},
            {"validityPeriodHours": 2},
            REPLACE,
        ),
    ],
)
def test_bridged_providers_force_new_fields(
    token: str, old: dict[str, Any], new: dict[str, Any], expected: str
) -> None:
    assert step(plan(resource(token, "r", old)), plan(resource(token, "r", new)), "r") == expected


def test_a_gcp_replacement_deletes_first_only_with_the_option() -> None:
    def pool(spot: bool) -> Resource:
        return resource(NODE_POOL, "pool", {"nodeConfig": {"spot": spot}}, deleteBeforeReplace=True)

    assert step(plan(pool(True)), plan(pool(False)), "pool") == DELETE_BEFORE_REPLACE


def test_replace_option_replaces_an_unchanged_resource() -> None:
    password = resource("random:index/randomPassword:RandomPassword", "pw", {"length": 32})
    steps = steps_of(plan(password), plan(password), ("pw",))
    assert steps["pw"].step == REPLACE
    assert "--replace" in steps["pw"].reasons[0]
    with pytest.raises(PlanError, match="no resource named nope"):
        diff_plans(plan(password), plan(password), ("nope",))


PASSWORD = "random:index/randomPassword:RandomPassword"


def _cookie_plans() -> tuple[Plan, Plan]:
    """A RandomPassword and the Secret that holds it share a logical name (dev's rabbitmq-erlang-cookie)."""
    pw_key = f"{PASSWORD}::cookie"
    flags = {"enableSecretMutable": "true"}

    def side(digest: str, annotation: str) -> Plan:
        secret = resource(
            SECRET,
            "cookie",
            obj("v1", "Secret", "cookie", stringData={"cookie": "[secret]"}),
            propertyDependencies={"stringData": [pw_key]},
            secretHashes={"stringData": digest},
        )
        sts = statefulset(annotation, propertyDependencies={"spec": [pw_key]})
        return plan(provider(**flags), resource(PASSWORD, "cookie", {"length": 32}), secret, sts)

    return side("aa", "1"), side("bb", "2")


def test_replace_by_type_and_name_replaces_the_password_not_the_secret_named_alike() -> None:
    """`pulumi up --replace <urn>` names one resource: the Secret holding the password is updated."""
    base, new = _cookie_plans()
    steps = {s.key: s for s in diff_plans(base, new, (f"{PASSWORD}::cookie",))}
    assert steps[f"{PASSWORD}::cookie"].step == REPLACE
    secret = steps[f"{SECRET}::cookie"]
    assert (secret.step, secret.reasons) == (UPDATE, ("changed: stringData (update)",))
    sts = steps[f"{STATEFULSET}::sts"]
    assert (sts.step, sts.rolls) == (UPDATE, True)
    assert "spec.template.metadata.annotations.checksum" in sts.reasons[0]


def test_a_bare_name_two_resources_share_is_refused_with_the_candidates() -> None:
    base, new = _cookie_plans()
    with pytest.raises(PlanError, match="REPLACE: cookie names 2 resources") as error:
        diff_plans(base, new, ("cookie",))
    assert f"{SECRET}::cookie, {PASSWORD}::cookie" in str(error.value)
    assert step(plan(provider(), config_map("x")), plan(provider(), config_map("y")), "config") == (
        DELETE_BEFORE_REPLACE
    )


def test_allow_takes_type_and_name_and_refuses_a_shared_bare_name() -> None:
    """ALLOW=ha-celery-dev would have allowed the GKE cluster and the registry alike."""

    def side(location: str) -> Plan:
        return plan(
            resource(CLUSTER, "gke", {"location": location}), resource(REPOSITORY, "gke", {"location": location})
        )

    steps = diff_plans(side("us-east1-b"), side("us-east1-c"))
    assert sorted(s.key for s in stateful_losses(steps)) == [f"{REPOSITORY}::gke", f"{CLUSTER}::gke"]
    with pytest.raises(PlanError, match=f"ALLOW: gke names 2 resources; give one: {REPOSITORY}::gke, {CLUSTER}::gke"):
        stateful_losses(steps, allow=["gke"])
    assert [s.key for s in stateful_losses(steps, allow=[f"{CLUSTER}::gke"])] == [f"{REPOSITORY}::gke"]


def test_a_rebuilt_image_updates_the_deployment_that_runs_it() -> None:
    """Only the image leaf follows the replaced Image (the new plan shows its new digest); the rest of
    the spec is as the plan shows it, so the fixed selector does not look changed."""
    image_key = f"{IMAGE}::worker"

    def side(digest: str) -> Plan:
        spec = {
            "selector": {"matchLabels": {"app": "w"}},
            "template": {"spec": {"containers": [{"name": "w", "image": f"r/w:1@sha256:{digest}"}]}},
        }
        deployment = resource(
            DEPLOYMENT, "d", obj("apps/v1", "Deployment", "d", spec=spec), propertyDependencies={"spec": [image_key]}
        )
        return plan(provider(), resource(IMAGE, "worker", {"tags": ["r/w:1"]}), deployment)

    steps = steps_of(side("aa"), side("aa-replaced"), ("worker",))
    assert steps["worker"].step == REPLACE
    assert (steps["d"].step, steps["d"].rolls) == (UPDATE, True)
    assert steps["d"].reasons[0] == "changed: spec.template.spec.containers[0].image (update)"
    # The spec is not made unknown as a whole (that is the cascade's view): the same digest is no change.
    assert steps_of(side("aa"), side("aa"), ("worker",))["d"].step == SAME


def test_a_dependent_that_no_longer_depends_on_the_root_is_still_deleted_first() -> None:
    """The cascade walks the base plan's edges; the new plan may order the dependent before the root."""
    cm_key = f"{CONFIG_MAP}::config"
    engine: dict[str, Any] = {"dependencies": [cm_key], "propertyDependencies": {"spec": [cm_key]}}
    base = plan(provider(), config_map("x"), statefulset(**engine))
    new = plan(provider(), config_map("y"), statefulset())
    steps = steps_of(base, new)
    assert steps["config"].step == DELETE_BEFORE_REPLACE
    assert steps["sts"].step == DELETE_BEFORE_REPLACE
    assert steps["sts"].reasons[0].startswith("deleted first with config: spec depends on it")


def test_an_immutable_fixed_name_config_map_replaces_a_dependent_whose_force_new_spec_uses_it() -> None:
    """The rule the project avoids (the StatefulSet depends on its ConfigMap by an ordering edge only)
    still holds for others: a mutable-provider but `immutable: true` ConfigMap with a fixed name is
    deleted first, and so is the StatefulSet whose spec reads it through a property dependency."""
    cm_key = f"{CONFIG_MAP}::config"
    flags = {"enableConfigMapMutable": "true"}

    def cm(data: str) -> Resource:
        inputs = obj("v1", "ConfigMap", "config", data={"a.conf": data}, immutable=True)
        return resource(CONFIG_MAP, "config", inputs)

    engine: dict[str, Any] = {"propertyDependencies": {"spec": [cm_key]}}
    steps = steps_of(
        plan(provider(**flags), cm("x"), statefulset("1", **engine)),
        plan(provider(**flags), cm("y"), statefulset("2", **engine)),
    )
    assert (steps["config"].step, steps["sts"].step) == (DELETE_BEFORE_REPLACE, DELETE_BEFORE_REPLACE)
    assert steps["sts"].reasons[0].startswith("deleted first with config: spec depends on it")


# --- creates, deletes, stateful objects and the engine's order --------------------------------------------


def test_creates_deletes_and_retain_on_delete() -> None:
    kept = resource(CONFIG_MAP, "kept", obj("v1", "ConfigMap", "kept"), retainOnDelete=True)
    steps = steps_of(plan(provider(), kept), plan(provider(), config_map("x")))
    assert steps["config"].step == CREATE
    assert steps["kept"].step == DELETE
    assert any("retainOnDelete" in r for r in steps["kept"].reasons)


def test_a_stateful_resource_retained_on_delete_is_no_loss() -> None:
    """The registry keeps retainOnDelete: leaving the program forgets it, its images stay."""
    registry = resource(REPOSITORY, "registry", {"repositoryId": "r"}, retainOnDelete=True)
    pool = resource(NODE_POOL, "pool", {"nodeCount": 3})
    steps = steps_of(plan(registry, pool), plan())
    assert (steps["registry"].step, steps["pool"].step) == (DELETE, DELETE)
    assert any("retained on delete" in r for r in steps["registry"].reasons)
    assert [s.name for s in stateful_losses(steps.values())] == ["pool"]


def test_stateful_losses_name_what_is_lost_unless_allowed() -> None:
    steps = list(diff_plans(plan(provider(), statefulset()), plan(provider(), statefulset(storage="20Gi"))))
    assert [s.name for s in stateful_losses(steps)] == ["sts"]
    assert steps[-1].object == "StatefulSet/ns/sts"
    assert stateful_losses(steps, allow=["sts"]) == []
    assert stateful_losses(steps, allow=[f"{STATEFULSET}::sts"]) == []
    assert stateful_losses(steps, allow=["StatefulSet/ns/sts"]) == []
    with pytest.raises(PlanError, match="ALLOW: no resource named nope"):
        stateful_losses(steps, allow=["nope"])


def test_operations_follow_the_engine() -> None:
    """Delete-before-replace deletes first (dependents first), creates in dependency order, and the old
    copy of a create-before-delete replacement last."""
    base, new = _cascade_plans()
    password = resource("random:index/randomPassword:RandomPassword", "pw", {"length": 32})
    steps = diff_plans(plan(*base.resources.values(), password), plan(*new.resources.values(), password), ("pw",))
    ops = [(op, s.name) for op, s in operations(steps)]
    assert ops == [
        ("delete", "sts"),
        ("delete", "config"),
        ("create", "pw"),
        ("create", "config"),
        ("create", "sts"),
        ("delete", "pw"),
    ]


def test_property_paths_round_trip_and_match_list_wildcards() -> None:
    text = 'spec.template.metadata.annotations["ha-celery/config-sha256"]'
    assert format_path(parse_path(text)) == text
    assert covers(parse_path("spec.containers[*].image"), ("spec", "containers", 2, "image", "x"))
    assert not covers(parse_path("spec.selector"), ("spec", "replicas"))


def test_a_plan_without_engine_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "resources.json").write_text(json.dumps([]))
    with pytest.raises(PlanError, match=r"not a complete plan \(missing engine\.json, settings\.json, kubernetes"):
        Plan.load(tmp_path)
