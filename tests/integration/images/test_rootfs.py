"""harness/runtime/rootfs.py for real: the image cache through zstd, and real RabbitMQ nodes booted from the
rabbitmq image (root, ~1 min). The pure parts are in tests/unit/harness/runtime/test_rootfs.py."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.runtime import images, rootfs
from tests.conftest import Plan
from tests.requires import requires

PINNED = os.environ.get("HA_CELERY_RABBITMQ_PINNED", rootfs.DEFAULT_PINNED_RABBITMQ)
CACHE = Path(os.environ.get("HA_CELERY_ROOTFS_CACHE", str(rootfs.DEFAULT_CACHE_DIR)))
CONFIGMAP = "kubernetes/configmap-ha-celery-rabbitmq-config.yaml"
SUFFIX = ".rabbitmq-nodes.ha-celery.svc.cluster.local"
NS_PREFIX = f"hacrt{os.getpid() % 10000}"

pytestmark = pytest.mark.integration


def test_cached_tarball_is_reused_and_stale_temps_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requires("zstd")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc/marker").write_text("x")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".tmp-build-stale").mkdir()
    key = rootfs.cache_key("4.3.6-1", "1:29")
    rootfs._pack(src, cache / f"{key}.tar.zst")

    def no_build(dest: Path) -> None:
        raise AssertionError(f"must not build {dest}")

    monkeypatch.setattr(rootfs, "_debootstrap", no_build)
    first = rootfs.ensure_rootfs(cache, "4.3.6-1")
    assert (first / "etc/marker").read_text() == "x"
    assert rootfs.LAST_BUILD[0].extracted
    assert rootfs.ensure_rootfs(cache, "4.3.6-1") == first
    second = rootfs.LAST_BUILD[0]
    assert not second.extracted
    assert not list(cache.glob(".tmp-*"))


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def netnses(count: int) -> Iterator[list[tuple[str, str]]]:
    """*count* namespaces (name, ip) on a bridge in one more namespace; all removed afterwards."""
    bridge = f"{NS_PREFIX}br"
    made: list[str] = []
    try:
        _sh("ip", "netns", "add", bridge)
        made.append(bridge)
        _sh("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", bridge, "link", "set", "br0", "up")
        _sh("ip", "-n", bridge, "link", "set", "lo", "up")
        out: list[tuple[str, str]] = []
        for i in range(count):
            ns, ip = f"{NS_PREFIX}n{i}", f"198.18.0.{10 + i}"
            _sh("ip", "netns", "add", ns)
            made.append(ns)
            _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", bridge)
            _sh("ip", "-n", bridge, "link", "set", f"v{i}", "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            out.append((ns, ip))
        yield out
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


@dataclass
class Pod:
    name: str
    netns: str
    dir: Path
    env: dict[str, str]
    binds: list[rootfs.Bind]
    image: images.Image
    proc: subprocess.Popen[bytes] | None = None

    def full_env(self) -> dict[str, str]:
        return self.image.container_env(self.name, self.env)

    def start(self) -> None:
        log = open(self.dir / "stdout.log", "wb")  # noqa: SIM115 - lives as long as the container
        self.proc = subprocess.Popen(
            self.image.container_argv(
                hostname=self.name,
                netns=self.netns,
                env=self.full_env(),
                pod_binds=self.binds,
                argv=self.image.command(),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def init_pid(self) -> int:
        assert self.proc is not None
        for _ in range(100):
            pid = rootfs.container_main_pid(self.proc.pid)
            if pid is not None:
                return pid
            time.sleep(0.05)
        raise AssertionError("container did not start")

    def wait_log(self, text: str, seconds: float = 120) -> None:
        """Wait for *text* on the container's stdout. Exec'ing the CLI right after start races the server for
        starting epmd: the server then fails with `epmd error ... address` (seen here with 3 parallel pods)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            log = (self.dir / "stdout.log").read_text(errors="replace")
            if text in log:
                return
            if "BOOT FAILED" in log:
                raise AssertionError(log[-3000:])
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not logged in {seconds}s")

    def exec(self, *argv: str, timeout: float = 330) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            rootfs.exec_argv(
                self.init_pid(),
                list(argv),
                env=self.full_env(),
                uid=self.image.uid,
                gid=self.image.gid,
                workdir=self.image.workdir,
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kill(self) -> None:
        """SIGKILL the runner; assert the container's whole PID namespace is gone."""
        if self.proc is not None and self.proc.poll() is None:
            main = rootfs.container_main_pid(self.proc.pid)
            self.proc.kill()
            self.proc.wait(30)
            if main is not None:
                deadline = time.monotonic() + 10
                while rootfs.pids_in_pidns_of(main) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert rootfs.pids_in_pidns_of(main) == []


def make_pod(  # noqa: PLR0917
    image: images.Image,
    base: Path,
    name: str,
    netns: str,
    hosts: str,
    confd: dict[str, str],
    env: dict[str, str],
    cookie: str,
    extra: Sequence[rootfs.Bind] = (),
) -> Pod:
    d = base / name
    for sub in ("home", "confd"):
        (d / sub).mkdir(parents=True)
    (d / "hosts").write_text(hosts)
    for fname, text in confd.items():
        (d / "confd" / fname).write_text(text)
    cookie_file = d / "home/.erlang.cookie"
    cookie_file.write_text(cookie)
    os.chmod(cookie_file, 0o600)
    for p in (d / "home", cookie_file):
        os.chown(p, rootfs.IMAGE_UID, rootfs.IMAGE_GID)
    binds = [
        rootfs.Bind(d / "home", "/var/lib/rabbitmq"),
        rootfs.Bind(d / "confd", "/etc/rabbitmq/conf.d", read_only=True),
        rootfs.Bind(d / "hosts", "/etc/hosts", read_only=True),
        *extra,
    ]
    return Pod(name, netns, d, env, binds, image)


@pytest.fixture(scope="module")
def image() -> images.Image:
    """The rabbitmq image, built or reused (root: the container runtime needs namespaces, mounts, chroot)."""
    requires("root")
    return images.rabbitmq_image(CACHE, PINNED)


def _wait_exit(proc: subprocess.Popen[bytes] | None, seconds: float) -> int:
    assert proc is not None
    return int(proc.wait(seconds))


def test_single_node_boots_as_999_and_cli_works(image: images.Image, tmp_path: Path) -> None:
    root = image.rootfs
    name = "rabbitmq-0"
    with netnses(1) as [(ns, ip)]:
        hosts = f"127.0.0.1 localhost\n{ip} {name}{SUFFIX} {name}\n"
        pod = make_pod(
            image,
            tmp_path,
            name,
            ns,
            hosts,
            {"20-test.conf": "log.console = true\nlisteners.tcp.default = 5672\n"},
            {"RABBITMQ_NODENAME": f"rabbit@{name}"},
            secrets.token_hex(16),
        )
        try:
            t0 = time.monotonic()
            pod.start()
            pod.wait_log("epmd monitor knows us")
            r = pod.exec("rabbitmqctl", "await_startup", "--timeout", "120")
            assert r.returncode == 0, r.stdout + r.stderr
            print(f"single node boot: {time.monotonic() - t0:.1f}s")
            status = pod.exec("rabbitmqctl", "status")
            assert status.returncode == 0, status.stderr
            assert "rabbit@rabbitmq-0" in status.stdout
            ver = pod.exec("rabbitmq-diagnostics", "server_version")
            assert ver.returncode == 0, ver.stdout + ver.stderr
            assert PINNED.split("-")[0] in ver.stdout
            ident = pod.exec("sh", "-c", "id -u; id -g; hostname; echo $HOME")
            assert ident.stdout.split() == ["999", "999", name, "/var/lib/rabbitmq"]
            for tool in ("rabbitmq-upgrade", "rabbitmq-queues"):
                assert pod.exec(tool, "help").returncode in (0, 64)  # 64: help printed as usage
            assert pod.exec("rabbitmq-queues", "check_if_node_is_quorum_critical").returncode == 0
            stop = pod.exec("rabbitmqctl", "stop")
            # -9: the node exited first and its PID namespace took the exec'd CLI with it (as a kubelet exec would).
            assert stop.returncode in {0, -signal.SIGKILL}, stop.stderr
            assert "Stopping and halting node" in stop.stdout
            assert _wait_exit(pod.proc, 60) == 0
            log = (pod.dir / "stdout.log").read_text(errors="replace")
            assert "Server startup complete" in log  # logs go to stdout, as in the image
            # SIGKILL: nothing stays mounted.
            pod.start()
            pod.wait_log("epmd monitor knows us")
            assert pod.proc is not None
            main = pod.init_pid()
            assert len(rootfs.pids_in_pidns_of(main)) >= 2
            os.kill(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait(10)
            time.sleep(1)
            assert not Path(f"/proc/{main}").exists()
            assert rootfs.pids_in_pidns_of(main) == []
            assert not rootfs.mounts_under(root)
            assert not rootfs.mounts_under(tmp_path)
            assert not rootfs.mounts_under(rootfs.CONTAINER_STAGE)
        finally:
            pod.kill()
    # The shared rootfs was not written by the containers.
    assert not (root / "var/lib/rabbitmq/.erlang.cookie").exists()
    assert not (root / "etc/hosts").exists()


def plan_confd_file(plan: Plan, key: str = "20-ha-celery.conf") -> str:
    """The block scalar *key* from the rendered ConfigMap (as the prototype read it, without a YAML library)."""
    lines = (plan.directory / CONFIGMAP).read_text().splitlines()
    start = lines.index(f"  {key}: |") + 1
    body: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        body.append(line[4:])
    return "\n".join(body).strip() + "\n"


def test_three_nodes_form_one_cluster_with_plan_config(
    image: images.Image, plans: dict[str, Plan], tmp_path: Path
) -> None:
    root = image.rootfs
    plan = plans["dev"]
    conf = plan_confd_file(plan)
    plugins = plan_confd_file(plan, "enabled_plugins")
    definitions = plan_confd_file(plan, "definitions.json")
    files = tmp_path / "ha-celery-files"
    files.mkdir()
    (files / "enabled_plugins").write_text(plugins)
    (files / "definitions.json").write_text(definitions)
    cookie = secrets.token_hex(24)
    user_conf = "default_user = celery\ndefault_pass = test-only-password\n"
    pods: list[Pod] = []
    with netnses(3) as nets:
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{ip} rabbitmq-{i}{SUFFIX} rabbitmq-{i}\n" for i, (_, ip) in enumerate(nets)
        )
        try:
            for i, (ns, _) in enumerate(nets):
                name = f"rabbitmq-{i}"
                env = {
                    "MY_POD_NAME": name,
                    "MY_POD_NAMESPACE": "ha-celery",
                    "K8S_SERVICE_NAME": "rabbitmq-nodes",
                    "RABBITMQ_USE_LONGNAME": "true",
                    "RABBITMQ_NODENAME": f"rabbit@{name}{SUFFIX}",
                    "K8S_HOSTNAME_SUFFIX": SUFFIX,
                    "RABBITMQ_ENABLED_PLUGINS_FILE": "/etc/ha-celery/enabled_plugins",
                }
                pods.append(
                    make_pod(
                        image,
                        tmp_path,
                        name,
                        ns,
                        hosts,
                        {"20-ha-celery.conf": conf, "30-default-user.conf": user_conf},
                        env,
                        cookie,
                        [rootfs.Bind(files, "/etc/ha-celery", read_only=True)],
                    )
                )
            t0 = time.monotonic()
            for pod in pods:  # podManagementPolicy: Parallel
                pod.start()
            for pod in pods:
                pod.wait_log("epmd monitor knows us")
            for pod in pods:  # the postStart hook, as the plan ships it
                r = pod.exec(
                    "sh",
                    "-c",
                    "rabbitmqctl --timeout 300 await_startup && rabbitmqctl import_definitions "
                    "/etc/ha-celery/definitions.json",
                )
                assert r.returncode == 0, r.stdout + r.stderr + (pod.dir / "stdout.log").read_text()[-3000:]
            t_boot = time.monotonic() - t0
            expected = {f"rabbit@rabbitmq-{i}{SUFFIX}" for i in range(3)}
            running: set[str] = set()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                r = pods[0].exec("rabbitmqctl", "cluster_status", "--formatter", "json")
                if r.returncode == 0:
                    running = set(json.loads(r.stdout)["running_nodes"])
                    if running == expected:
                        break
                time.sleep(1)
            t_cluster = time.monotonic() - t0
            assert running == expected
            print(f"3 nodes: all await_startup {t_boot:.1f}s, one cluster of 3 at {t_cluster:.1f}s")
            for pod in pods:
                r = pod.exec("rabbitmqctl", "cluster_status", "--formatter", "json")
                assert set(json.loads(r.stdout)["running_nodes"]) == expected
            q = pods[1].exec("rabbitmqctl", "list_queues", "name", "type", "--formatter", "json")
            assert {"name": "celery.dlq", "type": "quorum"} in json.loads(q.stdout)
            r = pods[2].exec("rabbitmq-upgrade", "await_online_quorum_plus_one", "-t", "30")
            assert r.returncode == 0, r.stdout + r.stderr
            # SIGTERM to the container (as the kubelet does) is forwarded to the main process: clean exit.
            assert pods[2].proc is not None
            rootfs.stop_container(pods[2].proc.pid)
            assert _wait_exit(pods[2].proc, 120) == 0
        finally:
            errors: list[BaseException] = []
            for pod in pods:
                try:
                    pod.kill()
                except BaseException as exc:  # kill the others anyway
                    errors.append(exc)
            if errors:
                raise errors[0]
    assert not rootfs.mounts_under(root)
    assert not rootfs.mounts_under(tmp_path)
