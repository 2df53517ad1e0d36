"""The controllers' rollout decisions (harness.kube.rollout), driven sync by sync over a simulated set of pods."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from harness.kube.objects import Deployment, StatefulSet, parse_deployment, parse_statefulset
from harness.kube.rollout import (
    PodView,
    deployment_rolled_out,
    deployment_sync,
    stale_uses,
    statefulset_rolled_out,
    statefulset_sync,
)
from tests.unit.harness.kube.conftest import DEPLOY, STS


def make_sts(**spec: Any) -> StatefulSet:
    raw = copy.deepcopy(STS)
    raw["spec"].update(spec)
    return parse_statefulset(raw)


def make_deploy(**spec: Any) -> Deployment:
    raw = copy.deepcopy(DEPLOY)
    raw["spec"].update(spec)
    return parse_deployment(raw)


def sts_pods(n: int, *, updated: bool = False) -> list[PodView]:
    return [PodView(f"rabbitmq-{i}", updated, ordinal=i) for i in range(n)]


@dataclass
class StsWorld:
    """A StatefulSet's pods as the controller and the kubelets move them, one sync at a time: a
    deleted pod terminates (one sync), is gone, is recreated at the update revision, then becomes Ready."""

    sts: StatefulSet
    pods: dict[int, PodView]
    deleted: list[str]
    min_healthy: int

    def sync(self) -> None:
        # The kubelets first: terminating pods go, new pods become Ready.
        for ordinal, pod in list(self.pods.items()):
            if pod.terminating:
                del self.pods[ordinal]
            elif not pod.ready:
                self.pods[ordinal] = replace(pod, ready=True)
        actions = statefulset_sync(self.sts, list(self.pods.values()))
        for ordinal in actions.create_ordinals:
            self.pods[ordinal] = PodView(f"rabbitmq-{ordinal}", True, ready=False, ordinal=ordinal)
        for name in actions.delete:
            ordinal = int(name.rsplit("-", 1)[1])
            self.pods[ordinal] = replace(self.pods[ordinal], terminating=True)
            self.deleted.append(name)
        healthy = sum(1 for p in self.pods.values() if p.healthy and p.ordinal is not None and p.ordinal < 3)
        self.min_healthy = min(self.min_healthy, healthy)

    def run(self, syncs: int = 40) -> None:
        for _ in range(syncs):
            self.sync()
            if statefulset_rolled_out(self.sts, list(self.pods.values())):
                return
        raise AssertionError(f"not rolled out after {syncs} syncs: {self.pods}")


def test_a_template_change_rolls_one_pod_at_a_time_highest_ordinal_first() -> None:
    world = StsWorld(make_sts(), {p.ordinal or 0: p for p in sts_pods(3)}, [], 3)
    world.run()
    assert world.deleted == ["rabbitmq-2", "rabbitmq-1", "rabbitmq-0"]
    assert world.min_healthy == 2, "one pod at a time: never fewer than replicas - 1 Ready"
    assert all(p.updated and p.healthy for p in world.pods.values())


def test_the_next_pod_waits_until_the_recreated_one_is_ready() -> None:
    sts = make_sts()
    pods = [*sts_pods(2), PodView("rabbitmq-2", True, ready=False, ordinal=2)]
    actions = statefulset_sync(sts, pods)
    assert actions.delete == ()
    assert "rabbitmq-2" in actions.why
    ready = [*sts_pods(2), PodView("rabbitmq-2", True, ordinal=2)]
    assert statefulset_sync(sts, ready).delete == ("rabbitmq-1",)


def test_a_terminating_pod_is_not_deleted_twice_and_holds_the_rollout() -> None:
    pods = [*sts_pods(2), PodView("rabbitmq-2", False, terminating=True, ordinal=2)]
    assert statefulset_sync(make_sts(), pods).delete == ()


def test_partition_keeps_lower_ordinals_and_on_delete_changes_nothing() -> None:
    world = StsWorld(make_sts(updateStrategy={"rollingUpdate": {"partition": 1}}), {}, [], 3)
    world.pods = {p.ordinal or 0: p for p in sts_pods(3)}
    world.run()
    assert world.deleted == ["rabbitmq-2", "rabbitmq-1"]
    on_delete = make_sts(updateStrategy={"type": "OnDelete"})
    assert statefulset_sync(on_delete, sts_pods(3)).delete == ()
    assert statefulset_rolled_out(on_delete, sts_pods(3))


def test_scale_up_creates_the_new_ordinals_at_the_update_revision() -> None:
    five = make_sts(replicas=5)
    assert statefulset_sync(five, sts_pods(3, updated=True)).create_ordinals == (3, 4)
    ordered = make_sts(replicas=5, podManagementPolicy="OrderedReady")
    assert statefulset_sync(ordered, sts_pods(3, updated=True)).create_ordinals == (3,)
    waiting = [*sts_pods(3, updated=True), PodView("rabbitmq-3", True, ready=False, ordinal=3)]
    assert statefulset_sync(ordered, waiting).create_ordinals == ()


def test_scale_down_deletes_condemned_ordinals_parallel_at_once_ordered_highest_first() -> None:
    pods = sts_pods(5, updated=True)
    assert statefulset_sync(make_sts(), pods).delete == ("rabbitmq-4", "rabbitmq-3")
    assert statefulset_sync(make_sts(podManagementPolicy="OrderedReady"), pods).delete == ("rabbitmq-4",)
    assert not statefulset_rolled_out(make_sts(), pods)


def test_held_ordinals_are_not_recreated() -> None:
    assert statefulset_sync(make_sts(), sts_pods(2, updated=True), frozenset({2})).create_ordinals == ()


@dataclass
class DeployWorld:
    deploy: Deployment
    pods: dict[str, PodView]
    created: int = 0
    min_available: int = 99
    max_pods: int = 0
    order: list[str] = field(default_factory=list)

    def sync(self) -> None:
        for name, pod in list(self.pods.items()):
            if pod.terminating:
                del self.pods[name]
            elif not pod.ready:
                self.pods[name] = replace(pod, ready=True)
        actions = deployment_sync(self.deploy, list(self.pods.values()))
        for _ in range(actions.create):
            self.created += 1
            self.pods[f"new-{self.created}"] = PodView(f"new-{self.created}", True, ready=False)
        for name in actions.delete:
            self.pods[name] = replace(self.pods[name], terminating=True)
            self.order.append(name)
        live = [p for p in self.pods.values() if not p.terminating]
        self.min_available = min(self.min_available, sum(1 for p in live if p.ready))
        self.max_pods = max(self.max_pods, len(live))

    def run(self, syncs: int = 40) -> None:
        for _ in range(syncs):
            self.sync()
            if deployment_rolled_out(self.deploy, list(self.pods.values())):
                return
        raise AssertionError(f"not rolled out after {syncs} syncs: {self.pods}")


def old_pods(n: int) -> dict[str, PodView]:
    return {f"old-{i}": PodView(f"old-{i}", False) for i in range(n)}


def test_surge_one_unavailable_zero_keeps_every_replica_available() -> None:
    # The plan's worker Deployment: maxSurge 1, maxUnavailable 0.
    world = DeployWorld(make_deploy(strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}), old_pods(3))
    world.run()
    assert (world.min_available, world.max_pods, world.created) == (3, 4, 3)
    assert world.order == ["old-0", "old-1", "old-2"]


def test_default_bounds_round_surge_up_and_unavailable_down() -> None:
    # 25 % of 3: surge 1, unavailable 0.
    world = DeployWorld(make_deploy(), old_pods(3))
    world.run()
    assert (world.min_available, world.max_pods) == (3, 4)


def test_unavailable_one_deletes_before_the_new_pod_is_ready() -> None:
    deploy = make_deploy(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    first = deployment_sync(deploy, list(old_pods(3).values()))
    assert (first.create, first.delete) == (0, ("old-0",))
    world = DeployWorld(deploy, old_pods(3))
    world.run()
    assert (world.min_available, world.max_pods) == (2, 3)


def test_unhealthy_old_pods_go_first() -> None:
    deploy = make_deploy(strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})
    pods = [*old_pods(3).values(), PodView("new-1", True)]
    pods[2] = PodView("old-2", False, ready=False)
    assert deployment_sync(deploy, pods).delete[0] == "old-2"


def test_recreate_deletes_every_old_pod_before_creating() -> None:
    deploy = make_deploy(strategy={"type": "Recreate"})
    assert deployment_sync(deploy, list(old_pods(3).values())).delete == ("old-0", "old-1", "old-2")
    terminating = [PodView("old-0", False, terminating=True)]
    assert deployment_sync(deploy, terminating).create == 0
    assert deployment_sync(deploy, []).create == 3


@pytest.mark.parametrize(("have", "want", "create", "delete"), [(1, 3, 2, 0), (3, 3, 0, 0), (4, 2, 0, 2)])
def test_steady_state_scales_to_the_wanted_count(have: int, want: int, create: int, delete: int) -> None:
    pods = [PodView(f"p-{i}", True) for i in range(have)]
    actions = deployment_sync(make_deploy(), pods, want)
    assert (actions.create, len(actions.delete)) == (create, delete)
    unscheduled = [PodView("a", True), PodView("b", True, ready=False, scheduled=False)]
    assert deployment_sync(make_deploy(), unscheduled, 1).delete == ("b",)


def test_a_scale_in_deletes_the_newest_ready_pod_as_the_replicaset_controller_does() -> None:
    """``ActivePodsWithRanks.Less``: not Ready before Ready, then the newer first (the name decides nothing)."""
    pods = [PodView("z-old", True, created=1.0), PodView("a-new", True, created=9.0), PodView("m", True, created=5.0)]
    assert deployment_sync(make_deploy(), pods, 2).delete == ("a-new",)
    assert deployment_sync(make_deploy(), pods, 1).delete == ("a-new", "m")
    starting = [*pods, PodView("b", True, ready=False, created=0.5)]
    assert deployment_sync(make_deploy(), starting, 3).delete == ("b",), "a pod not Ready goes before any Ready one"


def test_stale_uses_env_init_copies_and_sub_paths_but_not_mounted_directories() -> None:
    raw = copy.deepcopy(STS)
    spec = raw["spec"]["template"]["spec"]
    spec["volumes"] = [
        {"name": "src", "configMap": {"name": "cfg"}},
        {"name": "live", "configMap": {"name": "cfg"}},
        {"name": "one", "secret": {"secretName": "pw"}},
    ]
    spec["initContainers"] = [
        {"name": "setup", "image": "rabbitmq:4.3", "volumeMounts": [{"name": "src", "mountPath": "/src"}]}
    ]
    main = spec["containers"][0]
    main["volumeMounts"] += [
        {"name": "live", "mountPath": "/etc/live"},
        {"name": "one", "mountPath": "/etc/pw", "subPath": "pw"},
    ]
    main["envFrom"] = [{"secretRef": {"name": "pw"}}]
    parsed = parse_statefulset(raw).template.spec
    assert stale_uses(parsed, {("configMap", "cfg")}) == [
        "volume src (configMap cfg): mounted by init containers only (copied at start)"
    ]
    assert stale_uses(parsed, {("secret", "pw")}) == [
        "container rabbitmq: envFrom secret pw (read at start)",
        "container rabbitmq: subPath mount of volume one (secret pw) never updates",
    ]
    assert stale_uses(parsed, {("configMap", "other")}) == []
