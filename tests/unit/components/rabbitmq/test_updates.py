"""Day 2: what a `pulumi up` after the first does to the broker and the workers.

What the engine does on an update depends on the registered resource options and property
dependencies, which only the mocks' monitor sees (helpers.record). The rules these tests hold the
program to come from the providers' and the engine's source (cloud review 3, findings 1-4):
- pulumi-kubernetes diff.go: ConfigMap/Secret data is force-new unless the provider enables
  mutable ConfigMaps/Secrets; with a fixed name a replacement is delete-before-replace;
- pulumi/pulumi step_generator.go calculateDependentReplacements: before a delete-before-replace
  the engine replaces every dependent whose *property dependencies* include the condemned
  resource, if its diff with those properties unknown is a replacement (a StatefulSet's `spec`
  unknown always is);
- a resource without a fixed name (RandomPassword, a TLS certificate) is replaced create-before-
  delete, which replaces nothing else: its dependents are updated with the new values.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import STACKS, Plan
from tests.unit.components.rabbitmq.helpers import (
    STATEFULSET,
    Registered,
    changed_mocks,
    component,
    get,
    put,
    record,
    urn_name,
    urn_type,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ANNOTATIONS = "spec.template.metadata.annotations"
REPLACED_WITH_A_FIXED_NAME = "kubernetes:"
"""Every Kubernetes object here has a fixed name: if one is replaced, it is delete-before-replace."""
NEVER_REPLACED = {"kubernetes:core/v1:Namespace"}
"""Kubernetes objects whose name is their only input that could replace them (never changed)."""


def _program(stack: str, changes: dict[str, dict[str, str]] | None = None) -> dict[tuple[str, str], Registered]:
    from plan.__main__ import run_program, stack_config

    factory = changed_mocks(changes) if changes else None
    return record(stack, run_program, stack_config(stack, []), factory)


def _changed(before: dict[tuple[str, str], Registered], after: dict[tuple[str, str], Registered]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for (_, name), r in before.items() if r != after[(_, name)]}


def _only_annotations_differ(old: Registered, new: Registered) -> set[str]:
    """The annotation keys that differ; asserts nothing else in the inputs does."""
    old_notes, new_notes = get(old.inputs, ANNOTATIONS), get(new.inputs, ANNOTATIONS)
    differ = {k for k in old_notes.keys() | new_notes.keys() if old_notes.get(k) != new_notes.get(k)}
    inputs = dict(new.inputs)
    put(inputs, ANNOTATIONS, old_notes)
    assert inputs == old.inputs, "only the pod template's checksum annotations may differ"
    return differ


def test_config_maps_and_secrets_update_in_place(options: dict[str, dict[tuple[str, str], Registered]]) -> None:
    """Without the provider's mutable options a data change replaces the object (delete first: fixed name)."""
    for stack in STACKS:
        [provider] = [r for (t, _), r in options[stack].items() if t == "pulumi:providers:kubernetes"]
        assert provider.inputs.get("enableConfigMapMutable") == "true", stack
        assert provider.inputs.get("enableSecretMutable") == "true", stack


@pytest.mark.parametrize("token", [STATEFULSET, DEPLOYMENT])
def test_no_pod_template_depends_on_an_object_that_can_be_replaced(
    token: str, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    """The cascade: a replaced ConfigMap/Secret/Service/StorageClass must not replace the brokers or
    the workers. Their names are plain strings; the objects are waited for through depends_on."""
    for stack in STACKS:
        workloads = [(n, r) for (t, n), r in options[stack].items() if t == token]
        assert workloads, f"{stack}: no {token}"
        for name, workload in workloads:  # the brokers; each lane's workers
            from_objects = {
                urn_name(urn)
                for urns in workload.property_dependencies.values()
                for urn in urns
                if urn_type(urn).startswith(REPLACED_WITH_A_FIXED_NAME) and urn_type(urn) not in NEVER_REPLACED
            }
            assert not from_objects, f"{stack}: {name}'s inputs come from {sorted(from_objects)}"
    statefulset = next(r for (t, _), r in options["prod"].items() if t == STATEFULSET)
    waits_for = {urn_name(u) for u in statefulset.dependencies}
    assert {"rabbitmq-config", "rabbitmq-default-user", "rabbitmq-erlang-cookie", "rabbitmq-tls"} <= waits_for


def test_a_role_password_rotation_rolls_the_brokers_and_the_workers_and_replaces_nothing() -> None:
    """`pulumi up --replace` of the worker user's RandomPassword: a new value, nothing else."""
    before = _program("dev")
    after = _program("dev", {"rabbitmq-worker-password": {"result": "mock-secret-rotated"}})
    # The Secret's data is masked in the records: it changes too, in place (mutable Secrets).
    workers = ("celery-deployment", "celery-long-deployment")  # every lane's workers log in as the worker user
    assert _changed(before, after) == {"rabbitmq-statefulset", *workers}
    for token, name in ((STATEFULSET, "rabbitmq-statefulset"), *((DEPLOYMENT, w) for w in workers)):
        differ = _only_annotations_differ(before[(token, name)], after[(token, name)])
        assert differ == {"ha-celery/credentials-sha256"}, name
    # The digest is of the value, never the value.
    notes = get(after[(STATEFULSET, "rabbitmq-statefulset")].inputs, ANNOTATIONS)
    assert "rotated" not in str(notes)


def test_a_node_certificate_renewal_rolls_the_brokers_only() -> None:
    before = component(tls=True)
    after = component(changed_mocks({"rabbitmq-1-cert": {"certPem": "mock-certificate-renewed"}}), tls=True)
    assert _changed(before, after) <= {"rabbitmq-statefulset", "rabbitmq-tls"}
    old, new = before[(STATEFULSET, "rabbitmq-statefulset")], after[(STATEFULSET, "rabbitmq-statefulset")]
    assert _only_annotations_differ(old, new) == {"ha-celery/tls-sha256"}


def test_a_ca_rotation_rolls_the_brokers_and_the_workers() -> None:
    before = _program("prod")
    after = _program("prod", {"rabbitmq-ca-cert": {"certPem": "mock-certificate-new-ca"}})
    workers = ("celery-deployment", "celery-long-deployment")
    assert {"rabbitmq-statefulset", *workers} <= _changed(before, after)
    for token, name in ((STATEFULSET, "rabbitmq-statefulset"), *((DEPLOYMENT, w) for w in workers)):
        assert _only_annotations_differ(before[(token, name)], after[(token, name)]) == {"ha-celery/tls-sha256"}


def test_unchanged_inputs_roll_nothing() -> None:
    """Checksums of the same values are the same: a second `up` with nothing changed rolls no pod."""
    assert not _changed(component(tls=True), component(tls=True))


def test_monitoring_objects_wait_for_the_brokers(options: dict[str, dict[tuple[str, str], Registered]]) -> None:
    """GMP's `Rules` webhook runs on the new node pool: Ready brokers show that pool runs pods."""
    for stack in STACKS:
        scrape_and_rules = [r for (t, _), r in options[stack].items() if t.startswith("kubernetes:monitoring.")]
        assert scrape_and_rules, stack
        for registered in scrape_and_rules:
            assert STATEFULSET in {urn_type(u) for u in registered.dependencies}, stack
            # An order, not a value: nothing here is replaced with the StatefulSet.
            from_values = {urn_type(u) for urns in registered.property_dependencies.values() for u in urns}
            assert STATEFULSET not in from_values, stack


def test_node_certificate_expiry_is_a_stack_output(plan: Plan) -> None:
    import pulumi
    from pulumi.runtime.settings import get_root_resource

    from plan.__main__ import run_program, stack_config

    exported: dict[str, Any] = {}

    def program() -> None:
        run_program()
        # The mocks' root Stack holds the program's exports (its outputs are never registered).
        outputs = getattr(get_root_resource(), "outputs", {})
        exported.update(outputs)
        if "broker_node_cert_not_after" in outputs:
            pulumi.Output.from_input(outputs["broker_node_cert_not_after"]).apply(exported.update)

    record(plan.stack, program, stack_config(plan.stack, []))
    if plan.stack != "prod":  # brokerTls: on in prod only
        assert "broker_node_cert_not_after" not in exported
        return
    replicas = int(plan.object("StatefulSet")["spec"]["replicas"])
    pods = {f"rabbitmq-{i}" for i in range(replicas)}
    assert {pod: exported[pod] for pod in pods} == dict.fromkeys(pods, "2027-12-07T00:00:00Z"), (
        "each node's LocallySignedCert validityEndTime (mocked)"
    )
