"""Controller arithmetic: names, FQDNs, the kubelet's /etc/hosts, PDB eviction, rollout orders."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.kube.objects import LabelSelector, PodDisruptionBudget, parse_deployment, parse_statefulset
from harness.kube.workloads import (
    PodAddress,
    PodState,
    budget_status,
    deployment_pod_name,
    etc_hosts,
    eviction_allowed,
    pod_fqdn,
    rolling_bounds,
    scale_down_order,
    scaled_value,
    startup_batches,
    statefulset_pod_fqdn,
    statefulset_pod_names,
    template_hash,
    update_order,
)
from tests.unit.harness.kube.conftest import container

LABELS = {"app": "rabbitmq"}


def test_statefulset_names(sts: dict[str, Any]) -> None:
    s = parse_statefulset(sts)
    assert statefulset_pod_names(s) == ["rabbitmq-0", "rabbitmq-1", "rabbitmq-2"]
    assert statefulset_pod_fqdn(s, 1) == "rabbitmq-1.rabbitmq-nodes.ns.svc.cluster.local"
    sts["spec"]["ordinals"] = {"start": 5}
    assert statefulset_pod_names(parse_statefulset(sts)) == ["rabbitmq-5", "rabbitmq-6", "rabbitmq-7"]
    assert pod_fqdn("h", "sub", "ns", "example") == "h.sub.ns.svc.example"


def test_startup_and_update_orders(sts: dict[str, Any]) -> None:
    assert startup_batches(parse_statefulset(sts)) == [[0, 1, 2]]
    sts["spec"]["podManagementPolicy"] = "OrderedReady"
    s = parse_statefulset(sts)
    assert startup_batches(s) == [[0], [1], [2]]
    assert update_order(s) == [2, 1, 0]
    assert scale_down_order(s, [0, 1, 2, 3, 4]) == [4, 3]
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    assert update_order(parse_statefulset(sts)) == [2, 1]
    sts["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert update_order(parse_statefulset(sts)) == []


def test_deployment_pod_names(deploy: dict[str, Any]) -> None:
    d = parse_deployment(deploy)
    h = template_hash(d)
    assert h == template_hash(parse_deployment(deploy)), "deterministic"
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    name = deployment_pod_name(d, random.Random(0))
    assert name.startswith(f"worker-{h}-")
    assert len(name.rsplit("-", 1)[1]) == 5
    container(deploy)["command"] = ["celery", "beat"]
    assert template_hash(parse_deployment(deploy)) != h, "a template change is a new ReplicaSet"
    assert template_hash(d, collision_count=1) != h


@pytest.mark.parametrize(
    ("surge", "unavail", "replicas", "want"),
    [(1, 0, 3, (1, 0)), ("25%", "25%", 3, (1, 0)), (0, 0, 3, (0, 1)), ("50%", "50%", 5, (3, 2))],
)
def test_rolling_bounds(deploy: dict[str, Any], surge: Any, unavail: Any, replicas: int, want: tuple[int, int]) -> None:
    deploy["spec"]["replicas"] = replicas
    deploy["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail},
    }
    assert rolling_bounds(parse_deployment(deploy)) == want


def test_rolling_bounds_recreate(deploy: dict[str, Any]) -> None:
    deploy["spec"]["strategy"] = {"type": "Recreate"}
    assert rolling_bounds(parse_deployment(deploy)) == (0, 3)


def test_etc_hosts_is_the_kubelets_own_file() -> None:
    broker = PodAddress("rabbitmq-0", "ha-celery", "10.0.0.1", "rabbitmq-0", "rabbitmq-nodes")
    lines = etc_hosts(broker).splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in lines
    assert lines[-1] == "10.0.0.1\trabbitmq-0.rabbitmq-nodes.ha-celery.svc.cluster.local\trabbitmq-0"
    worker = PodAddress("celery-worker-abc-xyz12", "ha-celery", "10.0.1.1")
    assert etc_hosts(worker).splitlines()[-1] == "10.0.1.1\tcelery-worker-abc-xyz12"


def pdb(max_unavailable: int | str | None = None, min_available: int | str | None = None) -> PodDisruptionBudget:
    return PodDisruptionBudget("rabbitmq", "ns", LabelSelector(LABELS), max_unavailable, min_available)


def states(ready: list[bool]) -> list[PodState]:
    return [PodState(f"rabbitmq-{i}", LABELS, ready=r) for i, r in enumerate(ready)]


def test_pdb_max_unavailable_one() -> None:
    assert eviction_allowed(pdb(1), states([True, True, True]), "rabbitmq-0")[0]
    ok, why = eviction_allowed(pdb(1), states([True, False, True]), "rabbitmq-0")
    assert not ok
    assert "disruption budget" in why
    # The unready pod itself may go: the budget (2 healthy of 2 needed) is met without it.
    assert eviction_allowed(pdb(1), states([True, False, True]), "rabbitmq-1")[0]


def test_pdb_unready_blocked_when_budget_broken() -> None:
    ok, _ = eviction_allowed(pdb(1), states([True, False, False]), "rabbitmq-1")
    assert not ok
    always = PodDisruptionBudget("p", "ns", LabelSelector(LABELS), 1, None, always_allow_unhealthy=True)
    assert eviction_allowed(always, states([True, False, False]), "rabbitmq-1")[0]


def test_pdb_min_available_and_percent() -> None:
    assert budget_status(pdb(min_available=2), states([True, True, True])).disruptions_allowed == 1
    assert budget_status(pdb(min_available="50%"), states([True, True, True])).desired_healthy == 2
    assert budget_status(pdb("34%"), states([True, True, True])).desired_healthy == 1
    # expected from the controller: a missing pod counts against the budget.
    assert budget_status(pdb(1), states([True, True]), expected=3).disruptions_allowed == 0


def test_pdb_non_running_and_uncovered_pods() -> None:
    pods_ = [
        *states([True, False, True]),
        PodState("pending", LABELS, running=False, ready=False),
        PodState("other", {"app": "x"}),
    ]
    assert eviction_allowed(pdb(1), pods_, "pending")[0]
    assert eviction_allowed(pdb(1), pods_, "other")[0]
    assert not eviction_allowed(pdb(1), pods_, "ghost")[0]


@pytest.mark.parametrize(
    ("v", "total", "up", "want"), [(1, 3, True, 1), ("25%", 3, True, 1), ("25%", 3, False, 0), ("100%", 3, False, 3)]
)
def test_scaled_value(v: int | str, total: int, up: bool, want: int) -> None:
    assert scaled_value(v, total, round_up=up) == want


def test_a_pod_is_told_from_another_lanes_by_its_whole_name() -> None:
    from harness.kube.workloads import named_for

    assert named_for("Deployment/celery-worker", "celery-worker-5ff944c867-rlnx6")
    assert not named_for("Deployment/celery-worker", "celery-worker-long-5c4b488499-dkph2")
    assert named_for("Deployment/celery-worker-long", "celery-worker-long-5c4b488499-dkph2")
    assert named_for("StatefulSet/rabbitmq", "rabbitmq-2")
    assert not named_for("StatefulSet/rabbitmq", "rabbitmq-nodes-2")
