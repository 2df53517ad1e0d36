"""A local N-node RabbitMQ cluster (Debian's 3.10) booted from the same renderer as Kubernetes.

Every node gets its own name, ports, data, log and config directories under ``workdir`` and
runs as the ``rabbitmq`` user (when started by root), with:

* ``conf.d/20-ha-celery.conf``: :func:`broker.render_rabbitmq_conf`, classic_config discovery;
* ``conf.d/30-default-user.conf`` (0600): ``default_user``/``default_pass``, the same mechanism
  the Kubernetes Secret uses, so the harness proves that the user is seeded;
* the definitions (DLX, dead-letter queue, policy) applied after the cluster formed with
  ``rabbitmqctl import_definitions``, as on Kubernetes (see :mod:`broker.render` for why).

Isolation from anything else on the machine: a private Erlang cookie (``HOME`` of the node and
CLI processes is ``workdir/home``), a private epmd on its own port (default mode) or in each
namespace (netns mode) started and killed by the harness, ports probed free, all listeners on
127.0.0.1, and an empty ``RABBITMQ_CONF_ENV_FILE`` so /etc/rabbitmq is never read.

In netns mode each node is a host of its own (see :mod:`harness.runtime.netns`) with a long node name
``rabbit@198.18.X.(i+1)``; the CLI for node ``i`` runs inside node ``i``'s namespace, so it
still answers while the node is partitioned.

Measured on the 2-core machine: one node boots in 6-8 s; three nodes form a cluster in 19-30 s
(mostly CPU: three VMs booting at once; classic_config also has the first node retry its blank
peers 10 x 0.5 s before it forms the cluster alone); a killed node rejoins in 8-12 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from broker import (
    BrokerConfig,
    PeerDiscovery,
    RabbitVersion,
    render_default_user_conf,
    render_definitions_json,
    render_enabled_plugins,
    render_rabbitmq_conf,
)
from contract.wire import import_definitions_command
from harness.runtime import netns as nsmod
from harness.runtime import processes
from harness.runtime.cleanup import cleanup_stale
from harness.runtime.poll import NOT_YET, PollTimeout, poll
from harness.runtime.ports import PORT_STRIDE, find_free_base, tcp_open

log = logging.getLogger(__name__)

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""Debian's unwrapped scripts: /usr/sbin/rabbitmq-* would `su` to rabbitmq and cd /var/lib/rabbitmq."""
RABBITMQ_USER = "rabbitmq"

# BrokerConfig fields the harness derives itself (per node, per mode); overriding them would
# break the harness' own bookkeeping (ports, node names, the vhost of the URLs).
_OWNED_FIELDS = frozenset(
    {
        "version",
        "peer_discovery",
        "classic_nodes",
        "cluster_size",
        "amqp_port",
        "management_port",
        "prometheus_port",
        "bind_address",
        "default_vhost",
        "log_to_console",
    }
)
# A cut link is detected after 0.75-1.25 net_ticktime; 10 s keeps the partition drill short
# while staying far from false alarms on a busy 2-core machine.
_HARNESS_NET_TICKTIME_S = 10
_CLI_TIMEOUT_S = 60.0

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The local cluster did not do what was asked; the message says which node and why."""


@dataclass(frozen=True)
class NodeInfo:
    """Static facts about one node of a :class:`LocalCluster`."""

    index: int
    name: str
    host: str
    amqp_port: int
    management_port: int
    prometheus_port: int
    dist_port: int
    dir: Path

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"

    @property
    def stdout_file(self) -> Path:
        return self.dir / "stdout.log"


def rabbitmq_installed(rabbitmq_bin: Path = RABBITMQ_BIN) -> bool:
    """Whether the Debian rabbitmq-server package (its unwrapped scripts) is present."""
    return (rabbitmq_bin / "rabbitmq-server").exists() and (rabbitmq_bin / "rabbitmqctl").exists()


class LocalCluster:
    """N RabbitMQ 3.10 nodes on this machine forming one cluster; see the module docstring.

    Use as a context manager (``with LocalCluster(path) as cluster:``): it starts on enter and
    :meth:`stop` always runs on exit, on an exception or KeyboardInterrupt too.
    """

    def __init__(
        self,
        workdir: Path,
        nodes: int = 3,
        netns: bool = False,
        *,
        base_port: int | None = None,
        user: str = "drill",
        password: str | None = None,
        vhost: str = "/",
        config: Mapping[str, Any] | None = None,
        rabbitmq_bin: Path = RABBITMQ_BIN,
        extra_conf: str = "",
    ) -> None:
        """Describe the cluster; nothing starts before :meth:`start`.

        ``config`` overrides BrokerConfig fields (e.g. ``delivery_limit``, ``net_ticktime_s``,
        ``memory_limit_bytes``); the fields the harness derives per node cannot be overridden.
        ``base_port``: first of a block of ``10 x nodes + 10`` ports (default: a free block;
        in netns mode the standard ports, each node having its own address).
        ``extra_conf``: raw rabbitmq.conf lines for ``conf.d/25-extra.conf``, loaded after the
        rendered file, for experiments the renderer does not (yet) express.
        """
        if nodes < 1 or nodes % 2 == 0:
            raise ValueError(f"nodes must be odd (pause_minority and quorum queues need a majority), got {nodes}")
        if password is None:
            password = secrets.token_urlsafe(18)
        # The password goes into a rabbitmq.conf line and into URLs: keep it to safe characters.
        if not re.fullmatch(r"[A-Za-z0-9_.~-]{8,128}", password):
            raise ValueError("password must be 8-128 characters from [A-Za-z0-9_.~-]")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", user):
            raise ValueError(f"user must be 1-64 characters from [A-Za-z0-9_.-], got {user!r}")
        bad = sorted(set(config or {}) & _OWNED_FIELDS)
        if bad:
            raise ValueError(f"config may not override {bad}: LocalCluster derives them")
        unknown = sorted(set(config or {}) - {f.name for f in dataclasses.fields(BrokerConfig)})
        if unknown:
            raise ValueError(f"config has unknown BrokerConfig fields {unknown}")

        self.workdir = Path(workdir).resolve()
        self.nodes = nodes
        self.netns = netns
        self.user = user
        self.password = password
        self.vhost = vhost
        self.rabbitmq_bin = rabbitmq_bin
        self.extra_conf = extra_conf
        self._overrides: dict[str, Any] = {"net_ticktime_s": _HARNESS_NET_TICKTIME_S, **(config or {})}
        self._base_port = base_port
        self._as_root = os.geteuid() == 0
        if netns:
            nsmod.require_root()

        self._layout: nsmod.NetnsLayout | None = None
        self._infos: list[NodeInfo] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._epmd: list[subprocess.Popen[bytes]] = []
        self._epmd_port = 4369
        self._cli_ports: tuple[int, int] | None = None
        self._partitioned: set[int] = set()
        self._started = False
        self._record_file = processes.GroupRecord(f"{os.getpid()}-{secrets.token_hex(4)}", self.workdir)
        self.formation_seconds: float | None = None
        """Seconds from launching the nodes to all of them running as one cluster."""

    # ------------------------------------------------------------------ public API ----

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        return self._started

    def broker_config(self, i: int) -> BrokerConfig:
        """The BrokerConfig node ``i`` is rendered from (after :meth:`start` laid out ports)."""
        info = self._info(i)
        return BrokerConfig(
            version=RabbitVersion.V3_10,
            peer_discovery=PeerDiscovery.CLASSIC,
            classic_nodes=tuple(n.name for n in self._infos),
            cluster_size=self.nodes,
            amqp_port=info.amqp_port,
            management_port=info.management_port,
            prometheus_port=info.prometheus_port,
            bind_address=None if self.netns else "127.0.0.1",
            default_vhost=self.vhost,
            log_to_console=False,
            **self._overrides,
        )

    def start(self, timeout: float = 90) -> None:
        """Boot every node, wait for one cluster of all of them, apply the definitions.

        Idempotent. On failure (or Ctrl-C) everything started so far is stopped, and the
        error carries the tail of the failing node's log.
        """
        if self._started:
            return
        if not rabbitmq_installed(self.rabbitmq_bin):
            raise ClusterError(f"rabbitmq-server not found under {self.rabbitmq_bin} (apt-get install rabbitmq-server)")
        deadline = time.monotonic() + timeout
        cleaned = cleanup_stale()
        if cleaned:
            log.warning("removed leftovers of crashed clusters: %s", cleaned)
        try:
            self._prepare()
            self._start_epmd(deadline)
            t0 = time.monotonic()
            for i in range(self.nodes):
                self._launch(i)
            self._started = True
            for i in range(self.nodes):
                self._wait_booted(i, deadline)
            self._wait_members(set(range(self.nodes)), via=0, deadline=deadline)
            self.formation_seconds = time.monotonic() - t0
            log.info("cluster of %d formed in %.1fs", self.nodes, self.formation_seconds)
            self._apply_definitions(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node and epmd this cluster started and remove its namespaces. Idempotent."""
        for i in list(self._procs):
            self._kill_proc(i)
        for proc in self._epmd:
            processes.kill_group(proc)
        self._epmd.clear()
        if self._layout is not None:
            layout, self._layout = self._layout, None
            nsmod.destroy(layout)
        self._partitioned.clear()
        self._started = False
        self._record_file.remove()

    def node_names(self) -> list[str]:
        return [n.name for n in self._require_infos()]

    def node_info(self, i: int) -> NodeInfo:
        return self._info(i)

    def host(self, i: int) -> str:
        return self._info(i).host

    def port(self, i: int) -> int:
        return self._info(i).amqp_port

    def url(self, i: int) -> str:
        info = self._info(i)
        return (
            f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{info.host}:{info.amqp_port}/{quote(self.vhost, safe='')}"
        )

    def urls(self) -> list[str]:
        """One AMQP URL per node, in node order: Celery's failover list (``broker_url``)."""
        return [self.url(i) for i in range(self.nodes)]

    def index_of(self, node_name: str) -> int:
        for info in self._require_infos():
            if info.name == node_name:
                return info.index
        raise ClusterError(f"{node_name!r} is not a node of this cluster ({self.node_names()})")

    def is_alive(self, i: int) -> bool:
        """Whether node ``i``'s OS process runs (it may still be booting or paused)."""
        proc = self._procs.get(i)
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``'s whole process group (the beam VM and its helpers): a crash."""
        if not self.is_alive(i):
            raise ClusterError(f"node {i} is not running")
        self._kill_proc(i)

    def start_node(self, i: int, timeout: float = 60) -> None:
        """Boot a killed or stopped node again and wait until it runs in the cluster."""
        if self.is_alive(i):
            raise ClusterError(f"node {i} is already running")
        if i in self._partitioned:
            # A restarting node waits for its peers' tables: cut off, it can never finish booting.
            raise ClusterError(f"node {i} is partitioned: heal({i}) before start_node({i})")
        deadline = time.monotonic() + timeout
        self._launch(i)
        self._wait_booted(i, deadline)
        expected = {j for j in range(self.nodes) if self.is_alive(j) and j not in self._partitioned}
        self._wait_members(expected, via=i, deadline=deadline)

    def stop_node(self, i: int, timeout: float = 60) -> None:
        """Stop node ``i`` gracefully (``rabbitmqctl stop``), SIGKILL if it overstays ``timeout``."""
        proc = self._procs.get(i)
        if proc is None or proc.poll() is not None:
            raise ClusterError(f"node {i} is not running")
        with contextlib.suppress(ClusterError):
            self.rabbitmqctl(i, "stop", timeout=timeout)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("node %d did not stop within %.0fs; killing it", i, timeout)
        self._kill_proc(i)

    def partition(self, i: int) -> None:
        """Cut node ``i`` off from the other nodes and from the clients (netns mode only)."""
        layout = self._require_layout()
        nsmod.set_node_link(layout, i, up=False)
        self._partitioned.add(i)

    def heal(self, i: int) -> None:
        """Reconnect node ``i`` (netns mode only). pause_minority then resumes it by itself."""
        layout = self._require_layout()
        nsmod.set_node_link(layout, i, up=True)
        self._partitioned.discard(i)

    def cli(self, i: int, tool: str, *args: str, timeout: float = _CLI_TIMEOUT_S) -> str:
        """Run a RabbitMQ CLI tool (rabbitmqctl, rabbitmq-diagnostics, rabbitmq-queues, ...)
        against node ``i``; return stdout, raise ClusterError with stderr on failure."""
        proc = self._run_cli(i, tool, *args, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(
                f"`{tool} {' '.join(args)}` on node {i} failed ({proc.returncode}):\n"
                f"{proc.stderr.strip()}\n{proc.stdout.strip()}"
            )
        return proc.stdout

    def rabbitmqctl(self, i: int, *args: str, timeout: float = _CLI_TIMEOUT_S) -> str:
        return self.cli(i, "rabbitmqctl", *args, timeout=timeout)

    def is_running(self, i: int, timeout: float = 30) -> bool:
        """Whether the RabbitMQ application runs on node ``i`` (False when paused or down)."""
        if not self.is_alive(i):
            return False
        proc = self._run_cli(i, "rabbitmq-diagnostics", "-q", "is_running", timeout=timeout)
        return proc.returncode == 0 and "is fully booted and running" in proc.stdout

    def cluster_status(self, via: int, timeout: float = 30) -> dict[str, Any]:
        out = self.rabbitmqctl(via, "-q", "cluster_status", "--formatter", "json", timeout=timeout)
        status: dict[str, Any] = json.loads(out)
        return status

    def running_nodes(self, via: int) -> set[int]:
        """Indices of the nodes that node ``via`` sees running in its cluster."""
        return {self.index_of(name) for name in self.cluster_status(via).get("running_nodes", [])}

    def queue_leader(self, queue: str, vhost: str | None = None) -> int:
        """Index of the node leading quorum queue ``queue``."""
        rows = self._list_json("list_queues", "name", "type", "leader", vhost=vhost)
        for row in rows:
            if row.get("name") == queue:
                leader = row.get("leader")
                if not leader or leader == "":
                    raise ClusterError(f"queue {queue!r} has no leader ({row})")
                return self.index_of(str(leader))
        raise ClusterError(f"no queue {queue!r} in vhost {vhost or self.vhost!r}")

    def connected_node_of(self, client_port: int) -> int | None:
        """Index of the node holding the AMQP connection whose client side uses ``client_port``.

        3.10's list_connections has no ``node`` column; the connection name ends with the
        server's address and port ("client -> host:port"), which identifies the node.
        """
        by_address = {(info.host, info.amqp_port): info.index for info in self._require_infos()}
        for row in self._list_json("list_connections", "peer_port", "name", vhost=None):
            if int(row.get("peer_port", -1)) != client_port:
                continue
            match = re.search(r"->\s*([0-9.]+):([0-9]+)$", str(row.get("name", "")))
            if match:
                return by_address.get((match[1], int(match[2])))
        return None

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
        """Poll ``predicate`` until it returns a truthy value (returned); ClusterError on timeout.

        Exceptions from ``predicate`` count as "not yet" (a node may be mid-restart).
        """
        try:
            return poll(predicate, timeout, what, interval=interval, not_yet=(ClusterError, *NOT_YET))
        except PollTimeout as exc:
            raise ClusterError(str(exc)) from None

    # ------------------------------------------------------------------ internals -----

    def _require_infos(self) -> list[NodeInfo]:
        if not self._infos:
            raise ClusterError("the cluster has not been laid out yet: call start() first")
        return self._infos

    def _info(self, i: int) -> NodeInfo:
        infos = self._require_infos()
        if not 0 <= i < len(infos):
            raise IndexError(f"node index {i} out of range 0..{len(infos) - 1}")
        return infos[i]

    def _require_layout(self) -> nsmod.NetnsLayout:
        if self._layout is None:
            raise ClusterError("partition/heal need a started cluster in netns mode (LocalCluster(..., netns=True))")
        return self._layout

    def _list_json(self, command: str, *items: str, vhost: str | None) -> list[dict[str, Any]]:
        vhost_args = ["-p", vhost or self.vhost] if command == "list_queues" else []
        last: ClusterError | None = None
        for i in self._answering_order():
            try:
                out = self.rabbitmqctl(i, "-q", command, *vhost_args, *items, "--formatter", "json", timeout=30)
            except ClusterError as exc:
                last = exc
                continue
            rows: list[dict[str, Any]] = json.loads(out) if out.strip() else []
            return rows
        raise ClusterError(f"no node answered {command}: {last}")

    def _answering_order(self) -> list[int]:
        alive = [i for i in range(self.nodes) if self.is_alive(i) and i not in self._partitioned]
        return alive or list(range(self.nodes))

    def _check_traversable(self) -> None:
        # Nodes run as the rabbitmq user: every ancestor of workdir must let it through
        # (pytest's /tmp/pytest-of-root is 0700, a classic cause of an unexplained boot failure).
        if not self._as_root:
            return
        for parent in [self.workdir, *self.workdir.parents]:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise ClusterError(
                    f"{parent} is not traversable by other users (mode {oct(parent.stat().st_mode & 0o777)}); "
                    f"the {RABBITMQ_USER} user could not reach {self.workdir}. Use a workdir under e.g. /tmp/hacel-*"
                )

    def _chown(self, path: Path) -> None:
        if self._as_root:
            pw = pwd.getpwnam(RABBITMQ_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _layout_nodes(self) -> None:
        infos: list[NodeInfo] = []
        if self.netns:
            self._layout = nsmod.create(self.nodes)
        ports: list[tuple[int, ...]]
        if self.netns and self._base_port is None:
            ports = [(5672, 15672, 15692, 25672)] * self.nodes
        else:
            base = self._base_port
            if base is None:
                base = find_free_base(PORT_STRIDE * self.nodes + PORT_STRIDE)
            ports = [tuple(base + PORT_STRIDE * i + k for k in range(4)) for i in range(self.nodes)]
            # epmd and the CLI's own distribution ports sit in the block's last stride.
            tail = base + PORT_STRIDE * self.nodes
            self._epmd_port = tail
            self._cli_ports = (tail + 1, tail + PORT_STRIDE - 1)
        for i, (amqp, mgmt, prom, dist) in enumerate(ports):
            if self._layout is not None:
                host = self._layout.node_ip(i)
                name = f"rabbit@{host}"
            else:
                host = "127.0.0.1"
                name = f"rabbit{i}@localhost"
            infos.append(NodeInfo(i, name, host, amqp, mgmt, prom, dist, self.workdir / f"n{i}"))
        self._infos = infos

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self._check_traversable()
        self._layout_nodes()
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        self._chown(home)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)))
        os.chmod(cookie, 0o400)
        self._chown(cookie)
        env_file = self.workdir / "rabbitmq-env.conf"
        env_file.write_text("# Intentionally empty: keeps /etc/rabbitmq/rabbitmq-env.conf out of this cluster.\n")
        os.chmod(env_file, 0o644)
        for info in self._infos:
            cfg = self.broker_config(info.index)
            # start() means a fresh cluster: a second start() after stop() must not meet the
            # previous run's Mnesia (in netns mode the node names may even have changed).
            shutil.rmtree(info.dir, ignore_errors=True)
            conf_d = info.dir / "conf.d"
            for d in (info.dir, conf_d, info.dir / "mnesia", info.dir / "log"):
                d.mkdir(parents=True, exist_ok=True)
                self._chown(d)
            files = {
                conf_d / "20-ha-celery.conf": (render_rabbitmq_conf(cfg), 0o644),
                # The Kubernetes Secret's twin: the only place the password is written.
                conf_d / "30-default-user.conf": (render_default_user_conf(self.user, self.password), 0o600),
                info.dir / "enabled_plugins": (render_enabled_plugins(cfg), 0o644),
            }
            if self.extra_conf:
                files[conf_d / "25-extra.conf"] = (self.extra_conf.rstrip("\n") + "\n", 0o644)
            for path, (text, mode) in files.items():
                path.write_text(text)
                os.chmod(path, mode)
                self._chown(path)
        defs = self.workdir / "definitions.json"
        defs.write_text(render_definitions_json(self.broker_config(0)))
        os.chmod(defs, 0o644)

    def _run_as_prefix(self, ns: str | None) -> list[str]:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        if self._as_root:
            if shutil.which("setpriv") is None:
                raise ClusterError("setpriv (util-linux) is needed to drop to the rabbitmq user")
            prefix += ["setpriv", f"--reuid={RABBITMQ_USER}", f"--regid={RABBITMQ_USER}", "--init-groups", "--"]
        return prefix

    def _node_ns(self, i: int) -> str | None:
        return self._layout.node_ns(i) if self._layout is not None else None

    def _base_env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            # The Elixir-based CLI refuses to run without a UTF-8 locale.
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.workdir / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
        }
        if self.netns:
            env["RABBITMQ_USE_LONGNAME"] = "true"
        else:
            env["ERL_EPMD_PORT"] = str(self._epmd_port)
            if self._cli_ports is not None:
                env["RABBITMQ_CTL_DIST_PORT_MIN"] = str(self._cli_ports[0])
                env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(self._cli_ports[1])
        return env

    def _node_env(self, info: NodeInfo) -> dict[str, str]:
        env = self._base_env()
        d = info.dir
        env.update(
            {
                "RABBITMQ_NODENAME": info.name,
                "RABBITMQ_DIST_PORT": str(info.dist_port),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                # No main file: everything comes from conf.d, in the order Kubernetes mounts it.
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
                "RABBITMQ_CONFIG_FILES": str(d / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            }
        )
        return env

    def _start_epmd(self, deadline: float) -> None:
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        if self._layout is not None:
            # One epmd per namespace on the standard port: nodes and CLIs there find it as usual.
            targets = [(self._layout.node_ip(i), 4369) for i in range(self.nodes)]
            argvs = [[*self._run_as_prefix(self._layout.node_ns(i)), epmd] for i in range(self.nodes)]
        else:
            targets = [("127.0.0.1", self._epmd_port)]
            argvs = [[*self._run_as_prefix(None), epmd, "-port", str(self._epmd_port), "-address", "127.0.0.1"]]
        for argv in argvs:
            # Our own child in its own session, not an `epmd -daemon`: stop() can kill exactly it.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=self._base_env(),
            )
            self._epmd.append(proc)
            self._record()
        for (host, port), proc in zip(targets, self._epmd, strict=True):
            while not tcp_open(host, port):
                if proc.poll() is not None:
                    raise ClusterError(f"epmd on {host}:{port} exited with {proc.returncode} (port in use?)")
                if time.monotonic() > deadline:
                    raise ClusterError(f"epmd on {host}:{port} did not come up")
                time.sleep(0.05)

    def _launch(self, i: int) -> None:
        info = self._info(i)
        argv = [*self._run_as_prefix(self._node_ns(i)), str(self.rabbitmq_bin / "rabbitmq-server")]
        with info.stdout_file.open("ab") as out:
            # A session of its own: kill() can SIGKILL the wrapper, beam and its helpers at once.
            self._procs[i] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._node_env(info),
                cwd=info.dir,
            )
        self._record()
        log.debug("launched node %d (%s) pid %d", i, info.name, self._procs[i].pid)

    def _record(self) -> None:
        self._record_file.write([p.pid for p in self._epmd] + [p.pid for p in self._procs.values()])

    def _boot_failure(self, i: int, why: str) -> ClusterError:
        info = self._info(i)
        return ClusterError(
            f"node {i} ({info.name}) {why}\n--- {info.log_file} (tail) ---\n{processes.tail(info.log_file)}"
            f"\n--- {info.stdout_file} (tail) ---\n{processes.tail(info.stdout_file)}"
        )

    def _wait_booted(self, i: int, deadline: float) -> None:
        # The AMQP listener opens at the very end of the boot sequence: a cheap readiness signal
        # that spares a CLI run (a second of CPU each) per poll.
        info = self._info(i)
        proc = self._procs[i]
        while not tcp_open(info.host, info.amqp_port):
            if proc.poll() is not None:
                raise self._boot_failure(i, f"exited with status {proc.returncode} while booting")
            if time.monotonic() > deadline:
                raise self._boot_failure(i, "did not open its AMQP port in time")
            time.sleep(0.25)

    def _wait_members(self, expected: set[int], via: int, deadline: float) -> None:
        seen: set[int] = set()
        while True:
            for i in expected:
                if not self.is_alive(i):
                    raise self._boot_failure(i, "died while the cluster was forming")
            try:
                seen = self.running_nodes(via)
                if expected <= seen:
                    return
            except ClusterError as exc:
                log.debug("cluster_status via node %d: %s", via, exc)
            if time.monotonic() > deadline:
                missing = sorted(expected - seen)
                culprit = missing[0] if missing else via
                raise self._boot_failure(
                    culprit, f"not in the cluster in time: node {via} sees {sorted(seen)}, expected {sorted(expected)}"
                )
            time.sleep(1.0)

    def _apply_definitions(self, deadline: float) -> None:
        path = str(self.workdir / "definitions.json")
        argv = import_definitions_command(path)
        self.rabbitmqctl(0, *argv[1:])
        cfg = self.broker_config(0)

        def applied() -> bool:
            policies = json.loads(
                self.rabbitmqctl(0, "-q", "list_policies", "-p", self.vhost, "--formatter", "json") or "[]"
            )
            queues = self._list_json("list_queues", "name", vhost=self.vhost)
            return any(p.get("name") == cfg.policy_name for p in policies) and any(
                q.get("name") == cfg.dead_letter_queue for q in queues
            )

        # import_definitions returns before the import is done ("asynchronous" in 3.10).
        self.wait_until(applied, timeout=max(5.0, deadline - time.monotonic()), what="definitions import")

    def _run_cli(self, i: int, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        info = self._info(i)
        argv = [*self._run_as_prefix(self._node_ns(i)), str(self.rabbitmq_bin / tool), "-n", info.name]
        if self.netns:
            argv.append("--longnames")
        argv += list(args)
        env = self._base_env()
        # The CLI names itself rabbitmqcli-<pid>-$RABBITMQ_NODENAME; without it the host part is
        # this machine's hostname, which in netns mode resolves to nothing the nodes can reach,
        # and every command that makes other nodes answer the CLI directly (list_queues) hangs.
        env["RABBITMQ_NODENAME"] = info.name
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"`{tool} {' '.join(args)}` on node {i} timed out after {timeout:.0f}s") from exc

    def _kill_proc(self, i: int) -> None:
        proc = self._procs.pop(i, None)
        if proc is not None:
            processes.kill_group(proc)
