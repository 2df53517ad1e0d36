"""Parsing into typed objects, with Kubernetes' defaults."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.kube.fields import UnsupportedFieldError
from harness.kube.objects import (
    InvalidObjectError,
    LabelSelector,
    Requirement,
    load_plan,
    parse_deployment,
    parse_pdb,
    parse_quantity,
    parse_secret,
    parse_statefulset,
)
from tests.unit.harness.kube.conftest import container, pod_spec


def test_probe_defaults_and_named_port(sts: dict[str, Any]) -> None:
    container(sts)["readinessProbe"] = {"tcpSocket": {"port": "amqp"}}
    container(sts)["livenessProbe"] = {"httpGet": {"port": 8080}, "periodSeconds": 30}
    container(sts)["startupProbe"] = {"exec": {"command": ["true"]}, "failureThreshold": 24}
    c = parse_statefulset(sts).template.spec.containers[0]
    assert c.readiness_probe is not None
    assert (c.readiness_probe.kind, c.readiness_probe.port) == ("tcpSocket", 5672)
    assert (c.readiness_probe.period_seconds, c.readiness_probe.timeout_seconds) == (10, 1)
    assert (c.readiness_probe.failure_threshold, c.readiness_probe.success_threshold) == (3, 1)
    assert c.readiness_probe.initial_delay_seconds == 0
    assert c.liveness_probe is not None
    assert (c.liveness_probe.path, c.liveness_probe.port, c.liveness_probe.period_seconds) == ("/", 8080, 30)
    assert c.startup_probe is not None
    assert (c.startup_probe.command, c.startup_probe.failure_threshold) == (("true",), 24)


def test_unknown_named_port_is_refused(sts: dict[str, Any]) -> None:
    container(sts)["readinessProbe"] = {"tcpSocket": {"port": "nope"}}
    with pytest.raises(UnsupportedFieldError, match=r"containers\[0\]\.readinessProbe\.tcpSocket\.port"):
        parse_statefulset(sts)


def test_unsupported_field_path_value_is_refused(sts: dict[str, Any]) -> None:
    container(sts)["env"] = [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]
    with pytest.raises(UnsupportedFieldError, match=r"env\[0\]\.valueFrom\.fieldRef\.fieldPath = 'status.phase'"):
        parse_statefulset(sts)


def test_pod_defaults(sts: dict[str, Any]) -> None:
    s = parse_statefulset(sts)
    spec = s.template.spec
    assert spec.termination_grace_period_seconds == 30
    assert spec.restart_policy == "Always"
    assert spec.enable_service_links is True
    assert s.ordinal_start == 0
    assert s.update_strategy == "RollingUpdate"
    assert s.retain_when_deleted
    assert [c.name for c in s.claims] == ["data"]


def test_statefulset_fields(sts: dict[str, Any]) -> None:
    sts["spec"]["ordinals"] = {"start": 1}
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    sts["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    pod_spec(sts)["terminationGracePeriodSeconds"] = 600
    pod_spec(sts)["securityContext"] = {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True}
    container(sts)["securityContext"] = {"runAsUser": 1000, "readOnlyRootFilesystem": True}
    container(sts)["lifecycle"] = {"preStop": {"exec": {"command": ["sh", "-c", "drain"]}}}
    s = parse_statefulset(sts)
    assert (s.ordinal_start, s.partition, s.retain_when_deleted, s.retain_when_scaled) == (1, 2, False, True)
    spec = s.template.spec
    assert spec.termination_grace_period_seconds == 600
    eff = spec.security_context.merged(spec.containers[0].security_context)
    assert (eff.run_as_user, eff.run_as_group, eff.fs_group, eff.run_as_non_root) == (1000, 999, 999, True)
    assert eff.read_only_root_filesystem
    assert spec.containers[0].pre_stop == ("sh", "-c", "drain")
    assert spec.containers[0].post_start is None


def test_volume_defaults(sts: dict[str, Any]) -> None:
    pod_spec(sts)["volumes"] = [
        {"name": "a", "secret": {"secretName": "s", "defaultMode": 256}},
        {"name": "b", "configMap": {"name": "c", "items": [{"key": "k", "path": "p", "mode": 384}]}},
        {"name": "c", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    vols = parse_statefulset(sts).template.spec.volumes
    assert vols[0].default_mode == 0o400
    assert vols[1].default_mode == 0o644
    assert vols[1].sources[0].items[0].mode == 0o600
    assert (vols[2].medium, vols[2].size_limit) == ("Memory", "64Mi")


def test_undeclared_volume_mount_is_invalid(sts: dict[str, Any]) -> None:
    container(sts)["volumeMounts"].append({"name": "ghost", "mountPath": "/x"})
    with pytest.raises(InvalidObjectError, match="ghost"):
        parse_statefulset(sts)


def test_selector_must_match_template(deploy: dict[str, Any]) -> None:
    deploy["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(InvalidObjectError, match="selector"):
        parse_deployment(deploy)


def test_deployment_strategy_defaults(deploy: dict[str, Any]) -> None:
    d = parse_deployment(deploy)
    assert (d.strategy, d.max_surge, d.max_unavailable) == ("RollingUpdate", "25%", "25%")


def test_selector_expressions() -> None:
    sel = LabelSelector(
        {"app": "x"},
        (
            Requirement("tier", "In", ("a", "b")),
            Requirement("gone", "DoesNotExist"),
            Requirement("env", "NotIn", ("prod",)),
            Requirement("app", "Exists"),
        ),
    )
    assert sel.matches({"app": "x", "tier": "a"})
    assert not sel.matches({"app": "x", "tier": "c"})
    assert not sel.matches({"app": "x", "tier": "a", "gone": "1"})
    assert not sel.matches({"app": "x", "tier": "a", "env": "prod"})
    assert LabelSelector().matches({"anything": "1"})


def test_secret_data_and_string_data_merge() -> None:
    s = parse_secret(
        {
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns"},
            "data": {"a": base64.b64encode(b"\x00bin").decode(), "b": base64.b64encode(b"old").decode()},
            "stringData": {"b": "new", "c": "[secret]"},
        }
    )
    assert s.data == {"a": b"\x00bin", "b": b"new", "c": b"[secret]"}
    assert s.masked == frozenset({"c"})


def test_pdb_needs_exactly_one_bound() -> None:
    with pytest.raises(InvalidObjectError):
        parse_pdb({"kind": "PodDisruptionBudget", "metadata": {"name": "p"}, "spec": {"selector": {}}})


@pytest.mark.parametrize(
    ("q", "v"), [("500m", 0.5), ("1", 1.0), ("1024Mi", 2**30), ("10Gi", 10 * 2**30), ("1G", 1e9), (2, 2.0)]
)
def test_quantity(q: str | int, v: float) -> None:
    assert parse_quantity(q) == v


def test_load_plan_reports_all_refusals_at_once(tmp_path: Path, sts: dict[str, Any], deploy: dict[str, Any]) -> None:
    (tmp_path / "kubernetes").mkdir()
    pod_spec(sts)["hostNetwork"] = True
    pod_spec(deploy)["hostPID"] = True
    (tmp_path / "kubernetes" / "a.yaml").write_text(yaml.safe_dump(sts))
    (tmp_path / "kubernetes" / "b.yaml").write_text(yaml.safe_dump(deploy))
    with pytest.raises(UnsupportedFieldError) as info:
        load_plan(tmp_path)
    assert [r.path for r in info.value.refusals] == ["spec.template.spec.hostNetwork", "spec.template.spec.hostPID"]


def test_load_plan_needs_objects(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_plan(tmp_path)
