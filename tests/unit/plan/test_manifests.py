"""Every Kubernetes object of every stack is strictly valid, and no secret is in the plan."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from plan.mocks import MOCK_SECRET_PREFIX
from tests.conftest import Plan

NEWEST = "1.37.0"
# Custom resources have no schema in kubernetes-validate; their fields are asserted by the
# component tests instead.
CUSTOM_GROUPS = ("keda.sh/", "monitoring.googleapis.com/", "monitoring.coreos.com/")


def target_versions(plan: Plan) -> list[str]:
    stack_version = json.loads((plan.directory / "settings.json").read_text())["cluster"]["kubernetes_version"]
    return sorted({f"{stack_version}.0", NEWEST})


def test_every_object_is_strictly_valid(plan: Plan) -> None:
    manifests = plan.manifests()
    assert manifests, f"{plan.stack}: the plan has no Kubernetes objects"
    checked = 0
    for path in manifests:
        document = yaml.safe_load(path.read_text())
        if document["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        for version in target_versions(plan):
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{plan.stack}: {path.name} is invalid for Kubernetes {version}: {error.message}")
        checked += 1
    assert checked >= 10, f"{plan.stack}: only {checked} objects validated"


def test_validation_would_catch_a_bad_object() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "x"}, "spec": {"replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, NEWEST, strict=True)


def test_no_secret_value_anywhere_in_the_plan(plan: Plan) -> None:
    files = [p for p in plan.directory.rglob("*") if p.is_file()]
    assert len(files) > 2
    for path in files:
        text = path.read_text()
        assert MOCK_SECRET_PREFIX not in text, f"{plan.stack}: a generated secret is in plain text in {path.name}"


def test_secrets_are_masked_not_missing(plan: Plan) -> None:
    secrets = plan.objects("Secret")
    assert secrets, "the broker credentials must be Kubernetes Secrets"
    for secret in secrets:
        values = {**secret.get("stringData", {}), **secret.get("data", {})}
        assert values, f"{secret['metadata']['name']} carries no data"
        assert set(values.values()) == {"[secret]"}, f"{secret['metadata']['name']} has an unmasked value"
