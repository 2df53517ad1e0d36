"""A container's securityContext as the runtime applies it: the pod's and the container's settings in, the process's
uid, gids and confinement out. Pure: harness.kube.kubelet starts the process with what this returns.

What GKE's containerd does, field by field:

* runAsUser/runAsGroup override the image's USER; runAsNonRoot refuses to start a container that would run as 0;
  fsGroup is one more supplementary group of the process;
* capabilities: the runtime's default set (:data:`RUNTIME_DEFAULT_CAPABILITIES`) less ``drop`` (``ALL`` drops every
  one) is the bounding set; a non-root process holds none of them, a root one holds exactly them;
* allowPrivilegeEscalation: false sets no_new_privs (unset means true: Kubernetes allows escalation by default);
* readOnlyRootFilesystem: the root read-only, the volumes as mounted;
* seccompProfile RuntimeDefault installs the runtime's default filter; unset or Unconfined installs none.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.kube.objects import SecurityContext
from harness.runtime.confine import CAPABILITIES, Confinement

RUNTIME_DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""containerd's default capabilities (oci.DefaultCapabilities): what a container that drops nothing may hold."""

SECCOMP_PROFILES = {"RuntimeDefault": True, "Unconfined": False}
"""seccompProfile.type -> whether the runtime's default filter is installed."""


class SecurityContextError(ValueError):
    """A securityContext the runtime would refuse to start (the message names the field)."""


@dataclass(frozen=True)
class ProcessSettings:
    """Who a container's process runs as and what confines it."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    confinement: Confinement


def _capability(name: str) -> str:
    bare = name.upper().removeprefix("CAP_")
    if bare != "ALL" and bare not in CAPABILITIES:
        raise SecurityContextError(
            f"securityContext.capabilities.drop: unknown capability {name!r}; allowed: ALL, {', '.join(CAPABILITIES)}"
        )
    return bare


def bounding_set(drop: tuple[str, ...]) -> frozenset[str]:
    """The runtime's default capabilities less *drop* (``ALL`` drops them all)."""
    dropped = {_capability(name) for name in drop}
    if "ALL" in dropped:
        return frozenset()
    return RUNTIME_DEFAULT_CAPABILITIES - dropped


def process_settings(
    pod: SecurityContext, container: SecurityContext, *, image_uid: int, image_gid: int
) -> ProcessSettings:
    """What the runtime applies to a container of a pod: the container's settings over the pod's, over the image's."""
    sc = pod.merged(container)
    uid = image_uid if sc.run_as_user is None else sc.run_as_user
    gid = image_gid if sc.run_as_group is None else sc.run_as_group
    if sc.run_as_non_root and uid == 0:
        raise SecurityContextError("securityContext.runAsNonRoot is true but the container would run as uid 0")
    profile = sc.seccomp_profile or "Unconfined"
    if profile not in SECCOMP_PROFILES:
        raise SecurityContextError(
            f"securityContext.seccompProfile.type: {profile!r} is not run locally; "
            f"allowed: {', '.join(SECCOMP_PROFILES)}"
        )
    groups = (gid,) if sc.fs_group is None or sc.fs_group == gid else (gid, sc.fs_group)
    confinement = Confinement(
        bounding_caps=bounding_set(sc.drop_capabilities),
        no_new_privs=sc.allow_privilege_escalation is False,
        read_only_root=sc.read_only_root_filesystem,
        seccomp=SECCOMP_PROFILES[profile],
    )
    return ProcessSettings(uid, gid, groups, confinement)
