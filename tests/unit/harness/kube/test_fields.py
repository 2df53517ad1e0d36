"""The implemented / delta / refused tables: every supported family, and refusals naming the exact path."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.kube.fields import TABLES, Status, UnsupportedFieldError, audit, check, leaves
from harness.kube.objects import Plan, add_object
from tests.unit.harness.kube.conftest import container, pod_spec

P = "spec.template.spec"


def refused_paths(obj: dict[str, Any]) -> list[str]:
    return [r.path for r in audit(obj)[1]]


def delta_paths(obj: dict[str, Any]) -> list[str]:
    return [d.path for d in audit(obj)[0]]


def test_minimal_statefulset_is_clean_except_image_and_claim(sts: dict[str, Any]) -> None:
    assert refused_paths(sts) == []
    assert set(delta_paths(sts)) == {
        f"{P}.containers[0].image",
        "spec.volumeClaimTemplates[0].spec.accessModes[0]",
        "spec.volumeClaimTemplates[0].spec.resources.requests.storage",
    }


def test_supported_container_fields_are_implemented(sts: dict[str, Any]) -> None:
    c = container(sts)
    c.update(
        {
            "command": ["sh"],
            "args": ["-c", "$(X)"],
            "workingDir": "/",
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}},
                {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            ],
            "envFrom": [
                {"prefix": "P_", "configMapRef": {"name": "c", "optional": False}},
                {"secretRef": {"name": "s"}},
            ],
            "lifecycle": {"postStart": {"exec": {"command": ["true"]}}, "preStop": {"exec": {"command": ["true"]}}},
            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": "amqp"}, "initialDelaySeconds": 10, "successThreshold": 1},
            "livenessProbe": {
                "httpGet": {
                    "path": "/h",
                    "port": 15672,
                    "scheme": "HTTP",
                    "httpHeaders": [{"name": "a", "value": "b"}],
                },
                "timeoutSeconds": 3,
                "failureThreshold": 2,
            },
            "securityContext": {"runAsUser": 1, "runAsGroup": 1, "runAsNonRoot": True, "readOnlyRootFilesystem": False},
        }
    )
    c["volumeMounts"][0].update({"readOnly": False, "subPath": "x"})
    pod_spec(sts).update(
        {
            "securityContext": {"runAsUser": 1, "runAsGroup": 1, "runAsNonRoot": True, "fsGroup": 1},
            "terminationGracePeriodSeconds": 60,
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "nodeSelector": {"zone": "a"},
        }
    )
    assert refused_paths(sts) == []
    assert delta_paths(sts) == [f"{P}.containers[0].image", *delta_paths_of_claims()]


def delta_paths_of_claims() -> list[str]:
    return [
        "spec.volumeClaimTemplates[0].spec.accessModes[0]",
        "spec.volumeClaimTemplates[0].spec.resources.requests.storage",
    ]


@pytest.mark.parametrize(
    ("volume", "deltas"),
    [
        ({"emptyDir": {}}, []),
        ({"emptyDir": {"medium": ""}}, []),
        ({"emptyDir": {"medium": "Memory"}}, []),
        ({"emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}, ["emptyDir.sizeLimit"]),
        ({"configMap": {"name": "c", "items": [{"key": "k", "path": "p", "mode": 256}], "defaultMode": 420}}, []),
        ({"secret": {"secretName": "s", "defaultMode": 256, "optional": True}}, []),
        (
            {
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"configMap": {"name": "c", "items": [{"key": "k", "path": "a"}]}},
                        {"secret": {"name": "s", "items": [{"key": "k", "path": "b", "mode": 256}], "optional": True}},
                    ],
                }
            },
            [],
        ),
    ],
)
def test_volume_kinds(sts: dict[str, Any], volume: dict[str, Any], deltas: list[str]) -> None:
    pod_spec(sts)["volumes"] = [{"name": "v", **volume}]
    assert refused_paths(sts) == []
    got = [p.removeprefix(f"{P}.volumes[0].") for p in delta_paths(sts) if ".volumes[" in p]
    assert got == deltas


def test_scheduling_fields_are_implemented(sts: dict[str, Any]) -> None:
    sel = {"matchLabels": {"app": "rabbitmq"}, "matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}
    term = {"labelSelector": sel, "topologyKey": "kubernetes.io/hostname"}
    pod_spec(sts)["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}],
        }
    }
    pod_spec(sts)["topologySpreadConstraints"] = [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": w, "labelSelector": sel}
        for w in ("DoNotSchedule", "ScheduleAnyway")
    ]
    assert refused_paths(sts) == []


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda s: container(s).update({"lifecycle": {"postStart": {"httpGet": {"port": 80}}}}),
            f"{P}.containers[0].lifecycle.postStart.httpGet.port",
        ),
        (
            lambda s: pod_spec(s)["volumes"].append({"name": "h", "hostPath": {"path": "/etc"}}),
            f"{P}.volumes[0].hostPath.path",
        ),
        (
            lambda s: pod_spec(s).update(
                {"initContainers": [{"name": "side", "image": "x", "restartPolicy": "Always"}]}
            ),
            f"{P}.initContainers[0].restartPolicy",
        ),
        (
            lambda s: pod_spec(s).update({"initContainers": [{"name": "i", "image": "x", "readinessProbe": {}}]}),
            f"{P}.initContainers[0].readinessProbe",
        ),
        (
            lambda s: container(s).update({"readinessProbe": {"grpc": {"port": 1}}}),
            f"{P}.containers[0].readinessProbe.grpc.port",
        ),
        (lambda s: container(s)["ports"][0].update({"protocol": "UDP"}), f"{P}.containers[0].ports[0].protocol"),
        (lambda s: container(s)["ports"][0].update({"hostPort": 5672}), f"{P}.containers[0].ports[0].hostPort"),
        (lambda s: pod_spec(s).update({"hostNetwork": True}), f"{P}.hostNetwork"),
        (
            lambda s: pod_spec(s).update({"volumes": [{"name": "t", "emptyDir": {"medium": "HugePages"}}]}),
            f"{P}.volumes[0].emptyDir.medium",
        ),
        (
            lambda s: container(s).update({"securityContext": {"privileged": True}}),
            f"{P}.containers[0].securityContext.privileged",
        ),
        (
            lambda s: container(s).update({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
            f"{P}.containers[0].securityContext.capabilities.add[0]",
        ),
        (
            lambda s: container(s).update(
                {"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]}
            ),
            f"{P}.containers[0].env[0].valueFrom.resourceFieldRef.resource",
        ),
        (lambda s: s["spec"].update({"updateStrategy": {"type": "Bogus"}}), "spec.updateStrategy.type"),
        (lambda s: pod_spec(s).update({"affinity": {"nodeAffinity": {"x": 1}}}), f"{P}.affinity.nodeAffinity.x"),
        (lambda s: pod_spec(s).update({"restartPolicy": "Sometimes"}), f"{P}.restartPolicy"),
    ],
)
def test_refusals_name_the_exact_path(sts: dict[str, Any], mutate: Any, path: str) -> None:
    mutate(sts)
    assert path in refused_paths(sts)
    with pytest.raises(UnsupportedFieldError, match=re.escape(f"unsupported: StatefulSet/ns/rabbitmq: {path} = ")):
        check(sts)


def test_refused_field_makes_add_object_raise(sts: dict[str, Any]) -> None:
    container(sts)["lifecycle"] = {"postStart": {"httpGet": {"port": 80, "path": "/"}}}
    with pytest.raises(UnsupportedFieldError) as info:
        add_object(Plan(), sts)
    assert [r.path for r in info.value.refusals] == [
        f"{P}.containers[0].lifecycle.postStart.httpGet.port",
        f"{P}.containers[0].lifecycle.postStart.httpGet.path",
    ]


def test_unknown_kind_is_refused() -> None:
    _, refused = audit({"kind": "DaemonSet", "metadata": {"name": "x"}})
    assert [(r.path, r.value) for r in refused] == [("kind", "'DaemonSet'")]


def test_value_limited_rules_pick_delta_by_value(deploy: dict[str, Any]) -> None:
    container(deploy)["securityContext"] = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    pod_spec(deploy)["automountServiceAccountToken"] = True
    pod_spec(deploy)["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    paths = delta_paths(deploy)
    # The runtime applies these as containerd does (harness/kube/security.py), so they are no delta.
    assert f"{P}.containers[0].securityContext.readOnlyRootFilesystem" not in paths
    assert f"{P}.containers[0].securityContext.allowPrivilegeEscalation" not in paths
    assert f"{P}.automountServiceAccountToken" in paths
    # The local filter is a denylist, not the runtime's allowlist: reported.
    assert f"{P}.securityContext.seccompProfile.type" in paths
    pod_spec(deploy)["securityContext"] = {"seccompProfile": {"type": "Unconfined"}}
    assert f"{P}.securityContext.seccompProfile.type" not in delta_paths(deploy)
    pod_spec(deploy)["securityContext"] = {"seccompProfile": {"type": "Localhost"}}
    assert f"{P}.securityContext.seccompProfile.type" in refused_paths(deploy)


def test_bool_and_int_do_not_match_each_other(deploy: dict[str, Any]) -> None:
    pod_spec(deploy)["automountServiceAccountToken"] = 0
    assert f"{P}.automountServiceAccountToken" in refused_paths(deploy)


def test_free_form_maps_and_subtrees_collapse_to_one_leaf() -> None:
    obj = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "n", "namespace": "ns", "labels": {"a.b/c": "d"}},
        "spec": {"scaleTargetRef": {"name": "w"}, "metrics": [{"type": "Resource"}]},
    }
    paths = [leaf.path for leaf in leaves(obj)]
    assert paths == ["apiVersion", "kind", "metadata.name", "metadata.namespace", "metadata.labels.*", "spec.*"]
    deltas, refused = audit(obj)
    assert refused == []
    assert [d.path for d in deltas] == ["spec.*"]


def test_every_delta_rule_has_a_reason() -> None:
    for kind, rules in TABLES.items():
        for r in rules:
            if r.status is Status.DELTA:
                assert r.local, (kind, r.pattern)
                assert r.why, (kind, r.pattern)


def test_deployment_strategy_and_service_fields(deploy: dict[str, Any]) -> None:
    deploy["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}
    deploy["spec"]["minReadySeconds"] = 5
    assert refused_paths(deploy) == []
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"a": "b"},
            "ports": [{"name": "x", "port": 1, "targetPort": 1, "protocol": "TCP", "appProtocol": "amqp"}],
        },
    }
    assert refused_paths(svc) == []
    svc["spec"]["type"] = "LoadBalancer"
    assert refused_paths(svc) == ["spec.type"]
