"""harness/runtime/rootfs.py without root: pod commands, container argv, cache keys, dpkg versions and the
pinned-version check (the real nodes are booted in tests/integration/images/test_rootfs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.runtime import rootfs
from harness.runtime.confine import Confinement

RABBITMQ_ENV = rootfs.IMAGE_ENV


def test_pod_command_follows_kubernetes_semantics() -> None:
    ep, cmd = rootfs.IMAGE_ENTRYPOINT, rootfs.IMAGE_CMD
    assert rootfs.pod_command(ep, cmd) == ["docker-entrypoint.sh", "rabbitmq-server"]
    assert rootfs.pod_command(ep, cmd, args=["rabbitmqctl", "status"]) == [
        "docker-entrypoint.sh",
        "rabbitmqctl",
        "status",
    ]
    assert rootfs.pod_command(ep, cmd, command=["sh", "-c", "true"]) == ["sh", "-c", "true"]
    assert rootfs.pod_command((), ("celery", "worker")) == ["celery", "worker"]


def test_container_argv_shape() -> None:
    argv = rootfs.container_argv(
        Path("/r o/fs"),
        hostname="rabbitmq-0",
        netns="n0",
        argv=["sh", "-c", "echo 'hi'"],
        env=rootfs.container_env(RABBITMQ_ENV, "rabbitmq-0", {"A": "1", "HOME": "/x"}),
        uid=999,
        gid=999,
        binds=[rootfs.Bind(Path("/h/hosts"), "/etc/hosts", True)],
        workdir="/tmp",
    )
    assert argv[:2] == ["nsenter", "--net=/run/netns/n0"]
    assert "--kill-child" in argv
    assert "--pid" in argv
    assert "--uts" in argv
    assert "--mount" in argv
    script = argv[-1]
    assert "lowerdir='/r o/fs'" in script
    assert 'mount -o remount,bind,ro "$R"/etc/hosts' in script
    assert "hostname rabbitmq-0" in script
    assert "enter.py --root=/run/ha-celery-rootfs/root --uid=999 --gid=999 --groups=999 --no-new-privs --" in script
    assert 'remount,bind,ro "$R"\n' not in script  # the root stays writable unless asked
    assert "HOME=/x" in script
    assert "RUNNING_UNDER_SYSTEMD=true" in script
    assert "--chdir=/tmp" in script
    assert "sh -c 'echo '\"'\"'hi'\"'\"'' <&0 &" in script
    assert "trap 'kill -TERM $child 2>/dev/null' TERM" in script
    assert "\nexec " not in script  # the supervising shell must stay PID 1 (see container_argv)


def test_container_argv_takes_exactly_the_given_env_and_user() -> None:
    script = rootfs.container_argv(
        Path("/w"), hostname="w-0", argv=["celery", "worker"], env={"A": "1"}, uid=10001, gid=10001, workdir="/tmp"
    )[-1]
    assert "--uid=10001 --gid=10001 --groups=10001" in script
    assert "/usr/bin/env -i --chdir=/tmp A=1 celery worker" in script
    assert "RABBITMQ" not in script  # no image's values sneak in
    assert "HOSTNAME" not in script


def _argv(argv: list[str], env: dict[str, str] | None = None, binds: Sequence[rootfs.Bind] = ()) -> list[str]:
    return rootfs.container_argv(
        Path("/r"), hostname="h", argv=argv, env=env or {}, uid=1, gid=1, workdir="/", binds=binds
    )


def test_container_argv_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="argv"):
        _argv([])
    with pytest.raises(ValueError, match="absolute"):
        _argv(["x"], binds=[rootfs.Bind(Path("/a"), "rel")])
    with pytest.raises(ValueError, match="="):
        _argv(["A=B"])
    with pytest.raises(ValueError, match="variable name"):
        _argv(["x"], env={"A=B": "1"})


def test_container_env_precedence() -> None:
    env = rootfs.container_env(RABBITMQ_ENV, "rabbitmq-1", {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["HOSTNAME"] == "rabbitmq-1"
    assert env["HOME"] == "/var/lib/rabbitmq"
    assert rootfs.container_env({"HOSTNAME": "image"}, "pod") == {"HOSTNAME": "pod"}


def test_exec_argv_joins_the_container_confined_as_it_is() -> None:
    confinement = Confinement(bounding_caps=frozenset(), seccomp=True)
    argv = rootfs.exec_argv(
        42, ["rabbitmqctl", "status"], env={"A": "1"}, uid=999, gid=998, workdir="/", confinement=confinement
    )
    assert argv[:8] == ["nsenter", "--target=42", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]
    assert "--root=/proc/42/root" in argv
    assert "--uid=999" in argv
    assert "--gid=998" in argv
    assert "--bounding-caps=" in argv
    assert any(a.startswith("--seccomp-deny=") for a in argv)
    assert argv[-4:] == ["--chdir=/", "A=1", "rabbitmqctl", "status"]


def test_read_only_root_is_remounted_after_the_binds() -> None:
    script = rootfs.container_argv(
        Path("/r"),
        hostname="h",
        argv=["x"],
        env={},
        uid=1,
        gid=1,
        workdir="/",
        binds=[rootfs.Bind(Path("/h/tmp"), "/tmp")],
        confinement=Confinement(read_only_root=True),
    )[-1]
    assert script.index('mount --bind /h/tmp "$R"/tmp') < script.index('mount -o remount,bind,ro "$R"\n')
    with pytest.raises(ValueError, match="read-only root needs the overlay"):
        rootfs.container_argv(
            Path("/r"),
            hostname="h",
            argv=["x"],
            env={},
            uid=1,
            gid=1,
            workdir="/",
            overlay=False,
            confinement=Confinement(read_only_root=True),
        )


def test_cache_key_is_filename_safe() -> None:
    key = rootfs.cache_key("4.3.6-1", "1:29.1.1+dfsg-1")
    assert "/" not in key
    assert ":" not in key
    assert "4.3.6-1" in key


def test_dpkg_versions(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: rabbitmq-server\nStatus: install ok installed\nVersion: 4.3.6-1\n\n"
        "Package: erlang-base\nStatus: deinstall ok config-files\nVersion: 1:28\n\n"
    )
    assert rootfs.dpkg_versions(tmp_path, ["rabbitmq-server", "erlang-base"]) == {"rabbitmq-server": "4.3.6-1"}


def _fake_bootstrap(version: str) -> object:
    def fake(dest: Path) -> None:
        (dest / "var/lib/dpkg").mkdir(parents=True)
        (dest / "var/lib/dpkg/status").write_text(
            f"Package: rabbitmq-server\nStatus: install ok installed\nVersion: {version}\n\n"
            "Package: erlang-base\nStatus: install ok installed\nVersion: 1:29.1.1+dfsg-1\n"
        )

    return fake


def test_pinned_mismatch_fails_clearly_and_caches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "ensure_host_tools", lambda: None)
    monkeypatch.setattr(rootfs, "_debootstrap", _fake_bootstrap("4.3.7-1"))
    with pytest.raises(rootfs.PinnedVersionMismatch) as err:
        rootfs.ensure_rootfs(tmp_path, "4.3.6-1")
    assert "4.3.7-1" in str(err.value)
    assert "4.3.6-1" in str(err.value)
    assert "pinned=" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
