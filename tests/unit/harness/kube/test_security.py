"""harness/kube/security.py: a securityContext in, the process's uid, gids and confinement out (as containerd)."""

from __future__ import annotations

import pytest

from harness.kube.objects import SecurityContext
from harness.kube.security import (
    RUNTIME_DEFAULT_CAPABILITIES,
    SecurityContextError,
    bounding_set,
    process_settings,
)
from harness.runtime.confine import CAPABILITIES, SECCOMP_DENIED, Confinement, enter_argv

NONE = SecurityContext()


def settings(pod: SecurityContext = NONE, container: SecurityContext = NONE) -> object:
    return process_settings(pod, container, image_uid=999, image_gid=999)


def test_nothing_set_is_the_runtime_default() -> None:
    s = process_settings(NONE, NONE, image_uid=999, image_gid=998)
    assert (s.uid, s.gid, s.groups) == (999, 998, (998,))
    # Kubernetes allows escalation and runs unconfined unless told otherwise; the bounding set is
    # still the runtime's default, not everything root holds.
    assert s.confinement == Confinement(
        bounding_caps=RUNTIME_DEFAULT_CAPABILITIES, no_new_privs=False, read_only_root=False, seccomp=False
    )
    assert "SYS_ADMIN" not in RUNTIME_DEFAULT_CAPABILITIES
    assert "NET_RAW" in RUNTIME_DEFAULT_CAPABILITIES


def test_the_plans_broker_context() -> None:
    pod = SecurityContext(
        run_as_user=999, run_as_group=999, run_as_non_root=True, fs_group=999, seccomp_profile="RuntimeDefault"
    )
    container = SecurityContext(
        read_only_root_filesystem=True, allow_privilege_escalation=False, drop_capabilities=("ALL",)
    )
    s = process_settings(pod, container, image_uid=0, image_gid=0)
    assert (s.uid, s.gid, s.groups) == (999, 999, (999,))
    assert s.confinement == Confinement(bounding_caps=frozenset(), no_new_privs=True, read_only_root=True, seccomp=True)


def test_fs_group_is_a_supplementary_group() -> None:
    s = process_settings(SecurityContext(run_as_group=10, fs_group=20), NONE, image_uid=1, image_gid=1)
    assert s.groups == (10, 20)


def test_drop_removes_named_capabilities_with_or_without_prefix() -> None:
    assert bounding_set(("NET_RAW", "cap_chown")) == RUNTIME_DEFAULT_CAPABILITIES - {"NET_RAW", "CHOWN"}
    assert bounding_set(("ALL",)) == frozenset()
    assert bounding_set(()) == RUNTIME_DEFAULT_CAPABILITIES


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(SecurityContextError, match=r"capabilities.drop: unknown capability 'NET_FOO'"):
        bounding_set(("NET_FOO",))
    with pytest.raises(SecurityContextError, match="runAsNonRoot"):
        process_settings(SecurityContext(run_as_non_root=True), NONE, image_uid=0, image_gid=0)
    with pytest.raises(SecurityContextError, match=r"seccompProfile.type: 'Localhost'.*RuntimeDefault, Unconfined"):
        settings(SecurityContext(seccomp_profile="Localhost"))


def test_container_settings_win_over_the_pods() -> None:
    s = process_settings(
        SecurityContext(run_as_user=5, seccomp_profile="RuntimeDefault"),
        SecurityContext(run_as_user=6, seccomp_profile="Unconfined"),
        image_uid=1,
        image_gid=1,
    )
    assert s.uid == 6
    assert s.confinement.seccomp is False


def test_enter_argv_carries_the_confinement() -> None:
    argv = enter_argv(
        Confinement(bounding_caps=frozenset({"CHOWN", "KILL"}), no_new_privs=False, seccomp=True),
        root="/r",
        uid=1,
        gid=2,
        groups=[2, 3],
        argv=["/usr/bin/env", "-i", "x"],
    )
    assert argv[1:3] == ["-I", "-S"]
    assert argv[argv.index("--") :] == ["--", "/usr/bin/env", "-i", "x"]
    assert {"--root=/r", "--uid=1", "--gid=2", "--groups=2,3", "--bounding-caps=0,5"} <= set(argv)
    assert "--no-new-privs" not in argv
    assert "--seccomp-deny=" + ",".join(SECCOMP_DENIED) in argv
    unconfined = enter_argv(Confinement(), root="/r", uid=1, gid=2, groups=[2], argv=["/x"])
    assert not any(a.startswith(("--bounding-caps", "--seccomp")) for a in unconfined)


def test_confinement_refuses_unknown_capabilities() -> None:
    assert CAPABILITIES[21] == "SYS_ADMIN"
    with pytest.raises(ValueError, match="unknown capabilities"):
        Confinement(bounding_caps=frozenset({"SYS_FOO"}))
