"""Materialise a pod's volumes in a host directory, as the kubelet lays them out on a node.

Layout under the store's root::

    claims/<claim>-<sts>-<ordinal>/      a StatefulSet claim: survives pod deletion, wiped on demand
    pods/<pod uid>/volumes/<volume>/      everything else: gone with the pod incarnation

configMap/secret/projected files are written as plain files (no ``..data`` symlink swap) and are
always mounted read-only, as the kubelet does. When their object changes, each file is replaced by
a new one (a new inode, as the kubelet's atomic writer's swap gives): a container that mounts the
volume sees the new files, a subPath mount keeps the old file, as in Kubernetes. fsGroup is
applied as kubelet's SetVolumeOwnership: group set to fsGroup, setgid plus group x on
directories, group rw (read-only volumes: group r) on everything. Ownership changes go through an
injectable function so tests run without root.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.kube.objects import (
    ConfigMap,
    Container,
    KeyToPath,
    Plan,
    PodSpec,
    Projection,
    Secret,
    StatefulSet,
    Volume,
)

Chown = Callable[[Path, int, int], None]
"""(path, uid, gid) with -1 for "leave unchanged", like os.lchown."""

EMPTY_DIR_MODE = 0o777
"""kubelet creates an emptyDir world-writable, so any runAsUser can use it."""
API_DIR_MODE = 0o777
"""The top of a configMap/secret/projected volume, as kubelet's atomic writer leaves it."""
CLAIM_ROOT_MODE = 0o755
"""The root of a freshly formatted ext4 disk."""


class VolumeError(ValueError):
    """The kubelet would leave the pod in ContainerCreating (missing object/key, bad path)."""


@dataclass(frozen=True)
class Mount:
    """One bind mount for a container."""

    host_path: Path
    container_path: str
    read_only: bool


def _lchown(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)


def apply_fs_group(root: Path, gid: int, *, read_only: bool, chown: Chown) -> None:
    """kubelet's SetVolumeOwnership (fsGroupChangePolicy Always): the whole tree, every time."""
    paths = [root, *sorted(root.rglob("*"))]
    for path in paths:
        chown(path, -1, gid)
        if path.is_symlink():
            continue
        mode = path.lstat().st_mode
        mask = 0o440 if read_only else 0o660
        if stat.S_ISDIR(mode):
            mask |= stat.S_ISGID | 0o110
        os.chmod(path, stat.S_IMODE(mode) | mask)


def _safe_rel(path: str, what: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise VolumeError(f"{what}: path {path!r} must be relative and must not contain '..'")
    return p


def _source_values(src: Projection, secrets: Mapping[str, Secret], cms: Mapping[str, ConfigMap]) -> dict[str, bytes]:
    if src.kind == "secret":
        s = secrets.get(src.name)
        if s is None:
            return {}
        if s.masked:
            raise VolumeError(f"secret {src.name!r} still has masked keys {sorted(s.masked)}: run fill_secrets first")
        return dict(s.data)
    cm = cms.get(src.name)
    return {} if cm is None else {**cm.binary, **{k: v.encode() for k, v in cm.data.items()}}


def projected_files(
    volume: Volume, secrets: Sequence[Secret], configmaps: Sequence[ConfigMap]
) -> dict[PurePosixPath, tuple[bytes, int]]:
    """The files (relative path -> content, mode) of a configMap, secret or projected volume."""
    sec = {s.name: s for s in secrets}
    cms = {c.name: c for c in configmaps}
    files: dict[PurePosixPath, tuple[bytes, int]] = {}
    for src in volume.sources:
        exists = (src.name in sec) if src.kind == "secret" else (src.name in cms)
        if not exists:
            if src.optional:
                continue
            raise VolumeError(f"volume {volume.name!r}: {src.kind} {src.name!r} not found")
        values = _source_values(src, sec, cms)
        # No items: every key lands at its own name.
        items = src.items or tuple(KeyToPath(k, k) for k in sorted(values))
        for item in items:
            if item.key not in values:
                if src.optional:
                    continue
                raise VolumeError(f"volume {volume.name!r}: key {item.key!r} not found in {src.kind} {src.name!r}")
            rel = _safe_rel(item.path, f"volume {volume.name!r}")
            if rel in files:
                raise VolumeError(f"volume {volume.name!r}: two sources write {item.path!r}")
            files[rel] = (values[item.key], item.mode if item.mode is not None else volume.default_mode)
    return files


class VolumeStore:
    """Host directories for pods' volumes; claims outlive pods, everything else does not."""

    def __init__(self, root: Path, chown: Chown = _lchown) -> None:
        self.root = root
        self.chown = chown

    def claim_path(self, sts: str, claim: str, ordinal: int) -> Path:
        """Where claim ``<claim>-<sts>-<ordinal>`` (the PVC name Kubernetes would give it) lives."""
        return self.root / "claims" / f"{claim}-{sts}-{ordinal}"

    def claims_for(self, sts: StatefulSet, ordinal: int) -> dict[str, Path]:
        """Claim template name -> directory for one pod, created (as a fresh disk) if missing."""
        out: dict[str, Path] = {}
        for c in sts.claims:
            path = self.claim_path(sts.name, c.name, ordinal)
            if not path.exists():
                path.mkdir(parents=True)
                os.chmod(path, CLAIM_ROOT_MODE)
                self.chown(path, 0, 0)
                # mkfs.ext4 leaves lost+found at the disk's root: the app sees it in its data dir.
                lf = path / "lost+found"
                lf.mkdir()
                os.chmod(lf, 0o700)
                self.chown(lf, 0, 0)
            out[c.name] = path
        return out

    def _zone_file(self, sts: str, claim: str, ordinal: int) -> Path:
        # Beside the claim, not inside it: the app must not see bookkeeping in its data directory.
        return self.root / "claim-zones" / f"{claim}-{sts}-{ordinal}"

    def claim_zone(self, sts: str, claim: str, ordinal: int) -> str | None:
        """The zone the claim's disk was provisioned in, or None while unbound."""
        f = self._zone_file(sts, claim, ordinal)
        return f.read_text() if f.exists() else None

    def bind_claim(self, sts: str, claim: str, ordinal: int, zone: str) -> str:
        """Record the zone of the node the pod first landed on (WaitForFirstConsumer); kept if already bound."""
        bound = self.claim_zone(sts, claim, ordinal)
        if bound is not None:
            return bound
        f = self._zone_file(sts, claim, ordinal)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(zone)
        return zone

    def wipe_claim(self, sts: str, claim: str, ordinal: int) -> bool:
        """Delete a claim's data and zone binding (a lost disk); the next pod start gets a fresh one.

        False if there was nothing to delete.
        """
        path = self.claim_path(sts, claim, ordinal)
        zone = self._zone_file(sts, claim, ordinal)
        existed = path.exists() or zone.exists()
        shutil.rmtree(path, ignore_errors=True)
        zone.unlink(missing_ok=True)
        return existed

    def wipe_claims(self, sts: str, claims: Sequence[str]) -> list[str]:
        """Delete every claim of StatefulSet ``sts`` made from the templates ``claims``; returns their names."""
        out: list[str] = []
        for claim in claims:
            for path in sorted((self.root / "claims").glob(f"{claim}-{sts}-*")):
                ordinal = path.name.rsplit("-", 1)[1]
                if ordinal.isdigit() and self.wipe_claim(sts, claim, int(ordinal)):
                    out.append(path.name)
        return out

    def pod_dir(self, pod_uid: str) -> Path:
        """The per-incarnation directory of a pod."""
        return self.root / "pods" / pod_uid

    def remove_pod(self, pod_uid: str) -> None:
        """Drop a pod incarnation's emptyDirs and API volumes (its claims stay)."""
        shutil.rmtree(self.pod_dir(pod_uid), ignore_errors=True)

    def materialise(
        self,
        spec: PodSpec,
        pod_uid: str,
        *,
        secrets: Sequence[Secret] = (),
        configmaps: Sequence[ConfigMap] = (),
        claims: Mapping[str, Path] | None = None,
    ) -> dict[str, Path]:
        """Volume name -> host directory for every volume (and claim) of the pod, fsGroup applied.

        Idempotent for one ``pod_uid``: a container restart keeps its emptyDirs, as in Kubernetes.
        """
        base = self.pod_dir(pod_uid) / "volumes"
        fs_group = spec.security_context.fs_group
        out: dict[str, Path] = {}
        for v in spec.volumes:
            path = base / v.name
            if v.kind == "emptyDir":
                if not path.exists():
                    path.mkdir(parents=True)
                    os.chmod(path, EMPTY_DIR_MODE)
                    self.chown(path, 0, 0)
            else:
                self._write_api_volume(v, path, secrets, configmaps)
            if fs_group is not None:
                apply_fs_group(path, fs_group, read_only=v.kind != "emptyDir", chown=self.chown)
            out[v.name] = path
        for name, path in (claims or {}).items():
            if fs_group is not None:
                apply_fs_group(path, fs_group, read_only=False, chown=self.chown)
            out[name] = path
        return out

    def _write_api_volume(
        self, v: Volume, path: Path, secrets: Sequence[Secret], configmaps: Sequence[ConfigMap]
    ) -> None:
        files = projected_files(v, secrets, configmaps)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        os.chmod(path, API_DIR_MODE)
        self.chown(path, 0, 0)
        for rel, (content, mode) in sorted(files.items()):
            self._write_file(path.joinpath(*rel.parts), content, mode)

    def _write_file(self, target: Path, content: bytes, mode: int) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, mode)
        self.chown(target, 0, 0)

    def _replace_file(self, target: Path, content: bytes, mode: int) -> None:
        # A new file renamed over the old: a subPath bind mount keeps the old inode (see the module docstring).
        fresh = target.with_name(f".{target.name}.new")
        self._write_file(fresh, content, mode)
        os.replace(fresh, target)

    def refresh_api_volumes(
        self,
        spec: PodSpec,
        pod_uid: str,
        changed: Collection[tuple[str, str]],
        *,
        secrets: Sequence[Secret],
        configmaps: Sequence[ConfigMap],
    ) -> list[str]:
        """The kubelet's re-projection of a running pod's configMap/secret/projected volumes that take
        from a ``changed`` (``configMap``|``secret``, name) object: files rewritten in the same
        directory (the container's mount), keys gone removed. Returns the volumes rewritten."""
        base = self.pod_dir(pod_uid) / "volumes"
        done: list[str] = []
        for v in spec.volumes:
            path = base / v.name
            if v.kind not in READ_ONLY_KINDS or not path.is_dir():
                continue
            if not any((src.kind, src.name) in changed for src in v.sources):
                continue
            try:
                files = projected_files(v, secrets, configmaps)
            except VolumeError:
                # The kubelet keeps the files it has when an object or key is gone (it reports FailedMount).
                continue
            for old in sorted(path.rglob("*"), reverse=True):
                rel = PurePosixPath(*old.relative_to(path).parts)
                if old.is_file() and rel not in files:
                    old.unlink()
            for rel, (content, mode) in sorted(files.items()):
                self._replace_file(path.joinpath(*rel.parts), content, mode)
            if spec.security_context.fs_group is not None:
                apply_fs_group(path, spec.security_context.fs_group, read_only=True, chown=self.chown)
            done.append(v.name)
        return done


READ_ONLY_KINDS = frozenset({"configMap", "secret", "projected"})
"""Volumes the kubelet always mounts read-only, whatever volumeMounts[].readOnly says."""


def container_mounts(container: Container, spec: PodSpec, volume_paths: Mapping[str, Path]) -> list[Mount]:
    """The container's bind mounts, parents before children (containerd sorts them by depth)."""
    kinds = {v.name: v.kind for v in spec.volumes}
    mounts: list[Mount] = []
    for m in container.volume_mounts:
        host = volume_paths[m.name]
        if m.sub_path:
            host = host.joinpath(*_safe_rel(m.sub_path, f"mount {m.name!r}").parts)
            if not host.exists():
                # kubelet creates a missing subPath as a directory in a writable volume.
                host.mkdir(parents=True)
        mounts.append(Mount(host, m.mount_path, m.read_only or kinds.get(m.name) in READ_ONLY_KINDS))
    # The plan lists /var/lib/rabbitmq/mnesia before /var/lib/rabbitmq: mounting in that order would
    # hide the claim under the emptyDir. containerd orders by path depth, so the model does too.
    return sorted(mounts, key=lambda mt: len(PurePosixPath(mt.container_path).parts))


def changed_sources(old: Plan, new: Plan) -> set[tuple[str, str]]:
    """The ConfigMaps and Secrets (``configMap``|``secret``, name) whose data differ between two plans
    (created and deleted ones included)."""
    out: set[tuple[str, str]] = set()
    pairs: list[tuple[str, dict[str, object], dict[str, object]]] = [
        ("secret", {s.name: s.data for s in old.secrets}, {s.name: s.data for s in new.secrets}),
        (
            "configMap",
            {c.name: (c.data, c.binary) for c in old.configmaps},
            {c.name: (c.data, c.binary) for c in new.configmaps},
        ),
    ]
    for kind, before, after in pairs:
        out |= {(kind, name) for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    return out
