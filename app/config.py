"""Worker and scheduler configuration, read once from the environment.

``from_env`` validates everything up front and raises ``ConfigError`` naming the
variable, the (password-masked) value and what is allowed, so a typo fails the
pod at start instead of leaving a worker retrying a wrong broker forever.

Environment variables
---------------------
Broker location, one of two forms (giving both is an error):

``BROKER_URLS``
    Comma-separated ``amqp://user:password@host:port/vhost`` URLs, one per
    RabbitMQ pod. Credentials may be left out of the URLs and given with
    ``BROKER_USER``/``BROKER_PASSWORD`` instead (not both). Used as a failover
    list: each process shuffles it once, so connections spread over the nodes,
    and moves to the next URL when its node goes away.
``BROKER_HOSTS``
    Comma-separated ``host`` or ``host:port`` entries, e.g. the per-pod DNS names
    ``rmq-0.rmq-headless.ns.svc.cluster.local``. The Kubernetes form: hosts
    come from the StatefulSet, credentials from a Secret.
``BROKER_PORT``
    AMQP port for ``BROKER_HOSTS`` entries without one (default 5672; 5671 with TLS).
``BROKER_VHOST``
    Virtual host for ``BROKER_HOSTS`` (default ``/``).
``BROKER_USER``, ``BROKER_PASSWORD``
    Credentials; required with ``BROKER_HOSTS``. Meant to come from a Kubernetes
    Secret (``env[].valueFrom.secretKeyRef``). Never falls back to ``guest``,
    which RabbitMQ refuses from anywhere but localhost.

TLS (the stack setting ``brokerTls``):

``BROKER_TLS_CA_FILE``
    Absolute path of the CA certificate that signed the broker nodes' certificates. Set: every
    connection is AMQP over TLS (``amqps://`` URLs; ``BROKER_HOSTS`` makes them), the broker's
    certificate must chain to this CA and name the host connected to (each URL's own host, also
    after a failover, see ``app.tls``). Unset: plain ``amqp://``. The two never mix.
``BROKER_TLS_SERVER_NAME``
    Optional, with ``BROKER_TLS_CA_FILE``: the one name every broker certificate is checked
    against instead of each URL's host, for a client that reaches the nodes by address (the
    client Service's name is in every node's certificate).

Worker tuning:

``WORKER_PREFETCH_MULTIPLIER``
    Messages reserved per pool process, 1..``timing.MAX_PREFETCH_MULTIPLIER``
    (default 1: long tasks, fair spread, and the fewest messages to redeliver
    when a worker dies). Raise it for floods of millisecond tasks.
``WORKER_CONCURRENCY``
    Pool processes per worker, 1..64 (default 2). Explicit because in a container
    Celery's default, the CPU count, is the *node's* count, not the pod's limit.
``WORKER_MAX_MEMORY_PER_CHILD_KIB``
    ``worker_max_memory_per_child``: a pool process whose resident memory passed this many KiB
    after a task is replaced by a fresh one, before it grows into the pod's memory limit (an
    OOM kill restarts the whole container). 1024..``MAX_MEMORY_PER_CHILD_KIB``; unset: never
    recycled. The worker Deployment derives it from its memory limit
    (``contract.wire.max_memory_per_child_kib``).

Lanes (``contract.lanes``; the worker Deployment of each lane sets them, and its command adds
``--queues=<its queue>``, so a worker consumes its lane's queue only):

``TASK_QUEUES``
    Every lane's queue, comma-separated, ``celery`` first (default: ``celery`` alone). Every
    client declares them all, so a task routed to any lane has its queue and exchange.
``TASK_ROUTES``
    A JSON object of task name or ``*``-glob to queue (Celery's ``task_routes``; default none:
    every task goes to ``celery`` unless its code names a queue). Each queue must be in ``TASK_QUEUES``.
``TASK_SOFT_TIME_LIMIT_S``, ``TASK_TIME_LIMIT_S``
    The lane's soft and hard time limits, the soft one below the hard one (default
    ``contract.timing``'s 50 and 60 s).
``WORKER_DELIVERY_LIMIT``
    The broker policy's delivery limit, 1..1000 (default ``contract.wire.DELIVERY_LIMIT``, 20, which
    the broker config uses too). A task whose pool process died or that hit its hard time limit on
    the delivery whose requeue would pass it is put into the dead-letter queue by the worker, with
    why (``app.failures``), instead of by the broker without a word. The worker Deployment sets it.

Probes:

``HEALTH_HEARTBEAT_FILE``
    Absolute path the worker touches every few seconds while connected
    (default ``/tmp/worker-heartbeat``); checked by ``python -m app.health``.
``HEALTH_READY_FILE``
    Absolute path that exists while the worker consumes (default
    ``/tmp/worker-ready``); checked by ``python -m app.health --ready``.

Metrics (``app.metrics``):

``WORKER_METRICS_PORT``
    Port of the worker's Prometheus ``/metrics``, 0..65535 (default 9808; 0: no exporter).
``PROMETHEUS_MULTIPROC_DIR``
    Absolute directory where the worker's processes write their samples (prometheus-client's
    multiprocess mode; the prefork children run the tasks). Required by a prefork worker that
    exports metrics; the worker empties it at start.

Must stay unset: ``REMAP_SIGTERM`` (read by billiard). Setting it turns
Kubernetes' SIGTERM into a cold shutdown, which cancels running tasks (and,
with a soft shutdown timeout, stalls the event loop; see
``timing.SOFT_SHUTDOWN_TIMEOUT_S``); ``from_env`` rejects it.

Result backend: none. Tasks report through their own side effects; a backend
would be one more stateful service to make highly available, and every result
would be one more message to lose.

The variable names and defaults are part of the contract with the Kubernetes
objects, so they live in ``contract.wire``.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from contract import lanes, metrics, timing, wire
from contract.wire import (
    DEFAULT_BROKER_VHOST,
    DEFAULT_CONCURRENCY,
    DEFAULT_HEARTBEAT_FILE,
    DEFAULT_PREFETCH_MULTIPLIER,
    DEFAULT_READY_FILE,
    ENV_BROKER_HOSTS,
    ENV_BROKER_PASSWORD,
    ENV_BROKER_PORT,
    ENV_BROKER_TLS_CA_FILE,
    ENV_BROKER_TLS_SERVER_NAME,
    ENV_BROKER_URLS,
    ENV_BROKER_USER,
    ENV_BROKER_VHOST,
    ENV_CONCURRENCY,
    ENV_HEARTBEAT_FILE,
    ENV_PREFETCH_MULTIPLIER,
    ENV_READY_FILE,
    ENV_REMAP_SIGTERM,
    ENV_TASK_QUEUES,
    ENV_TASK_ROUTES,
    ENV_TASK_SOFT_TIME_LIMIT_S,
    ENV_TASK_TIME_LIMIT_S,
    MAX_CONCURRENCY,
    QUEUE_NAME,
)

if TYPE_CHECKING:
    from kombu import Queue

DEFAULT_BROKER_PORT: Final = wire.AMQP_PORT
DEFAULT_BROKER_TLS_PORT: Final = wire.AMQPS_PORT
_DEFAULT_HEARTBEAT_PATH: Final = PurePosixPath(DEFAULT_HEARTBEAT_FILE)
_DEFAULT_READY_PATH: Final = PurePosixPath(DEFAULT_READY_FILE)
MAX_MEMORY_PER_CHILD_KIB: Final = 64 * 1024 * 1024
"""64 GiB: more than any pod here may hold; a larger value is a unit mistake (bytes for KiB)."""

_HOST_RE: Final = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


_DIGITS_RE: Final = re.compile(r"[0-9]{1,9}")
"""A number in ASCII digits (str.isdigit() also takes "²" and "٣", which int() then refuses or reads)."""


class ConfigError(ValueError):
    """A configuration variable is missing or invalid; the message says which and why."""


@dataclass(frozen=True)
class AppConfig:
    """Everything the Celery app, the scheduler and the health step need."""

    broker_urls: tuple[str, ...] = field(repr=False)
    """Failover list of amqp URLs with credentials (hence not in repr), in the given order."""
    prefetch_multiplier: int = DEFAULT_PREFETCH_MULTIPLIER
    """``worker_prefetch_multiplier``; see ``WORKER_PREFETCH_MULTIPLIER``."""
    concurrency: int = DEFAULT_CONCURRENCY
    """``worker_concurrency``; see ``WORKER_CONCURRENCY``."""
    max_memory_per_child_kib: int | None = None
    """``worker_max_memory_per_child`` (None: never recycled); see ``WORKER_MAX_MEMORY_PER_CHILD_KIB``."""
    heartbeat_file: PurePosixPath = _DEFAULT_HEARTBEAT_PATH
    """Liveness heartbeat file; see ``HEALTH_HEARTBEAT_FILE``."""
    ready_file: PurePosixPath = _DEFAULT_READY_PATH
    """Readiness marker file; see ``HEALTH_READY_FILE``."""
    tls_ca_file: PurePosixPath | None = None
    """The broker CA; set: amqps:// only, CA and hostname verified. See ``BROKER_TLS_CA_FILE``."""
    tls_server_name: str | None = None
    """Name checked in every broker certificate instead of each URL's host; see ``BROKER_TLS_SERVER_NAME``."""
    metrics_port: int = metrics.WORKER_METRICS_PORT
    """Port of the worker's ``/metrics`` (0: none); see ``WORKER_METRICS_PORT``."""
    metrics_dir: PurePosixPath | None = None
    """prometheus-client's multiprocess directory; see ``PROMETHEUS_MULTIPROC_DIR``."""
    queues: tuple[str, ...] = (QUEUE_NAME,)
    """Every lane's queue, the default lane's first; see ``TASK_QUEUES``."""
    routes: tuple[tuple[str, str], ...] = ()
    """(task name or *-glob, queue) in order; see ``TASK_ROUTES``."""
    soft_time_limit_s: int = timing.TASK_SOFT_TIME_LIMIT_S
    """``task_soft_time_limit``; see ``TASK_SOFT_TIME_LIMIT_S``."""
    time_limit_s: int = timing.TASK_TIME_LIMIT_S
    """``task_time_limit``; see ``TASK_TIME_LIMIT_S``."""
    delivery_limit: int = wire.DELIVERY_LIMIT
    """The broker policy's delivery limit; see ``WORKER_DELIVERY_LIMIT``."""

    def redacted_urls(self) -> tuple[str, ...]:
        """The broker URLs with passwords masked, for logs and reports."""
        return tuple(redact_url(url) for url in self.broker_urls)

    def shuffled_urls(self, rng: random.Random) -> tuple[str, ...]:
        """The failover list in a per-process random order.

        Every worker starting with the first URL would put all connections on
        rmq-0 (the seed's behaviour); shuffling once and then failing over in
        order spreads them and still tries every node before repeating.
        """
        urls = list(self.broker_urls)
        rng.shuffle(urls)
        return tuple(urls)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged if it has none)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (an unbalanced IPv6 bracket): a password in it cannot be found, so hide it all.
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def from_env(environ: Mapping[str, str]) -> AppConfig:
    """Build and validate an ``AppConfig`` from environment variables (see module doc)."""
    if environ.get(ENV_REMAP_SIGTERM):
        raise ConfigError(
            f"{ENV_REMAP_SIGTERM}={environ[ENV_REMAP_SIGTERM]!r} makes SIGTERM a cold shutdown that cancels "
            "running tasks; allowed: unset (SIGTERM then waits for running tasks, see contract.timing)"
        )
    tls_ca_file = _optional_abs_path_env(environ, ENV_BROKER_TLS_CA_FILE)
    tls_server_name = _tls_server_name(environ, tls_ca_file)
    scheme = "amqps" if tls_ca_file else "amqp"
    urls_raw = environ.get(ENV_BROKER_URLS, "").strip()
    hosts_raw = environ.get(ENV_BROKER_HOSTS, "").strip()
    user = environ.get(ENV_BROKER_USER)
    password = environ.get(ENV_BROKER_PASSWORD)
    if urls_raw and hosts_raw:
        raise ConfigError(
            f"{ENV_BROKER_URLS} and {ENV_BROKER_HOSTS} are both set; set exactly one "
            f"({ENV_BROKER_URLS}=amqp://... list, or {ENV_BROKER_HOSTS} with {ENV_BROKER_PORT}/{ENV_BROKER_VHOST})"
        )
    if urls_raw:
        for name in (ENV_BROKER_PORT, ENV_BROKER_VHOST):
            if name in environ:
                raise ConfigError(
                    f"{name}={environ[name]!r} only applies with {ENV_BROKER_HOSTS}; "
                    f"with {ENV_BROKER_URLS} put the port and vhost in each URL"
                )
        urls = _urls_from_list(urls_raw, user, password, scheme)
    elif hosts_raw:
        urls = _urls_from_hosts(environ, hosts_raw, user, password, scheme)
    else:
        raise ConfigError(
            f"no broker configured: set {ENV_BROKER_URLS} (comma-separated amqp:// URLs) or "
            f"{ENV_BROKER_HOSTS} (comma-separated host[:port]) with {ENV_BROKER_USER} and {ENV_BROKER_PASSWORD}"
        )
    return AppConfig(
        broker_urls=urls,
        prefetch_multiplier=_int_env(
            environ,
            ENV_PREFETCH_MULTIPLIER,
            DEFAULT_PREFETCH_MULTIPLIER,
            1,
            timing.MAX_PREFETCH_MULTIPLIER,
        ),
        concurrency=_int_env(environ, ENV_CONCURRENCY, DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY),
        max_memory_per_child_kib=_optional_int_env(
            environ, wire.ENV_MAX_MEMORY_PER_CHILD_KIB, 1024, MAX_MEMORY_PER_CHILD_KIB
        ),
        heartbeat_file=_abs_path_env(environ, ENV_HEARTBEAT_FILE, DEFAULT_HEARTBEAT_FILE),
        ready_file=_abs_path_env(environ, ENV_READY_FILE, DEFAULT_READY_FILE),
        tls_ca_file=tls_ca_file,
        tls_server_name=tls_server_name,
        metrics_port=_int_env(environ, metrics.ENV_METRICS_PORT, metrics.WORKER_METRICS_PORT, 0, 65535),
        metrics_dir=_optional_abs_path_env(environ, metrics.ENV_MULTIPROC_DIR),
        **_lane_env(environ),
        delivery_limit=_int_env(environ, wire.ENV_DELIVERY_LIMIT, wire.DELIVERY_LIMIT, 1, wire.MAX_DELIVERY_LIMIT),
    )


def _lane_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The lane's queues, routes and time limits (see the module doc), checked together."""
    raw = environ.get(ENV_TASK_QUEUES, "").strip()
    queues = tuple(_split_list(ENV_TASK_QUEUES, raw, raw)) if raw else (QUEUE_NAME,)
    if queues[0] != QUEUE_NAME or not all(_QUEUE_RE.fullmatch(q) for q in queues):
        raise ConfigError(
            f"{ENV_TASK_QUEUES}={raw[:200]!r}; allowed: comma-separated queue names ({QUEUE_NAME} first, then"
            f" {QUEUE_NAME}.<lane>), such as {QUEUE_NAME},{QUEUE_NAME}.long"
        )
    routes = _routes(environ.get(ENV_TASK_ROUTES, "").strip(), queues)
    hard = _int_env(environ, ENV_TASK_TIME_LIMIT_S, timing.TASK_TIME_LIMIT_S, 1, lanes.MAX_TIME_LIMIT_S)
    soft = _int_env(environ, ENV_TASK_SOFT_TIME_LIMIT_S, lanes.soft_limit_for(hard), 1, lanes.MAX_TIME_LIMIT_S)
    if soft >= hard:
        raise ConfigError(
            f"{ENV_TASK_SOFT_TIME_LIMIT_S}={soft} is not below {ENV_TASK_TIME_LIMIT_S}={hard}; allowed: 1..{hard - 1}"
            " (the task is told before its process is killed)"
        )
    return {"queues": queues, "routes": routes, "soft_time_limit_s": soft, "time_limit_s": hard}


_QUEUE_RE: Final = re.compile(rf"{re.escape(QUEUE_NAME)}(?:\.[a-z][a-z0-9-]{{0,19}})?")
"""A lane's queue (contract.lanes.queue_name)."""


def _routes(raw: str, queues: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    allowed = f'a JSON object of task name or *-glob to one of {list(queues)}, such as {{"reports.*": "{queues[-1]}"}}'
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfigError(f"{ENV_TASK_ROUTES}={raw[:200]!r} is not JSON; allowed: {allowed}") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and lanes.TASK_PATTERN_RE.fullmatch(k) and v in queues for k, v in parsed.items()
    ):
        raise ConfigError(f"{ENV_TASK_ROUTES}={raw[:200]!r}; allowed: {allowed}")
    return tuple(parsed.items())


def check_files(config: AppConfig) -> AppConfig:
    """What ``from_env`` cannot see in the names alone, checked once at start: the CA file is
    readable and holds a PEM certificate (else every TLS handshake fails and the worker and the
    scheduler retry for minutes), the metrics directory is a writable directory. Returns ``config``."""
    if config.tls_ca_file is not None:
        path = config.tls_ca_file
        try:
            text = Path(path).read_text(encoding="ascii", errors="replace")
            ssl.create_default_context().load_verify_locations(cadata=text)
        except (ssl.SSLError, ValueError):  # SSLError is an OSError: first
            raise ConfigError(
                f"{ENV_BROKER_TLS_CA_FILE}={str(path)!r} holds no PEM certificate; allowed: a PEM file with the"
                " broker's CA certificate (-----BEGIN CERTIFICATE-----)"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"{ENV_BROKER_TLS_CA_FILE}={str(path)!r} cannot be read ({exc.strerror}); allowed: a readable PEM"
                " file with the broker's CA certificate (the broker-ca Secret's ca.crt)"
            ) from None
    if config.metrics_dir is not None:
        _check_writable_dir(Path(config.metrics_dir))
    return config


def _check_writable_dir(directory: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: created as the exporter would create it (under the pod's /tmp
    emptyDir it does not exist yet), then it must take files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        raise ConfigError(
            f"{metrics.ENV_MULTIPROC_DIR}={str(directory)!r} is not a writable directory; allowed: a directory the"
            f" worker may create and write (under an emptyDir, such as {metrics.DEFAULT_MULTIPROC_DIR})"
        )


def _tls_server_name(environ: Mapping[str, str], ca_file: PurePosixPath | None) -> str | None:
    raw = environ.get(ENV_BROKER_TLS_SERVER_NAME, "").strip()
    if not raw:
        return None
    if ca_file is None:
        raise ConfigError(
            f"{ENV_BROKER_TLS_SERVER_NAME}={raw!r} needs {ENV_BROKER_TLS_CA_FILE}; allowed: unset without TLS"
        )
    if not _HOST_RE.match(raw):
        raise ConfigError(f"{ENV_BROKER_TLS_SERVER_NAME}={raw!r} is not a DNS name; allowed: a name such as rmq.ns.svc")
    return raw


def _optional_int_env(environ: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = environ.get(name)
    return None if raw is None or raw.strip() == "" else _int_env(environ, name, low, low, high)


def _int_env(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    # ASCII digits only: int() also takes "+3", "1_000" and other scripts' digits ("٣").
    if not _DIGITS_RE.fullmatch(text):
        raise ConfigError(f"{name}={raw[:40]!r} is not an integer in ASCII digits; allowed: {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range; allowed: {low}..{high}")
    return value


def _optional_abs_path_env(environ: Mapping[str, str], name: str) -> PurePosixPath | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    path = PurePosixPath(raw)
    if not path.is_absolute():
        raise ConfigError(f"{name}={raw!r} is not an absolute path; allowed: an absolute path such as /tmp/drill")
    return path


def _abs_path_env(environ: Mapping[str, str], name: str, default: str) -> PurePosixPath:
    return _optional_abs_path_env(environ, name) or PurePosixPath(default)


def _split_list(name: str, raw: str, shown: str) -> list[str]:
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{name}={shown!r} has an empty entry; allowed: comma-separated entries, no empty ones")
    if len(set(items)) != len(items):
        raise ConfigError(f"{name}={shown!r} lists an entry twice; each broker node must appear once")
    return items


def _urls_from_list(raw: str, user: str | None, password: str | None, scheme: str) -> tuple[str, ...]:
    shown = ",".join(redact_url(item.strip()) for item in raw.split(","))
    urls: list[str] = []
    for url in _split_list(ENV_BROKER_URLS, raw, shown):
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigError(
                f"{ENV_BROKER_URLS} entry {redact_url(url)!r} is not a URL ({exc}); "
                "allowed: amqp://[user:password@]host[:port][/vhost]"
            ) from None
        if parts.scheme != scheme:
            tls = f"with {ENV_BROKER_TLS_CA_FILE} set" if scheme == "amqps" else f"without {ENV_BROKER_TLS_CA_FILE}"
            raise ConfigError(
                f"{ENV_BROKER_URLS} entry {redact_url(url)!r} has scheme {parts.scheme!r}; "
                f"allowed {tls}: {scheme}://[user:password@]host[:port][/vhost]"
            )
        # The port as written: urlsplit takes ":0" (kombu then dials the default port) and
        # other scripts' digits; an AMQP port is 1..65535 in ASCII digits.
        port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        port_ok = not port_text or (_DIGITS_RE.fullmatch(port_text) is not None and 1 <= int(port_text) <= 65535)
        if not parts.hostname or not port_ok or not _HOST_RE.match(parts.hostname):
            raise ConfigError(
                f"{ENV_BROKER_URLS} entry {redact_url(url)!r} has no valid host or port; "
                "allowed: amqp://[user:password@]host[:port][/vhost], the port 1..65535"
            )
        has_creds = parts.username is not None or parts.password is not None
        if has_creds and (user is not None or password is not None):
            raise ConfigError(
                f"{ENV_BROKER_URLS} entry {redact_url(url)!r} carries credentials and "
                f"{ENV_BROKER_USER}/{ENV_BROKER_PASSWORD} are set too; give them in one place only"
            )
        if has_creds:
            if not parts.username or not parts.password:
                raise ConfigError(
                    f"{ENV_BROKER_URLS} entry {redact_url(url)!r} needs both a user and a password; "
                    "allowed: amqp://user:password@host[:port][/vhost]"
                )
            urls.append(url)
            continue
        login = _credentials(user, password, ENV_BROKER_URLS)
        urls.append(urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc}")))
    return tuple(urls)


def _urls_from_hosts(
    environ: Mapping[str, str], raw: str, user: str | None, password: str | None, scheme: str
) -> tuple[str, ...]:
    port_default = DEFAULT_BROKER_TLS_PORT if scheme == "amqps" else DEFAULT_BROKER_PORT
    default_port = _int_env(environ, ENV_BROKER_PORT, port_default, 1, 65535)
    vhost = environ.get(ENV_BROKER_VHOST, DEFAULT_BROKER_VHOST)
    if not vhost:
        raise ConfigError(f"{ENV_BROKER_VHOST}='' is empty; allowed: a RabbitMQ virtual host name such as '/'")
    login = _credentials(user, password, ENV_BROKER_HOSTS)
    urls: list[str] = []
    for entry in _split_list(ENV_BROKER_HOSTS, raw, raw):
        host, sep, port_raw = entry.partition(":")
        port = default_port
        if sep:
            if not _DIGITS_RE.fullmatch(port_raw) or not 1 <= int(port_raw) <= 65535:
                raise ConfigError(
                    f"{ENV_BROKER_HOSTS} entry {entry!r} has an invalid port; allowed: host or host:port (1..65535)"
                )
            port = int(port_raw)
        if not _HOST_RE.match(host):
            raise ConfigError(
                f"{ENV_BROKER_HOSTS} entry {entry!r} is not a valid hostname; "
                "allowed: DNS names or IPv4 addresses, optionally with :port"
            )
        urls.append(f"{scheme}://{login}@{host}:{port}/{quote(vhost, safe='')}")
    return tuple(urls)


def _credentials(user: str | None, password: str | None, form: str) -> str:
    if not user:
        raise ConfigError(
            f"{ENV_BROKER_USER}={user!r} is missing or empty; with {form} without inline credentials "
            f"set {ENV_BROKER_USER} and {ENV_BROKER_PASSWORD} (from the broker's Kubernetes Secret)"
        )
    if not password:
        raise ConfigError(
            f"{ENV_BROKER_PASSWORD} is missing or empty; with {form} without inline credentials "
            f"set {ENV_BROKER_USER} and {ENV_BROKER_PASSWORD} (from the broker's Kubernetes Secret)"
        )
    return f"{quote(user, safe='')}:{quote(password, safe='')}"


def task_queue(name: str = QUEUE_NAME) -> Queue:
    """A lane's task queue: durable, quorum-type, bound to a topic exchange of the same name."""
    # Imported here: kombu.entity costs ~0.25 s, and the liveness probe imports this module.
    from kombu import Exchange, Queue

    return Queue(
        name,
        # Topic, not direct: Celery's native delayed delivery (ETA/countdown on
        # quorum queues) only routes through topic/fanout exchanges; with a
        # direct one an ETA task would sit unacked in a worker's memory.
        Exchange(name, type="topic", durable=True),
        routing_key=name,
        durable=True,
        # Replicated over a Raft majority of the cluster: survives losing a node.
        queue_arguments={"x-queue-type": "quorum"},
    )


def ssl_options(config: AppConfig) -> dict[str, object] | bool:
    """py-amqp's ``ssl`` options (``SSLTransport._wrap_socket_sni``), False without TLS.

    ``server_hostname`` None means "each URL's host": py-amqp turns hostname checking on only
    with a name, and app.tls gives every connection its current host.
    """
    if config.tls_ca_file is None:
        return False
    return {
        "ca_certs": str(config.tls_ca_file),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": config.tls_server_name,
    }


def celery_settings(config: AppConfig, rng: random.Random) -> dict[str, object]:
    """The Celery configuration (``app.conf``) for ``config``: the zero-task-loss settings.

    ``rng`` shuffles the broker failover list (see ``AppConfig.shuffled_urls``).
    """
    return {
        # A list, not one URL: kombu fails over to the next node in order.
        "broker_url": list(config.shuffled_urls(rng)),
        # The list is already shuffled per process; round-robin then visits every node once before repeating.
        "broker_failover_strategy": "round-robin",
        # TLS: the CA only (no system CAs), a certificate required and the host checked (app.tls).
        "broker_use_ssl": ssl_options(config),
        "broker_transport_options": {
            # Without confirms a publish to a quorum queue that is mid-election or
            # rejected can vanish silently; with them every publish waits for the
            # broker's ack (the queue's majority has it) or raises.
            "confirm_publish": True,
            # Every connection of this app (workers, .delay(), the scheduler): see contract.timing.
            "socket_settings": {socket.TCP_USER_TIMEOUT: timing.TCP_USER_TIMEOUT_MS},
            # kombu gives up (re)establishing a publisher's channel after connect_timeout
            # (4 s) by default, which fails a publish outright when every node is briefly
            # down; retry as long and as patiently as the publish retry policy instead.
            "connect_retries_timeout": timing.publish_retry_total_s(),
            "max_retries": timing.PUBLISH_RETRY_MAX_RETRIES,
            "interval_start": timing.PUBLISH_RETRY_INTERVAL_START_S,
            "interval_step": timing.PUBLISH_RETRY_INTERVAL_STEP_S,
            "interval_max": timing.PUBLISH_RETRY_INTERVAL_MAX_S,
        },
        # A caller of .delay() never waits forever for a pooled connection another thread holds.
        "broker_pool_acquire_timeout": float(timing.PUBLISH_CONFIRM_TIMEOUT_S),
        # Detect a dead broker machine (timeouts, not refusals) in ~2 heartbeats.
        "broker_heartbeat": timing.BROKER_HEARTBEAT_S,
        # ... looked at once a second, so "2 heartbeats" is not stretched by the looks' spacing.
        "broker_heartbeat_checkrate": timing.BROKER_HEARTBEAT_S // timing.BROKER_HEARTBEAT_CHECK_S,
        # A dead node costs this much per connection attempt before the next URL.
        "broker_connection_timeout": timing.BROKER_CONNECT_TIMEOUT_S,
        # Keep reconnecting after losing the broker, and at start too: the broker may come up after the workers.
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        # Never give up: a worker that exits during a long outage only comes back after CrashLoopBackOff delays.
        "broker_connection_max_retries": None,
        # A channel error (queue leader moving, consumer timeout) restarts the consumer instead of killing the worker.
        "broker_channel_error_retry": True,
        # Delayed-delivery queues (ETA/countdown) must be replicated like the task queue.
        "broker_native_delayed_delivery_queue_type": "quorum",
        # Every lane's queue: declared by every client, so a task routed to any lane has somewhere
        # to go; a worker consumes only its own lane's (its Deployment's --queues).
        "task_queues": tuple(task_queue(name) for name in config.queues),
        # Tasks named by a lane's routes go to its queue; the rest to the default lane's.
        "task_routes": {pattern: {"queue": queue} for pattern, queue in config.routes},
        "task_default_queue": QUEUE_NAME,
        # Any queue Celery declares by default is a quorum queue: classic queues live on one node only.
        "task_default_queue_type": "quorum",
        "task_default_exchange": QUEUE_NAME,
        # Topic exchange: needed by native delayed delivery (see task_queue()).
        "task_default_exchange_type": "topic",
        "task_default_routing_key": QUEUE_NAME,
        # A task routed to an undeclared queue name must not create an unreplicated classic queue.
        "task_create_missing_queue_type": "quorum",
        "task_create_missing_queue_exchange_type": "topic",
        # Messages survive a broker restart (quorum queues persist anyway; this keeps classic fallbacks honest).
        "task_default_delivery_mode": "persistent",
        # Ack only after the task ran: a worker dying mid-task leaves the message to be redelivered.
        "task_acks_late": True,
        # A pool process killed mid-task (OOM, SIGKILL) requeues its message instead of acking it.
        "task_reject_on_worker_lost": True,
        # A task that raised is rejected without requeue, so the broker's dead-letter policy
        # keeps it for inspection instead of the ack silently discarding it.
        "task_acks_on_failure": False,
        # A task that hit its hard time limit is requeued (another worker may be luckier); the
        # queue's delivery-limit then dead-letters it, so a poison task cannot loop forever.
        "task_acks_on_timeout": False,
        # Bounded executions keep unacked deliveries under the broker's consumer_timeout (contract.timing).
        "task_soft_time_limit": config.soft_time_limit_s,
        "task_time_limit": config.time_limit_s,
        # Publishing retries across reconnects for longer than a failover takes (contract.timing).
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": timing.PUBLISH_RETRY_MAX_RETRIES,
            "interval_start": timing.PUBLISH_RETRY_INTERVAL_START_S,
            "interval_step": timing.PUBLISH_RETRY_INTERVAL_STEP_S,
            "interval_max": timing.PUBLISH_RETRY_INTERVAL_MAX_S,
        },
        # JSON only: pickle from a broker is remote code execution.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # No result backend (see module doc), so never try to store results.
        "result_backend": None,
        "task_ignore_result": True,
        # Few messages in flight per worker: fewer redeliveries when it dies, fair spread of long tasks.
        "worker_prefetch_multiplier": config.prefetch_multiplier,
        "worker_concurrency": config.concurrency,
        # Recycle a pool process grown past its share of the pod's memory limit (checked after each task).
        "worker_max_memory_per_child": config.max_memory_per_child_kib,
        # Quorum queues reject global QoS; Celery detects them and uses per-consumer prefetch.
        "worker_detect_quorum_queues": True,
        # After a connection loss the running tasks' acks cannot succeed (delivery tags belong
        # to the dead channel) and the broker redelivers them anyway: stop them now.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Off: Celery's soft shutdown blocks the event loop (no acks, no heartbeats) for the
        # whole timeout; SIGTERM's warm shutdown waits for running tasks safely (contract.timing).
        "worker_soft_shutdown_timeout": float(timing.SOFT_SHUTDOWN_TIMEOUT_S),
        "worker_enable_soft_shutdown_on_idle": False,
        # Remote control (celery inspect/control) stays on for operators, with an exclusive pidbox
        # queue per connection (the app's control_cls, app.failover): a failover never waits for a
        # frozen node to release the old one. Probes do not use it.
        "worker_enable_remote_control": True,
        # No task events: nothing consumes them, and each would be another message per task.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
        # The stock consumer with one step replaced (app.bootsteps.LiveDelayedDelivery).
        "worker_consumer": "app.bootsteps:Consumer",
        # Read by app.bootsteps.HealthStep (custom keys, not Celery settings).
        "ha_heartbeat_file": str(config.heartbeat_file),
        "ha_ready_file": str(config.ready_file),
        # Read by app.bootsteps.MetricsStep.
        "ha_metrics_port": config.metrics_port,
        "ha_metrics_dir": None if config.metrics_dir is None else str(config.metrics_dir),
        # Read by app.bootsteps.Consumer: a final failure's copy goes to the dead-letter queue (app.failures).
        "ha_delivery_limit": config.delivery_limit,
    }
