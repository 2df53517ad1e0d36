"""Volume materialisation: files, modes, fsGroup (through a recording chown), claims and mounts."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from harness.kube.objects import ConfigMap, Secret, parse_statefulset
from harness.kube.volumes import VolumeError, VolumeStore, apply_fs_group, container_mounts
from tests.unit.harness.kube.conftest import container, pod_spec


class Recorder:
    """A chown that records instead of changing ownership, so tests need no root."""

    def __init__(self) -> None:
        self.calls: dict[Path, tuple[int, int]] = {}

    def __call__(self, path: Path, uid: int, gid: int) -> None:
        old_uid, old_gid = self.calls.get(path, (-1, -1))
        self.calls[path] = (uid if uid != -1 else old_uid, gid if gid != -1 else old_gid)


SECRETS = [
    Secret("cookie", "ns", {".erlang.cookie": b"COOKIE"}),
    Secret("user", "ns", {"default_user.conf": b"default_user = celery\n", "password": b"pw"}),
]
CMS = [ConfigMap("cfg", "ns", {"20-ha-celery.conf": "x = 1\n", "enabled_plugins": "[a].\n", "definitions.json": "{}"})]


@pytest.fixture
def rabbit(sts: dict[str, Any]) -> dict[str, Any]:
    """The plan's broker pod shape: emptyDir home, secret cookie, projected conf.d, configMap files."""
    pod_spec(sts)["securityContext"] = {"fsGroup": 999, "runAsUser": 999}
    pod_spec(sts)["volumes"] = [
        {"name": "home", "emptyDir": {}},
        {"name": "cookie", "secret": {"secretName": "cookie", "defaultMode": 256}},
        {
            "name": "confd",
            "projected": {
                "sources": [
                    {
                        "configMap": {
                            "name": "cfg",
                            "items": [{"key": "20-ha-celery.conf", "path": "20-ha-celery.conf"}],
                        }
                    },
                    {
                        "secret": {
                            "name": "user",
                            "items": [{"key": "default_user.conf", "path": "30-default-user.conf"}],
                        }
                    },
                ]
            },
        },
        {
            "name": "files",
            "configMap": {"name": "cfg", "items": [{"key": "enabled_plugins", "path": "enabled_plugins"}]},
        },
    ]
    container(sts)["volumeMounts"] = [
        {"name": "data", "mountPath": "/var/lib/rabbitmq/mnesia"},
        {"name": "home", "mountPath": "/var/lib/rabbitmq"},
        {"name": "confd", "mountPath": "/etc/rabbitmq/conf.d"},
        {"name": "files", "mountPath": "/etc/ha-celery", "readOnly": False},
        {"name": "cookie", "mountPath": "/tmp/cookie"},
    ]
    return sts


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode) | (p.lstat().st_mode & stat.S_ISGID)


def test_materialise_the_broker_pod(tmp_path: Path, rabbit: dict[str, Any]) -> None:
    sts = parse_statefulset(rabbit)
    rec = Recorder()
    store = VolumeStore(tmp_path, chown=rec)
    claims = store.claims_for(sts, 0)
    paths = store.materialise(sts.template.spec, "uid-1", secrets=SECRETS, configmaps=CMS, claims=claims)
    assert (paths["cookie"] / ".erlang.cookie").read_bytes() == b"COOKIE"
    # defaultMode 256 (0o400) plus fsGroup's group read: what kubelet leaves on the node.
    assert _mode(paths["cookie"] / ".erlang.cookie") == 0o440
    assert rec.calls[paths["cookie"] / ".erlang.cookie"] == (0, 999)
    assert sorted(p.name for p in paths["confd"].iterdir()) == ["20-ha-celery.conf", "30-default-user.conf"]
    assert _mode(paths["confd"] / "20-ha-celery.conf") == 0o644
    assert sorted(p.name for p in paths["files"].iterdir()) == ["enabled_plugins"]
    # emptyDir and claim: group-owned by fsGroup, setgid, group rwx.
    assert _mode(paths["home"]) == 0o777 | stat.S_ISGID
    assert rec.calls[paths["home"]] == (0, 999)
    assert _mode(paths["data"]) == 0o775 | stat.S_ISGID
    assert paths["data"] == tmp_path / "claims" / "data-rabbitmq-0"
    assert (paths["data"] / "lost+found").is_dir()


def test_mounts_sorted_and_api_volumes_read_only(tmp_path: Path, rabbit: dict[str, Any]) -> None:
    sts = parse_statefulset(rabbit)
    store = VolumeStore(tmp_path, chown=Recorder())
    paths = store.materialise(
        sts.template.spec, "uid-1", secrets=SECRETS, configmaps=CMS, claims=store.claims_for(sts, 2)
    )
    mounts = container_mounts(sts.template.spec.containers[0], sts.template.spec, paths)
    order = [m.container_path for m in mounts]
    assert order.index("/var/lib/rabbitmq") < order.index("/var/lib/rabbitmq/mnesia")
    ro = {m.container_path: m.read_only for m in mounts}
    assert ro == {
        "/var/lib/rabbitmq": False,
        "/var/lib/rabbitmq/mnesia": False,
        "/etc/rabbitmq/conf.d": True,
        "/etc/ha-celery": True,
        "/tmp/cookie": True,
    }


def test_empty_dir_is_per_incarnation_and_claim_survives(tmp_path: Path, rabbit: dict[str, Any]) -> None:
    sts = parse_statefulset(rabbit)
    store = VolumeStore(tmp_path, chown=Recorder())
    first = store.materialise(
        sts.template.spec, "uid-1", secrets=SECRETS, configmaps=CMS, claims=store.claims_for(sts, 0)
    )
    (first["home"] / "scratch").write_text("x")
    (first["data"] / "queue").write_text("durable")
    again = store.materialise(
        sts.template.spec, "uid-1", secrets=SECRETS, configmaps=CMS, claims=store.claims_for(sts, 0)
    )
    assert (again["home"] / "scratch").exists(), "a container restart keeps the emptyDir"
    store.remove_pod("uid-1")
    second = store.materialise(
        sts.template.spec, "uid-2", secrets=SECRETS, configmaps=CMS, claims=store.claims_for(sts, 0)
    )
    assert not (second["home"] / "scratch").exists()
    assert (second["data"] / "queue").read_text() == "durable"
    assert store.wipe_claim("rabbitmq", "data", 0)
    assert not store.wipe_claim("rabbitmq", "data", 0)
    third = store.claims_for(sts, 0)
    assert not (third["data"] / "queue").exists()


def test_missing_secret_and_key(tmp_path: Path, rabbit: dict[str, Any]) -> None:
    sts = parse_statefulset(rabbit)
    store = VolumeStore(tmp_path, chown=Recorder())
    with pytest.raises(VolumeError, match="secret 'cookie' not found"):
        store.materialise(sts.template.spec, "u", secrets=SECRETS[1:], configmaps=CMS)
    with pytest.raises(VolumeError, match=r"key '20-ha-celery\.conf' not found"):
        store.materialise(sts.template.spec, "u", secrets=SECRETS, configmaps=[ConfigMap("cfg", "ns", {})])


def test_masked_secret_refused(tmp_path: Path, rabbit: dict[str, Any]) -> None:
    sts = parse_statefulset(rabbit)
    masked = [Secret("cookie", "ns", {".erlang.cookie": b"[secret]"}, frozenset({".erlang.cookie"})), SECRETS[1]]
    with pytest.raises(VolumeError, match="masked"):
        VolumeStore(tmp_path, chown=Recorder()).materialise(sts.template.spec, "u", secrets=masked, configmaps=CMS)


def test_optional_source_and_all_keys_and_item_mode(tmp_path: Path, sts: dict[str, Any]) -> None:
    pod_spec(sts)["volumes"] = [
        {"name": "opt", "secret": {"secretName": "ghost", "optional": True}},
        {"name": "all", "configMap": {"name": "cfg", "defaultMode": 0o600}},
        {
            "name": "item",
            "configMap": {"name": "cfg", "items": [{"key": "enabled_plugins", "path": "d/p", "mode": 0o444}]},
        },
    ]
    s = parse_statefulset(sts)
    paths = VolumeStore(tmp_path, chown=Recorder()).materialise(s.template.spec, "u", configmaps=CMS)
    assert list(paths["opt"].iterdir()) == []
    assert sorted(p.name for p in paths["all"].iterdir()) == sorted(CMS[0].data)
    assert _mode(paths["all"] / "definitions.json") == 0o600
    assert _mode(paths["item"] / "d" / "p") == 0o444


def test_item_path_escape_refused(tmp_path: Path, sts: dict[str, Any]) -> None:
    pod_spec(sts)["volumes"] = [
        {"name": "x", "configMap": {"name": "cfg", "items": [{"key": "enabled_plugins", "path": "../p"}]}}
    ]
    s = parse_statefulset(sts)
    with pytest.raises(VolumeError, match=r"\.\."):
        VolumeStore(tmp_path, chown=Recorder()).materialise(s.template.spec, "u", configmaps=CMS)


def test_sub_path(tmp_path: Path, sts: dict[str, Any]) -> None:
    pod_spec(sts)["volumes"] = [{"name": "t", "emptyDir": {}}]
    container(sts)["volumeMounts"] = [{"name": "t", "mountPath": "/work", "subPath": "a/b"}]
    sts["spec"]["volumeClaimTemplates"] = []
    s = parse_statefulset(sts)
    paths = VolumeStore(tmp_path, chown=Recorder()).materialise(s.template.spec, "u")
    (m,) = container_mounts(s.template.spec.containers[0], s.template.spec, paths)
    assert m.host_path == paths["t"] / "a" / "b"
    assert m.host_path.is_dir()


def test_no_fs_group_no_group_change(tmp_path: Path, sts: dict[str, Any]) -> None:
    pod_spec(sts)["volumes"] = [{"name": "t", "emptyDir": {"medium": "Memory"}}]
    s = parse_statefulset(sts)
    rec = Recorder()
    paths = VolumeStore(tmp_path, chown=rec).materialise(s.template.spec, "u")
    assert rec.calls[paths["t"]] == (0, 0)
    assert _mode(paths["t"]) == 0o777


def test_apply_fs_group_read_only_mask(tmp_path: Path) -> None:
    d = tmp_path / "v"
    d.mkdir(mode=0o755)
    f = d / "f"
    f.write_text("x")
    f.chmod(0o600)
    rec = Recorder()
    apply_fs_group(d, 42, read_only=True, chown=rec)
    assert _mode(f) == 0o640
    assert _mode(d) == 0o755 | stat.S_ISGID
    assert rec.calls == {d: (-1, 42), f: (-1, 42)}


def test_claim_zone_binding(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path, chown=Recorder())
    assert store.claim_zone("rabbitmq", "data", 0) is None
    assert store.bind_claim("rabbitmq", "data", 0, "zone-a") == "zone-a"
    assert store.bind_claim("rabbitmq", "data", 0, "zone-b") == "zone-a", "a disk never moves zones"
    assert store.wipe_claim("rabbitmq", "data", 0)
    assert store.claim_zone("rabbitmq", "data", 0) is None
