"""The policy pack (policy/): each invariant offline against the plans' resources.

Every validator passes on the real plan of every stack and fails on a mutated copy of the real
resource, with a message that names what is wrong. The pack's wiring (one mandatory policy per
invariant, URNs on stack violations, unknowns during preview) is checked through pulumi_policy's
own argument types; ``policy/__main__.py`` is run with ``PolicyPack`` replaced by a recorder,
because the real one starts the analyzer's gRPC server and blocks (tests/integration/test_policy_pack.py
serves it).
"""

from __future__ import annotations

import copy
import json
import re
import runpy
from collections.abc import Callable, Mapping
from typing import Any

import pulumi_policy
import pytest
from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UnknownValueError, unknown_checking_proxy

from policy import pack, validators
from policy.validators import (
    CLUSTER,
    CONFIG_MAP,
    DEPLOYMENT,
    DOCKER_BUILD_IMAGE,
    INVARIANTS,
    PDB,
    STATEFUL_SET,
    Invariant,
    Resource,
)
from tests.conftest import ROOT, Plan

INVARIANT = {invariant.name: invariant for invariant in INVARIANTS}


def resources_of(plan: Plan) -> list[Resource]:
    """A deep copy of the plan's resources, free to mutate."""
    return [Resource(r["type"], r["name"], copy.deepcopy(r["inputs"])) for r in plan.resources]


def find(resources: list[Resource], token: str, name: str | None = None) -> Resource:
    found = [r for r in resources if r.type == token and name in (None, r.name)]
    assert len(found) == 1, f"expected one {token} {name or ''}, found {[r.name for r in found]}"
    return found[0]


def mutable(resource: Resource) -> dict[str, Any]:
    """The resource's properties, as the deep copy ``resources_of`` made (a dict)."""
    assert isinstance(resource.props, dict)
    return resource.props


def run(name: str, resources: list[Resource]) -> list[str]:
    """The violation messages of one invariant over a stack's resources."""
    invariant = INVARIANT[name]
    if invariant.check_stack is not None:
        return [v.message for v in invariant.check_stack(resources)]
    assert invariant.check_resource is not None
    return [m for r in resources for m in invariant.check_resource(r.type, r.props)]


def struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(props))
    return message


def as_engine_sends(props: Mapping[str, Any]) -> Any:
    """Properties as a policy sees them under the CLI: through a protobuf Struct (every number a
    float) and pulumi_policy's deserializer and unknown-checking proxy."""
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct(props))))


def engine_shaped(resources: list[Resource]) -> list[Resource]:
    return [Resource(r.type, r.name, as_engine_sends(r.props)) for r in resources]


def pod_spec(resource: Resource) -> Any:
    return resource.props["spec"]["template"]["spec"]


def broker(resources: list[Resource]) -> Resource:
    return find(resources, STATEFUL_SET)


def worker(resources: list[Resource]) -> Resource:
    """The default lane's worker Deployment."""
    return find(resources, DEPLOYMENT, "celery-deployment")


def definitions(resources: list[Resource]) -> tuple[Resource, dict[str, Any]]:
    config = find(resources, CONFIG_MAP, "rabbitmq-config")
    return config, json.loads(config.props["data"]["definitions.json"])


def set_definitions(config: Resource, document: dict[str, Any]) -> None:
    config.props["data"]["definitions.json"] = json.dumps(document)


# --- the real plans pass -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(INVARIANT))
def test_the_real_plan_passes(plan: Plan, name: str) -> None:
    assert run(name, resources_of(plan)) == [], f"{plan.stack}: policy {name} fails on the real plan"


@pytest.mark.parametrize("name", list(INVARIANT))
def test_the_real_plan_passes_as_the_engine_sends_it(plan: Plan, name: str) -> None:
    assert run(name, engine_shaped(resources_of(plan))) == [], f"{plan.stack}: policy {name} fails under the engine"


def _replicas_4(resources: list[Resource]) -> None:
    broker(resources).props["spec"]["replicas"] = 4


def _broker_pdb_2(resources: list[Resource]) -> None:
    find(resources, PDB, "rabbitmq-pdb").props["spec"]["maxUnavailable"] = 2


def _worker_grace_30(resources: list[Resource]) -> None:
    pod_spec(worker(resources))["terminationGracePeriodSeconds"] = 30


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("broker-replicas-odd", _replicas_4),
        ("disruption-budgets", _broker_pdb_2),
        ("grace-covers-hooks", _worker_grace_30),
    ],
)
def test_numbers_sent_as_floats_are_judged_the_same(
    plans: dict[str, Plan], name: str, mutate: Callable[[list[Resource]], None]
) -> None:
    resources = resources_of(plans["prod"])
    mutate(resources)
    plain = run(name, resources)
    assert plain, f"{name}: the mutation must violate the policy"
    assert run(name, engine_shaped(resources)) == plain


def test_the_environment_comes_from_the_cluster_label(plans: dict[str, Plan]) -> None:
    assert validators.environment(resources_of(plans["prod"]))[0] is True
    assert validators.environment(resources_of(plans["dev"])) == (False, "dev")
    no_cluster = [r for r in resources_of(plans["dev"]) if r.type != CLUSTER]
    assert validators.environment(no_cluster)[0] is True, "a stack without a cluster label must be checked as prod"


# --- broker-replicas-odd ---------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_broker_replicas_must_be_odd_and_at_least_3(plans: dict[str, Plan], replicas: int) -> None:
    resources = resources_of(plans["dev"])
    broker(resources).props["spec"]["replicas"] = replicas
    assert run("broker-replicas-odd", resources) == [
        f"StatefulSet rabbitmq: spec.replicas is {replicas}; a RabbitMQ cluster needs an odd number >= 3 "
        "(quorum queues keep a majority through the loss of one node only then)"
    ]


def test_five_brokers_pass(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    broker(resources).props["spec"]["replicas"] = 5
    assert run("broker-replicas-odd", resources) == []


# --- broker-quorum-dead-letter ---------------------------------------------------------------


def test_a_policy_without_dead_letter_exchange_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    config, document = definitions(resources)
    for policy in document["policies"]:
        del policy["definition"]["dead-letter-exchange"]
    set_definitions(config, document)
    messages = run("broker-quorum-dead-letter", resources)
    assert len(messages) == 2, "one per lane's queue"
    for message, (policy, queue) in zip(
        messages, [("lane-celery", "celery"), ("lane-celery.long", "celery.long")], strict=True
    ):
        assert "ConfigMap rabbitmq" in message, message
        assert f"policy {policy!r} (the one applied to {queue!r}) sets no dead-letter-exchange" in message


def test_a_higher_priority_policy_without_dead_letter_exchange_wins(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    config, document = definitions(resources)
    document["policies"].append(
        {"name": "tuning", "pattern": "^celery$", "apply-to": "quorum_queues", "priority": 5, "definition": {}}
    )
    set_definitions(config, document)
    [message] = run("broker-quorum-dead-letter", resources)
    assert "policy 'tuning' (the one applied to 'celery') sets no dead-letter-exchange" in message, message


def test_no_quorum_policy_for_the_task_queue_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    config, document = definitions(resources)
    document["policies"] = [{**p, "apply-to": "classic_queues"} for p in document["policies"]]
    set_definitions(config, document)
    messages = run("broker-quorum-dead-letter", resources)
    assert len(messages) == 2, messages
    for message, queue in zip(messages, ["celery", "celery.long"], strict=True):
        assert f"no policy applies to quorum queues matching the task queue {queue!r}" in message, message


def test_an_undeclared_dead_letter_exchange_and_queue_are_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    config, document = definitions(resources)
    document["exchanges"] = [e for e in document["exchanges"] if e["name"] != "celery.dlx"]
    document["bindings"] = [b for b in document["bindings"] if b["source"] != "celery.dlx"]
    set_definitions(config, document)
    assert run("broker-quorum-dead-letter", resources) == [
        message
        for policy in ("lane-celery", "lane-celery.long")
        for message in (
            f"ConfigMap rabbitmq-config: definitions.json: dead-letter exchange 'celery.dlx' (policy {policy!r})"
            " is not declared",
            "ConfigMap rabbitmq-config: definitions.json: no declared queue is bound to the dead-letter exchange "
            "'celery.dlx': dead letters would be dropped",
        )
    ]


def test_no_definitions_config_map_is_refused(plans: dict[str, Plan]) -> None:
    resources = [r for r in resources_of(plans["dev"]) if r.type != CONFIG_MAP]
    [message] = run("broker-quorum-dead-letter", resources)
    assert message.startswith("no ConfigMap carries the broker's definitions.json"), message


# --- disruption-budgets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdb", "kind_and_name"), [("rabbitmq-pdb", "StatefulSet rabbitmq"), ("celery-pdb", "Deployment celery-worker")]
)
def test_a_workload_without_pdb_is_refused(plans: dict[str, Plan], pdb: str, kind_and_name: str) -> None:
    resources = [r for r in resources_of(plans["prod"]) if not (r.type == PDB and r.name == pdb)]
    [message] = run("disruption-budgets", resources)
    assert message.startswith(f"{kind_and_name}: no PodDisruptionBudget selects its pods"), message


def test_a_pdb_selecting_other_pods_does_not_count(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    find(resources, PDB, "celery-pdb").props["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "other"}
    [message] = run("disruption-budgets", resources)
    assert message.startswith("Deployment celery-worker: no PodDisruptionBudget"), message


@pytest.mark.parametrize("spec", [{"maxUnavailable": 2}, {"minAvailable": 1}, {"maxUnavailable": "50%"}])
def test_a_broker_pdb_that_loses_the_majority_is_refused(plans: dict[str, Plan], spec: dict[str, Any]) -> None:
    resources = resources_of(plans["prod"])
    pdb = find(resources, PDB, "rabbitmq-pdb")
    mutable(pdb)["spec"] = {"selector": pdb.props["spec"]["selector"], **spec}
    [message] = run("disruption-budgets", resources)
    assert message.startswith("PodDisruptionBudget rabbitmq: lets 2 of 3 broker pods go at once; at most 1"), message


# --- prod-placement --------------------------------------------------------------------------


def test_prod_brokers_with_preferred_anti_affinity_are_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    pod_spec(broker(resources))["affinity"] = pod_spec(broker(resources_of(plans["dev"])))["affinity"]
    [message] = run("prod-placement", resources)
    assert message.startswith("StatefulSet rabbitmq (prod: GKE cluster ha-celery-prod has"), message
    assert "no required pod anti-affinity on kubernetes.io/hostname" in message


def test_prod_brokers_with_a_soft_zone_spread_are_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    for rule in pod_spec(broker(resources))["topologySpreadConstraints"]:
        rule["whenUnsatisfiable"] = "ScheduleAnyway"
    [message] = run("prod-placement", resources)
    assert "no topology spread over topology.kubernetes.io/zone with whenUnsatisfiable DoNotSchedule" in message


def test_prod_workers_without_a_zone_spread_are_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    spec = pod_spec(worker(resources))
    spec["topologySpreadConstraints"] = [
        c for c in spec["topologySpreadConstraints"] if c["topologyKey"] != "topology.kubernetes.io/zone"
    ]
    [message] = run("prod-placement", resources)
    assert message.startswith("Deployment celery-worker (prod: "), message
    assert "no topology spread constraint" in message


@pytest.mark.parametrize("label", ["prod", "staging", None])
def test_dev_placement_is_refused_unless_the_cluster_says_dev(plans: dict[str, Plan], label: str | None) -> None:
    resources = resources_of(plans["dev"])
    labels = find(resources, CLUSTER).props["resourceLabels"]
    if label is None:
        del labels["environment"]
    else:
        labels["environment"] = label
    messages = run("prod-placement", resources)
    assert len(messages) == 2, messages
    assert all(m.startswith("StatefulSet rabbitmq (") for m in messages), messages


# --- images-pinned ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("rabbitmq", "no tag (the runtime pulls :latest)"),
        ("rabbitmq:latest", "the floating tag latest"),
        ("rabbitmq:4.3", "the tag '4.3' is not a full version"),
        ("rabbitmq:4.3-management", "the tag '4.3-management' is not a full version"),
        ("registry:5000/rabbitmq:management", "the tag 'management' is not a full version"),
    ],
)
def test_floating_images_are_refused(plans: dict[str, Plan], image: str, why: str) -> None:
    resources = resources_of(plans["prod"])
    pod_spec(broker(resources))["containers"][0]["image"] = image
    [message] = run("images-pinned", resources)
    assert message.startswith(f"StatefulSet rabbitmq: container rabbitmq image {image!r} is not pinned: {why}"), message


def test_an_init_container_image_is_checked_too(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    pod_spec(broker(resources))["initContainers"][0]["image"] = "busybox"
    [message] = run("images-pinned", resources)
    assert "image 'busybox' is not pinned: no tag" in message, message


def test_a_worker_image_without_its_digest_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    container = pod_spec(worker(resources))["containers"][0]
    container["image"] = container["image"].split("@")[0]
    [message] = run("images-pinned", resources)
    assert message.startswith("Deployment celery-worker: container worker image"), message
    assert "not a full version" in message


def test_pushing_latest_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    build = find(resources, DOCKER_BUILD_IMAGE)
    mutable(build)["tags"] = [build.props["tags"][0].rsplit(":", 1)[0] + ":latest"]
    [message] = run("images-pinned", resources)
    assert message.startswith("worker image build: tag "), message
    assert "is latest" in message


@pytest.mark.parametrize("image", ["rabbitmq:4.3.6-management", "r/w:abc@sha256:" + "0" * 64, "x:v1.2.3"])
def test_pinned_images_pass(image: str) -> None:
    assert validators.image_pin_problem(image) is None


# --- no-plain-secrets ------------------------------------------------------------------------


def test_a_password_literal_in_env_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    for env in pod_spec(worker(resources))["containers"][0]["env"]:
        if env["name"] == "BROKER_PASSWORD":
            env.pop("valueFrom")
            env["value"] = "hunter2"
    assert run("no-plain-secrets", resources) == [
        "Deployment celery-worker: container worker env BROKER_PASSWORD is a literal value; "
        "read it from a Secret (valueFrom.secretKeyRef)"
    ]


def test_a_broker_url_with_password_in_env_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    pod_spec(worker(resources))["containers"][0]["env"].append(
        {"name": "BROKER_URLS", "value": "amqp://celery:hunter2@rabbitmq-0.rabbitmq-nodes:5672//"}
    )
    assert run("no-plain-secrets", resources) == [
        "Deployment celery-worker: container worker env BROKER_URLS holds a URL with a password; use a Secret"
    ]


def test_a_password_in_the_broker_config_map_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    data = find(resources, CONFIG_MAP, "rabbitmq-config").props["data"]
    data["20-ha-celery.conf"] += "default_user = celery\ndefault_pass = hunter2\n"
    assert run("no-plain-secrets", resources) == [
        "ConfigMap rabbitmq-config: data['20-ha-celery.conf'] sets 'default_pass' in plain text; put it in a Secret"
    ]


def test_a_user_password_in_the_definitions_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    config, document = definitions(resources)
    document["users"] = [{"name": "celery", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"}]
    config.props["data"]["definitions.json"] = json.dumps(document, indent=2)
    assert run("no-plain-secrets", resources) == [
        "ConfigMap rabbitmq-config: data['definitions.json'] sets 'password_hash' in plain text; put it in a Secret"
    ]


def test_an_erlang_cookie_key_in_a_config_map_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    find(resources, CONFIG_MAP, "rabbitmq-config").props["data"][".erlang.cookie"] = "abc"
    assert run("no-plain-secrets", resources) == [
        "ConfigMap rabbitmq-config: data key '.erlang.cookie' names a secret; put it in a Secret"
    ]


# --- grace-covers-hooks ----------------------------------------------------------------------


def pre_stop(resource: Resource) -> list[str]:
    command: list[str] = pod_spec(resource)["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    return command


def test_a_broker_grace_shorter_than_its_pre_stop_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    waits, unbounded = validators.hook_budget_s(pre_stop(broker(resources)))
    assert waits > 0, "the broker's preStop waits must be bounded (-t) for the budget to be checked"
    assert unbounded == []
    pod_spec(broker(resources))["terminationGracePeriodSeconds"] = waits
    assert run("grace-covers-hooks", resources) == [
        f"StatefulSet rabbitmq: terminationGracePeriodSeconds is {waits} s, but the preStop waits ({waits} s) plus a "
        f"minute for the node to stop (60 s) need {waits + 60} s; the kubelet SIGKILLs at the grace period"
    ]


def test_a_longer_pre_stop_wait_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    command = pre_stop(broker(resources))
    grace = pod_spec(broker(resources))["terminationGracePeriodSeconds"]
    command[-1] = re.sub(r"drain -t \d+", f"drain -t {grace}", command[-1])
    [message] = run("grace-covers-hooks", resources)
    assert f"terminationGracePeriodSeconds is {grace} s, but the preStop waits (" in message, message


def test_an_unbounded_pre_stop_wait_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["dev"])
    pre_stop(broker(resources))[-1] = "rabbitmq-upgrade await_online_quorum_plus_one && rabbitmq-upgrade drain -t 240"
    assert run("grace-covers-hooks", resources) == [
        "StatefulSet rabbitmq: container rabbitmq preStop step 'rabbitmq-upgrade await_online_quorum_plus_one' has "
        "no timeout (-t); an unbounded wait ends in SIGKILL at the grace period"
    ]


@pytest.mark.parametrize("grace", [30, None])
def test_a_worker_grace_below_the_task_time_limit_is_refused(plans: dict[str, Plan], grace: int | None) -> None:
    resources = resources_of(plans["prod"])
    spec = pod_spec(worker(resources))
    if grace is None:
        del spec["terminationGracePeriodSeconds"]  # Kubernetes' default: 30 s
    else:
        spec["terminationGracePeriodSeconds"] = grace
    assert run("grace-covers-hooks", resources) == [
        "Deployment celery-worker: terminationGracePeriodSeconds is 30 s, but the preStop waits (0 s) plus the warm "
        "shutdown: its lane's task hard time limit + shutdown margin (contract.lanes) (75 s) need 75 s; "
        "the kubelet SIGKILLs at the grace period"
    ]


def test_a_long_lane_worker_needs_its_own_time_limit_in_its_grace(plans: dict[str, Plan]) -> None:
    """The long lane's hour-long tasks: a grace sized for the default lane's 60 s would cut them."""
    resources = resources_of(plans["prod"])
    pod_spec(find(resources, DEPLOYMENT, "celery-long-deployment"))["terminationGracePeriodSeconds"] = 75
    assert run("grace-covers-hooks", resources) == [
        "Deployment celery-worker-long: terminationGracePeriodSeconds is 75 s, but the preStop waits (0 s) plus the"
        " warm shutdown: its lane's task hard time limit + shutdown margin (contract.lanes) (3615 s) need 3615 s;"
        " the kubelet SIGKILLs at the grace period"
    ]


# --- prod-deletion-protection ----------------------------------------------------------------


def test_prod_without_deletion_protection_is_refused(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    mutable(find(resources, CLUSTER))["deletionProtection"] = False
    [message] = run("prod-deletion-protection", resources)
    assert message.startswith("GKE cluster: deletionProtection is false in environment 'prod'"), message


def test_deletion_protection_left_to_the_provider_default_passes(plans: dict[str, Plan]) -> None:
    resources = resources_of(plans["prod"])
    del mutable(find(resources, CLUSTER))["deletionProtection"]
    assert run("prod-deletion-protection", resources) == []


# --- the pack --------------------------------------------------------------------------------


def test_the_pack_has_one_mandatory_policy_per_invariant() -> None:
    policies = pack.policies()
    assert [p.name for p in policies] == [i.name for i in INVARIANTS]
    assert len(set(INVARIANT)) == len(INVARIANTS) == 8
    for policy, invariant in zip(policies, INVARIANTS, strict=True):
        assert policy.enforcement_level is EnforcementLevel.MANDATORY, policy.name
        kind = StackValidationPolicy if invariant.check_stack else ResourceValidationPolicy
        assert isinstance(policy, kind), f"{policy.name}: {type(policy).__name__}"


def test_main_serves_the_policies_as_one_mandatory_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.append(kwargs))
    runpy.run_path(str(ROOT / "policy" / "__main__.py"), run_name="__main__")
    [kwargs] = built
    assert kwargs["name"] == "ha-celery-invariants"
    assert kwargs["enforcement_level"] is EnforcementLevel.MANDATORY
    assert [p.name for p in kwargs["policies"]] == [i.name for i in INVARIANTS]


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _policy(name: str) -> Any:
    return next(p for p in pack.policies() if p.name == name)


def _collect() -> tuple[list[tuple[str, str | None]], Callable[[str, str | None], None]]:
    reported: list[tuple[str, str | None]] = []
    return reported, lambda message, urn=None: reported.append((message, urn))


def test_a_resource_policy_reports_through_the_sdk(plans: dict[str, Plan]) -> None:
    sts = broker(resources_of(plans["prod"]))
    sts.props["spec"]["replicas"] = 4
    reported, report = _collect()
    args = ResourceValidationArgs(STATEFUL_SET, as_engine_sends(sts.props), "urn:sts", sts.name, _options(), None)
    _policy("broker-replicas-odd").validate(args, report)
    assert [m for m, _ in reported] == run("broker-replicas-odd", [sts]) != []


def test_a_stack_policy_names_the_resource_at_fault_by_urn(plans: dict[str, Plan]) -> None:
    resources = [r for r in resources_of(plans["prod"]) if r.name != "celery-pdb"]
    stack = [
        PolicyResource(r.type, as_engine_sends(r.props), f"urn:{r.name}", r.name, _options(), None, None, [], {})
        for r in resources
    ]
    reported, report = _collect()
    _policy("disruption-budgets").validate(StackValidationArgs(stack), report)
    assert [urn for _, urn in reported] == ["urn:celery-deployment"], reported


def test_an_unknown_value_is_not_a_pass(plans: dict[str, Plan]) -> None:
    """During preview an unknown replica count raises (the SDK reports the policy as not runnable
    until `pulumi up`) instead of silently passing."""
    sts = broker(resources_of(plans["dev"]))
    sts.props["spec"]["replicas"] = UNKNOWN_NUMBER_VALUE
    with pytest.raises(UnknownValueError):
        validators.check_broker_replicas(STATEFUL_SET, unknown_checking_proxy(dict(sts.props)))


def test_every_invariant_is_a_resource_or_a_stack_check() -> None:
    for invariant in INVARIANTS:
        assert isinstance(invariant, Invariant)
        assert (invariant.check_stack is None) != (invariant.check_resource is None), invariant.name
