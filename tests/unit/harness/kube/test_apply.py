"""Carrying out plan-diff's steps on the pod runner (harness.kube.apply), against a recording fake cluster."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.kube.apply import (
    Applier,
    ApplyError,
    Step,
    carry_secrets,
    find,
    load_steps,
    parse_steps,
)
from harness.kube.objects import ConfigMap, Plan, PodSpec, PodTemplate, Secret, StatefulSet, parse_statefulset
from harness.kube.rollout import PodView
from harness.kube.secretfill import Lookup
from harness.kube.volumes import changed_sources
from tests.unit.harness.kube.conftest import STS


def _sts(memory: str = "1Gi", *, retain: bool = False) -> StatefulSet:
    raw = copy.deepcopy(STS)
    raw["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": memory}}
    raw["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain" if retain else "Delete"}
    return parse_statefulset(raw)


def _generate(name: str, key: str, lookup: Lookup) -> str:
    del lookup
    return f"fresh-{name}-{key}"


@dataclass
class FakeCluster:
    """The API server only: every write recorded; a workload is rolled out the moment it is written."""

    plan: Plan
    writes: list[Plan] = field(default_factory=list)
    claims_deleted: list[str] = field(default_factory=list)
    pods: dict[str, tuple[str, PodSpec]] = field(default_factory=dict)

    @property
    def secret_generator(self) -> Any:
        return _generate

    def set_objects(self, plan: Plan) -> set[tuple[str, str]]:
        self.writes.append(plan)
        changed = changed_sources(self.plan, plan)
        self.plan = plan
        return changed

    def owner_views(self, owner: str, template: PodTemplate | None) -> list[PodView]:
        kind, name = owner.split("/")
        sts = next((s for s in self.plan.statefulsets if s.name == name), None) if kind == "StatefulSet" else None
        if sts is None:
            return []
        return [PodView(f"{name}-{i}", sts.template == template, ordinal=i) for i in range(sts.replicas)]

    def delete_claims(self, sts: StatefulSet) -> list[str]:
        self.claims_deleted.append(sts.name)
        return [f"data-{sts.name}-0"]

    def pod_specs(self) -> dict[str, tuple[str, PodSpec]]:
        return dict(self.pods)


def step(kind: str, name: str, what: str) -> Step:
    return Step(f"kubernetes:{kind}", name, what, (), f"{kind}/ns/{name}")


def test_steps_are_checked_naming_the_entry_and_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match=r"steps\[0\]: step 'upgrade' is not one of same, update"):
        parse_steps([{"type": "t", "name": "n", "step": "upgrade"}])
    with pytest.raises(ApplyError, match="needs type, name and step"):
        parse_steps([{"type": "t"}])
    with pytest.raises(ApplyError, match="not Kind/namespace/name"):
        parse_steps([{"type": "t", "name": "n", "step": "same", "object": "rabbitmq"}])
    with pytest.raises(ApplyError, match="make plan-diff"):
        load_steps(tmp_path / "missing.json")
    ok = parse_steps([{"type": "random:RandomPassword", "name": "pw", "step": "replace", "object": None}])
    assert ok == [Step("random:RandomPassword", "pw", "replace", (), None)]


def test_an_update_writes_the_new_object_and_waits_for_its_rollout() -> None:
    cluster = FakeCluster(Plan(statefulsets=[_sts()], configmaps=[ConfigMap("cfg", "ns", {"a": "1"})]))
    target = Plan(statefulsets=[_sts("2Gi")], configmaps=[ConfigMap("cfg", "ns", {"a": "2"})])
    applier = Applier(cluster, target, timeout=5)
    cm = applier.apply(step("ConfigMap", "cfg", "update"))
    assert find(cluster.plan, "ConfigMap", "cfg") == ConfigMap("cfg", "ns", {"a": "2"})
    assert [d.path for d in cm.differences] == ["mounted files"], "the kubelet's delay is reported"
    done = applier.apply(step("StatefulSet", "rabbitmq", "update"))
    assert find(cluster.plan, "StatefulSet", "rabbitmq") == _sts("2Gi")
    assert done.action == "StatefulSet/rabbitmq written and rolled out"
    assert len(cluster.writes) == 2


def test_a_delete_before_replace_deletes_the_claims_of_a_whendeleted_delete_statefulset() -> None:
    cluster = FakeCluster(Plan(statefulsets=[_sts()]))
    done = Applier(cluster, Plan(statefulsets=[_sts("2Gi")]), timeout=5).apply(
        step("StatefulSet", "rabbitmq", "delete-before-replace")
    )
    assert [w.statefulsets for w in cluster.writes] == [[], [_sts("2Gi")]], "deleted, then created"
    assert cluster.claims_deleted == ["rabbitmq"]
    assert "claims deleted (whenDeleted: Delete)" in done.action
    kept = FakeCluster(Plan(statefulsets=[_sts(retain=True)]))
    Applier(kept, Plan(statefulsets=[_sts("2Gi", retain=True)]), timeout=5).apply(
        step("StatefulSet", "rabbitmq", "replace")
    )
    assert kept.claims_deleted == []


def test_same_and_non_kubernetes_steps_write_nothing() -> None:
    cluster = FakeCluster(Plan(statefulsets=[_sts()]))
    applier = Applier(cluster, Plan(statefulsets=[_sts("2Gi")]), timeout=5)
    applier.apply(step("StatefulSet", "rabbitmq", "same"))
    applier.apply(Step("random:RandomPassword", "pw", "replace", (), None))
    assert cluster.writes == []
    with pytest.raises(ApplyError, match="not in the new plan"):
        applier.apply(step("ConfigMap", "nowhere", "create"))


def test_masked_values_are_kept_unless_the_secret_s_step_changes_it() -> None:
    running = Plan(secrets=[Secret("cookie", "ns", {"c": b"old"}), Secret("user", "ns", {"pw": b"old"})])
    masked = frozenset({"c"})
    new = Plan(
        secrets=[
            Secret("cookie", "ns", {"c": b"[secret]"}, masked),
            Secret("user", "ns", {"pw": b"[secret]"}, frozenset({"pw"})),
            Secret("added", "ns", {"k": b"[secret]"}, frozenset({"k"})),
        ]
    )
    filled = carry_secrets(new, running, [step("Secret", "user", "update")], _generate)
    assert {s.name: dict(s.data) for s in filled.secrets} == {
        "cookie": {"c": b"old"},
        "user": {"pw": b"fresh-user-pw"},
        "added": {"k": b"fresh-added-k"},
    }
    assert all(not s.masked for s in filled.secrets)


def test_a_pod_that_keeps_old_data_after_its_secret_changed_is_named_until_it_is_replaced() -> None:
    raw = copy.deepcopy(STS)
    raw["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "user", "key": "pw"}}}
    ]
    spec = parse_statefulset(raw).template.spec
    cluster = FakeCluster(Plan(secrets=[Secret("user", "ns", {"pw": b"old"})]), pods={"uid-0": ("rabbitmq-0", spec)})
    applier = Applier(cluster, Plan(secrets=[Secret("user", "ns", {"pw": b"new"})]), timeout=5)
    applier.apply(step("Secret", "user", "update"))
    assert applier.stale() == {"rabbitmq-0": ["container rabbitmq: env PASSWORD from secret user (read at start)"]}
    cluster.pods = {"uid-1": ("rabbitmq-0", spec)}  # rolled: a new incarnation reads the new value
    assert applier.stale() == {}
