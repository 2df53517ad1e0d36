"""A changed ConfigMap or Secret reaches the running pods that mount it, as the kubelet does it."""

from __future__ import annotations

import copy
from pathlib import Path

from harness.kube.objects import ConfigMap, Plan, Secret, parse_statefulset
from harness.kube.volumes import VolumeStore, changed_sources
from tests.unit.harness.kube.conftest import STS


def _no_chown(path: Path, uid: int, gid: int) -> None:
    del path, uid, gid


def _spec() -> Plan:
    raw = copy.deepcopy(STS)
    raw["spec"]["template"]["spec"]["volumes"] = [
        {"name": "conf", "configMap": {"name": "cfg"}},
        {"name": "pw", "secret": {"secretName": "pw"}},
    ]
    return Plan(statefulsets=[parse_statefulset(raw)])


def test_a_changed_config_map_is_rewritten_in_place_and_a_sub_path_keeps_the_old_file(tmp_path: Path) -> None:
    spec = _spec().statefulsets[0].template.spec
    store = VolumeStore(tmp_path, chown=_no_chown)
    old = [ConfigMap("cfg", "ns", {"a.conf": "one", "gone.conf": "x"})]
    secrets = [Secret("pw", "ns", {"password": b"s3cret"})]
    paths = store.materialise(spec, "uid", secrets=secrets, configmaps=old)
    conf = paths["conf"]
    # What a subPath mount holds: the file's inode at mount time.
    with (conf / "a.conf").open("rb") as sub_path:
        new = [ConfigMap("cfg", "ns", {"a.conf": "two", "b.conf": "new"})]
        done = store.refresh_api_volumes(spec, "uid", {("configMap", "cfg")}, secrets=secrets, configmaps=new)
        assert done == ["conf"]
        assert sub_path.read() == b"one", "a subPath mount never sees an update"
    assert (conf / "a.conf").read_text() == "two", "a directory mount sees the new data"
    assert sorted(p.name for p in conf.iterdir()) == ["a.conf", "b.conf"]
    assert paths["conf"] == conf, "the same directory: the container's bind mount still points at it"
    assert (paths["pw"] / "password").read_bytes() == b"s3cret"


def test_only_volumes_of_changed_objects_are_touched(tmp_path: Path) -> None:
    spec = _spec().statefulsets[0].template.spec
    store = VolumeStore(tmp_path, chown=_no_chown)
    cms = [ConfigMap("cfg", "ns", {"a.conf": "one"})]
    secrets = [Secret("pw", "ns", {"password": b"a"})]
    store.materialise(spec, "uid", secrets=secrets, configmaps=cms)
    # A Secret named like the ConfigMap does not count: the kind is part of the name.
    assert store.refresh_api_volumes(spec, "uid", {("secret", "cfg")}, secrets=secrets, configmaps=cms) == []
    assert store.refresh_api_volumes(spec, "gone-pod", {("configMap", "cfg")}, secrets=secrets, configmaps=cms) == []


def test_changed_sources_names_created_deleted_and_changed_objects() -> None:
    before = Plan(
        configmaps=[ConfigMap("same", "ns", {"k": "v"}), ConfigMap("cfg", "ns", {"k": "v"})],
        secrets=[Secret("old", "ns", {"k": b"v"})],
    )
    after = Plan(
        configmaps=[ConfigMap("same", "ns", {"k": "v"}), ConfigMap("cfg", "ns", {"k": "w"})],
        secrets=[Secret("new", "ns", {"k": b"v"})],
    )
    assert changed_sources(before, after) == {("configMap", "cfg"), ("secret", "old"), ("secret", "new")}
