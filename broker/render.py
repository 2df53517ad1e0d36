"""Render a :class:`~broker.config.BrokerConfig` into the files a RabbitMQ node reads.

How the policies reach the broker, and why not at boot
------------------------------------------------------
RabbitMQ can import a definitions file on boot (``definitions.local.path`` /
``load_definitions``), but a blank node that has definitions to load skips seeding the
default vhost and user: ``rabbit:maybe_insert_default_data/0`` checks
``rabbit_definitions:has_configured_definitions_to_load/0`` and logs "Will not seed default
virtual host and user: have definitions to load..." (same code in 3.10 and 4.x; the
maintainers call it by design in rabbitmq-server#7678). The Kubernetes side gets its user from
``default_user``/``default_pass`` in a Secret-mounted conf.d file, so a boot-time import would
leave the cluster with no user at all, unless the definitions carried the user and its password
hash, which would put a credential into the ConfigMap. Verified on the local 3.10 node: with
``definitions.local.path`` set the conf.d default user is not created and the node logs the
line above (tests/integration/test_broker_3_10.py::test_boot_time_definitions_suppress_default_user).

So the definitions are applied *after* boot, idempotently, with
``rabbitmqctl import_definitions <file>`` (:func:`contract.wire.import_definitions_command`; present in 3.10
and 4.3). Runtime import never touches the default user. The file holds no secret and may live
in a ConfigMap. It declares the dead-letter exchange, the dead-letter quorum queue, its binding
and the policy in one call (``set_policy`` alone cannot declare an exchange or a queue;
:func:`policy_commands` exists for re-applying only the policy, e.g. after a change).
Checked on 3.10.8 (tests) and once by hand on Debian 13's 4.0.5 in a chroot: the 4.x rendering
(classic discovery; the 4.1+ k8s keys cannot run off Kubernetes) boots, the conf.d user exists,
the import applies ``apply-to: quorum_queues``, and a message returned 21 times lands in the
dead-letter queue with ``x-first-death-reason: delivery_limit``.

Mounting on Kubernetes
----------------------
conf.d files load after ``rabbitmq.conf`` in name order and the last value wins. On Kubernetes
``/etc/rabbitmq/conf.d`` is an emptyDir that the init container fills (:func:`setup_script`)
with the rendered ``20-ha-celery.conf`` and the Secret's ``30-default-user.conf``: the official
image's own ``conf.d/10-defaults.conf`` (``loopback_users.guest = false``, console logging) is
hidden by that mount, so nothing here relies on it, and every setting it would have made is
rendered explicitly.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from broker.config import BrokerConfig, BrokerTls, PeerDiscovery, RabbitVersion, TaskQueue
from contract import timing
from contract.wire import (
    DELAYED_DELIVERY_EXCHANGE,
    DELAYED_LEVELS,
    TLS_CA_KEY,
    delayed_level,
    import_definitions_command,
    tls_cert_key,
    tls_private_key_key,
)


@dataclass(frozen=True)
class _Setting:
    key: str
    value: str
    why: str = ""


def _fmt_float(value: float) -> str:
    # cuttlefish's float datatype needs a decimal point; repr gives the shortest exact form.
    text = repr(float(value))
    return text if "." in text or "e" in text else text + ".0"


def _settings(cfg: BrokerConfig) -> list[_Setting]:
    s: list[_Setting] = []
    add = s.append

    add(
        _Setting(
            "loopback_users.guest",
            "true",
            "guest/guest is public knowledge: it may only ever log in over loopback. RabbitMQ's default, "
            "stated so that no other file (the official image's conf.d/10-defaults.conf says false) can "
            "open it silently.",
        )
    )
    bind = cfg.bind_address
    if cfg.tls is None:
        add(_Setting("listeners.tcp.default", f"{bind}:{cfg.amqp_port}" if bind else str(cfg.amqp_port)))
    else:
        s.extend(_tls_settings(cfg, cfg.tls))
    add(_Setting("management.tcp.port", str(cfg.management_port)))
    if bind:
        add(_Setting("management.tcp.ip", bind))
    add(
        _Setting(
            "prometheus.tcp.port",
            str(cfg.prometheus_port),
            "rabbitmq_prometheus: scraped per node; the management API's stats are not a metrics pipeline.",
        )
    )
    if bind:
        add(_Setting("prometheus.tcp.ip", bind))
        add(
            _Setting(
                "distribution.listener.interface",
                bind,
                "Inter-node (Erlang distribution) traffic stays on this address too.",
            )
        )
    add(
        _Setting(
            "default_vhost",
            cfg.default_vhost,
            "Only used on a blank node: the vhost created and granted to the default user (from the Secret).",
        )
    )
    if cfg.cluster_name is not None:
        add(_Setting("cluster_name", cfg.cluster_name))

    # --- cluster formation -------------------------------------------------------------
    if cfg.peer_discovery is PeerDiscovery.K8S:
        add(
            _Setting(
                "cluster_formation.peer_discovery_backend",
                "k8s",
                "Plugin v2 (4.1+) makes no Kubernetes API call: the pod with the lowest ordinal forms the "
                "cluster, the others join it. Node names need RABBITMQ_USE_LONGNAME=true and the headless Service.",
            )
        )
        if cfg.k8s_ordinal_start is not None:
            add(
                _Setting(
                    "cluster_formation.k8s.ordinal_start",
                    str(cfg.k8s_ordinal_start),
                    "Must match the StatefulSet's spec.ordinals.start, or no pod considers itself the seed.",
                )
            )
        if cfg.k8s_seed_node is not None:
            add(_Setting("cluster_formation.k8s.seed_node", cfg.k8s_seed_node, "Overrides the lowest-ordinal rule."))
    else:
        add(
            _Setting(
                "cluster_formation.peer_discovery_backend",
                "classic_config",
                "A fixed node list: every node is known before the first boot.",
            )
        )
        for i, node in enumerate(cfg.classic_nodes, start=1):
            add(_Setting(f"cluster_formation.classic_config.nodes.{i}", node))

    if cfg.has_partition_handling:
        add(
            _Setting(
                "cluster_partition_handling",
                "pause_minority",
                "Mnesia (<= 4.2) keeps serving on both sides of a partition by default (ignore), and the "
                "sides diverge. Pausing the minority keeps one history; needs an odd cluster size. "
                "Not rendered for 4.3: Khepri (Raft) only lets the majority commit.",
            )
        )
    if cfg.net_ticktime_s is not None:
        add(
            _Setting(
                "net_ticktime",
                str(cfg.net_ticktime_s),
                "A peer that goes silent (cut link, no TCP reset) is declared down after 0.75-1.25 x this, "
                "seconds; the default 60 is too slow for the local drills.",
            )
        )

    # --- quorum queues -------------------------------------------------------------------
    add(
        _Setting(
            "queue_leader_locator",
            "balanced",
            "Spread quorum queue leaders over the nodes instead of on whichever node the declaring "
            "client happened to be connected to (client-local).",
        )
    )
    if cfg.version is RabbitVersion.V4_3:
        add(
            _Setting(
                "quorum_queue.continuous_membership_reconciliation.enabled",
                "true",
                "A pod that comes back with an empty disk rejoins without replicas; reconciliation grows "
                "every quorum queue back to the target size instead of waiting for `rabbitmq-queues grow`.",
            )
        )
        add(
            _Setting(
                "quorum_queue.continuous_membership_reconciliation.target_group_size",
                str(cfg.cluster_size),
            )
        )
        add(
            _Setting(
                "consumer_disconnected_timeout",
                str(timing.CONSUMER_DISCONNECTED_TIMEOUT_MS),
                "ms a quorum queue keeps the deliveries of a consumer on a node it lost, counted once that "
                "node is declared down (net_ticktime): 60000 by default held a dead VM's tasks ~2 min.",
            )
        )
        add(
            _Setting(
                "quorum_queue.continuous_membership_reconciliation.auto_remove",
                "false",
                "A node that is merely down (drain, reschedule) must keep its replicas; removal stays manual "
                "(forget_cluster_node).",
            )
        )

    add(
        _Setting(
            "consumer_timeout",
            str(cfg.consumer_timeout_ms),
            "ms an unacked delivery may wait. Celery acks late, so this must exceed task_time_limit x "
            "prefetch, or the broker closes the channel and redelivers a task that is still running.",
        )
    )

    # --- resources -----------------------------------------------------------------------
    if cfg.memory_available_bytes is not None:
        add(
            _Setting(
                "total_memory_available_override_value",
                str(cfg.memory_available_bytes),
                "bytes: the container's memory limit less 20% headroom (at most 2 GiB, as the cluster "
                "operator). In a container the node sees the host's RAM, so without this the watermark "
                "sits above the cgroup limit and the OOM killer wins; the headroom covers what the "
                "watermark does not count (runtime overhead, fragmentation, WAL bursts).",
            )
        )
    if cfg.wal_max_size_bytes is not None:
        add(
            _Setting(
                "raft.wal_max_size_bytes",
                str(cfg.wal_max_size_bytes),
                "bytes. Quorum queues hold the current WAL's entries in memory until it rolls over; the "
                "512 MiB default is half of a small broker's memory.",
            )
        )
    add(
        _Setting(
            "vm_memory_high_watermark.relative",
            _fmt_float(cfg.memory_high_watermark),
            "Publishers are blocked above this fraction of available memory. Set here because the 4.x "
            "image refuses RABBITMQ_VM_MEMORY_HIGH_WATERMARK.",
        )
    )
    add(
        _Setting(
            "disk_free_limit.absolute",
            str(cfg.disk_free_limit_bytes),
            "bytes. The 50 MB default leaves no headroom for quorum queue WAL bursts.",
        )
    )

    # --- logging ---------------------------------------------------------------------------
    if cfg.log_to_console:
        add(_Setting("log.console", "true", "Containers: logs go to stdout (kubectl logs)."))
        add(_Setting("log.console.level", "info"))
        add(_Setting("log.file", "false", "No log file growing on the data volume."))
    else:
        add(_Setting("log.console", "false", "Local nodes log to one file each under RABBITMQ_LOG_BASE."))
        add(_Setting("log.file.level", "info"))
    return s


def _tls_settings(cfg: BrokerConfig, tls: BrokerTls) -> list[_Setting]:
    bind = cfg.bind_address
    return [
        _Setting(
            "listeners.tcp",
            "none",
            "AMQP over TLS only: no plain listener at all, so no client (or misconfigured worker) can send "
            "credentials and tasks in clear text, not even by mistake.",
        ),
        _Setting("listeners.ssl.default", f"{bind}:{cfg.amqps_port}" if bind else str(cfg.amqps_port)),
        _Setting("ssl_options.cacertfile", tls.cacertfile),
        _Setting("ssl_options.certfile", tls.certfile),
        _Setting("ssl_options.keyfile", tls.keyfile),
        _Setting(
            "ssl_options.verify",
            "verify_none",
            "Server-side TLS: clients verify the broker (CA and hostname); the broker authenticates clients by "
            "their user and password, not by certificates. Mutual TLS would need a certificate per client pod "
            "and its rotation, for no gain over the password that travels encrypted.",
        ),
        _Setting("ssl_options.fail_if_no_peer_cert", "false"),
        _Setting("ssl_options.versions.1", "tlsv1.3", "No TLS 1.0/1.1: both are deprecated (RFC 8996)."),
        _Setting("ssl_options.versions.2", "tlsv1.2"),
    ]


def render_rabbitmq_conf(cfg: BrokerConfig) -> str:
    """The new-style (sysctl) ``rabbitmq.conf``, one commented line per setting.

    Contains no credential; safe for a ConfigMap. On Kubernetes mount it under conf.d
    (see the module docstring), the default user comes from a separate Secret file.
    """
    lines = [
        f"# Rendered by broker/ for RabbitMQ {cfg.version} ({cfg.peer_discovery} peer discovery).",
        "# Do not edit: change BrokerConfig. Comments give the reason for each non-obvious setting.",
        "",
    ]
    for setting in _settings(cfg):
        if setting.why:
            # A commented setting opens a paragraph; the plain ones after it belong to it.
            if lines[-1]:
                lines.append("")
            lines.extend(f"# {chunk}" for chunk in _wrap(setting.why))
        lines.append(f"{setting.key} = {setting.value}")
    return "\n".join(lines) + "\n"


def rabbitmq_conf_settings(cfg: BrokerConfig) -> dict[str, str]:
    """The rendered settings as key -> value (what the conf file says, without comments)."""
    return {s.key: s.value for s in _settings(cfg)}


def _wrap(text: str, width: int = 98) -> list[str]:
    words = text.split()
    out: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def enabled_plugins(cfg: BrokerConfig) -> tuple[str, ...]:
    """The plugins every node enables, sorted."""
    plugins = {"rabbitmq_management", "rabbitmq_prometheus"}
    if cfg.peer_discovery is PeerDiscovery.K8S:
        plugins.add("rabbitmq_peer_discovery_k8s")
    return tuple(sorted(plugins))


def render_enabled_plugins(cfg: BrokerConfig) -> str:
    """The ``enabled_plugins`` file: an Erlang term list, e.g. ``[a,b].`` plus a newline.

    Rendered rather than left to the image, because a peer discovery plugin must be enabled
    before the node's first boot, not with ``rabbitmq-plugins enable`` afterwards.
    """
    return "[" + ",".join(enabled_plugins(cfg)) + "].\n"


def _policy_apply_to(cfg: BrokerConfig) -> str:
    # "quorum_queues" exists from 3.12; 3.10 only knows queues/exchanges/all, which is why the
    # name pattern also keeps Celery's classic event/control queues out.
    return "quorum_queues" if cfg.version is RabbitVersion.V4_3 else "queues"


def policy_definition(cfg: BrokerConfig) -> dict[str, Any]:
    """The policy body applied to every task queue (see :func:`render_definitions`)."""
    return {
        "dead-letter-exchange": cfg.dead_letter_exchange,
        # at-most-once (the default) drops a dead-lettered message if the DLX is unreachable
        # at that moment; at-least-once keeps it in the source queue until the DLQ confirms.
        "dead-letter-strategy": "at-least-once",
        # at-least-once is only honoured with reject-publish (else it silently falls back).
        # Without a max-length it never rejects anything.
        "overflow": "reject-publish",
        # 4.x defaults to 20 and drops past it when no DLX is set; 3.10 has no limit at all,
        # so a poison task would loop forever. Same explicit value on both.
        "delivery-limit": cfg.delivery_limit,
    }


def _exchange(vhost: str, name: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "type": kind,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


def _queue(vhost: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": arguments}


def _binding(vhost: str, source: str, destination: str, kind: str, routing_key: str) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": routing_key,
        "arguments": {},
    }


def _delayed_delivery(
    vhost: str, task_queues: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Celery's native delayed-delivery topology, as kombu declares it, plus the task queues' bindings.

    Without it a countdown/eta task published before any worker has run its
    ``DelayedDelivery`` step is refused (no ``celery_delayed_27``) or, worse, confirmed and
    routed nowhere (levels present, final binding missing). A delay of ``d`` seconds travels
    down the levels: bit ``n`` of ``d`` (routing-key word ``27 - n``) set means a wait of 2^n s
    in level ``n``'s queue (its TTL dead-letters into level ``n - 1``), unset means the message
    skips straight to level ``n - 1`` by an exchange-to-exchange binding.
    ``tests/unit/broker/test_render.py`` checks every object against what kombu declares.
    """
    exchanges, queues, bindings = [], [], []
    for level in range(DELAYED_LEVELS - 1, -1, -1):
        name = delayed_level(level)
        wildcards = "*." * (DELAYED_LEVELS - 1 - level)
        exchanges.append(_exchange(vhost, name, "topic"))
        queues.append(
            _queue(
                vhost,
                name,
                {
                    "x-queue-type": "quorum",
                    "x-overflow": "reject-publish",
                    "x-message-ttl": 2**level * 1000,
                    "x-dead-letter-exchange": delayed_level(level - 1) if level else DELAYED_DELIVERY_EXCHANGE,
                    "x-dead-letter-strategy": "at-least-once",
                },
            )
        )
        bindings.append(_binding(vhost, name, name, "queue", f"{wildcards}1.#"))
        if level:
            bindings.append(_binding(vhost, name, delayed_level(level - 1), "exchange", f"{wildcards}0.#"))
    exchanges.append(_exchange(vhost, DELAYED_DELIVERY_EXCHANGE, "topic"))
    bindings.append(
        _binding(vhost, delayed_level(0), DELAYED_DELIVERY_EXCHANGE, "exchange", "*." * (DELAYED_LEVELS - 1) + "0.#")
    )
    # Each lane's task queue, its exchange and both of its bindings, exactly as the workers declare
    # them (app.config.task_queue): the delayed tail "#.<queue>" must exist before the first countdown.
    for queue in task_queues:
        delayed_key = f"#.{queue}"
        exchanges.append(_exchange(vhost, queue, "topic"))
        queues.append(_queue(vhost, queue, {"x-queue-type": "quorum"}))
        bindings += [
            _binding(vhost, queue, queue, "queue", queue),
            _binding(vhost, DELAYED_DELIVERY_EXCHANGE, queue, "exchange", delayed_key),
            _binding(vhost, queue, queue, "queue", delayed_key),
        ]
    return exchanges, queues, bindings


def _dead_letter_queue_arguments(cfg: BrokerConfig) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if cfg.version is RabbitVersion.V4_3:
        # A message arrives with the delivery count that sent it here (21 for a delivery-limit
        # dead-lettering), and the task policy does not apply to this queue: under 4.x's default
        # limit of 20 the first return of such a message (an operator's nack, a dropped
        # connection while listing) would drop it for good. -1: never.
        arguments["x-delivery-limit"] = -1
    return arguments


def render_definitions(cfg: BrokerConfig) -> dict[str, Any]:
    """Definitions JSON (as a dict) for ``rabbitmqctl import_definitions``, applied after boot.

    The dead-letter exchange (fanout, so the original routing key needs no binding), the
    dead-letter quorum queue bound to it, one policy giving every task queue the DLX,
    at-least-once dead-lettering and the delivery limit, and the task queue with Celery's
    delayed-delivery topology (:func:`_delayed_delivery`). No users, no passwords, no vhosts:
    see the module docstring for why this is not imported at boot.
    """
    vhost = cfg.default_vhost
    # On 4.3 only: the 3.10 harness also runs the seed's 2018 app, whose `celery` queue is a
    # classic one on a direct exchange, which a pre-declared quorum queue on a topic exchange of
    # the same names would refuse (PRECONDITION_FAILED). The ha workers declare it there.
    v4 = cfg.version is RabbitVersion.V4_3
    exchanges, queues, bindings = (
        _delayed_delivery(vhost, tuple(q.name for q in cfg.task_queues)) if v4 else ([], [], [])
    )
    # No "vhosts" section: the vhost exists (seeded with the default user on first boot), and
    # re-importing it could overwrite metadata such as its default queue type.
    return {
        "exchanges": [_exchange(vhost, cfg.dead_letter_exchange, "fanout"), *exchanges],
        # Replicated like the task queues: a kept poison task must survive a node loss.
        "queues": [_queue(vhost, cfg.dead_letter_queue, _dead_letter_queue_arguments(cfg)), *queues],
        "bindings": [_binding(vhost, cfg.dead_letter_exchange, cfg.dead_letter_queue, "queue", ""), *bindings],
        "policies": [
            {
                "vhost": vhost,
                "name": cfg.policy_name,
                "pattern": cfg.policy_pattern,
                "apply-to": _policy_apply_to(cfg),
                "priority": 0,
                "definition": policy_definition(cfg),
            },
            *(_lane_policy(cfg, queue) for queue in cfg.task_queues if v4),
        ],
    }


LANE_POLICY_PRIORITY = 1
"""Above the catch-all task policy: a queue takes the one policy of highest priority that matches."""


def lane_policy_name(queue: str) -> str:
    return f"lane-{queue}"


def _lane_policy(cfg: BrokerConfig, queue: TaskQueue) -> dict[str, Any]:
    """A lane's queue: the task policy's dead-letter rules, plus its own consumer timeout (4.3's
    per-queue setting, contract.lanes) and the retry backoff (contract.timing.RETRY_DELAY_MIN_MS).
    A queue gets one policy, so this one repeats the rules."""
    return {
        "vhost": cfg.default_vhost,
        "name": lane_policy_name(queue.name),
        "pattern": f"^{re.escape(queue.name)}$",
        "apply-to": _policy_apply_to(cfg),
        "priority": LANE_POLICY_PRIORITY,
        "definition": {
            **policy_definition(cfg),
            "delivery-limit": queue.delivery_limit,
            "consumer-timeout": queue.consumer_timeout_ms,
            # Failed deliveries come back after a growing pause (policy keys need 4.3.1+).
            "delayed-retry-type": "failed",
            "delayed-retry-min": timing.RETRY_DELAY_MIN_MS,
            "delayed-retry-max": timing.RETRY_DELAY_MAX_MS,
        },
    }


def render_definitions_json(cfg: BrokerConfig) -> str:
    """:func:`render_definitions` as stable, indented JSON text (what goes into the file)."""
    return json.dumps(render_definitions(cfg), indent=2, sort_keys=True) + "\n"


BOOT_DEADLINE_S = 600
"""How long a broker pod's postStart hook waits for its node to boot and take the definitions.

Longer than a whole-cluster restart takes (Khepri waits up to 10 x 30 s for its peers): a failed
hook makes the kubelet kill the container, which would throw that recovery away."""


def post_start_script(definitions_path: str, deadline_s: int = BOOT_DEADLINE_S, then: str = "") -> str:
    """The broker container's postStart hook: wait for the node, import the definitions, then ``then``.

    ``then`` (e.g. :func:`broker.users.users_script`) runs after the import and may use ``$deadline``.

    Kubernetes runs the hook as soon as the container starts, before the Erlang VM has even
    registered with epmd, and ``rabbitmqctl await_startup`` then fails at once (exit 69,
    "epmd reports: node 'rabbit' not running"); measured on the local pod runner, every pod of a
    fresh StatefulSet failed its hook that way and crash-looped for ~90 s. So both steps retry
    until ``deadline_s``; the import is idempotent.
    """
    import_argv = shlex.join(import_definitions_command(definitions_path))
    return (
        f"deadline=$(( $(date +%s) + {deadline_s} ))\n"
        "until rabbitmqctl --timeout 60 await_startup >/dev/null 2>&1; do\n"
        '  [ "$(date +%s)" -lt "$deadline" ] || { echo "node not booted in time" >&2; exit 1; }\n'
        "  sleep 2\n"
        "done\n"
        f"until {import_argv}; do\n"
        '  [ "$(date +%s)" -lt "$deadline" ] || { echo "definitions not imported in time" >&2; exit 1; }\n'
        "  sleep 2\n"
        "done\n"
        f"{then}"
    )


SEED_JOIN_WAIT_S = 20
"""How long a blank seed pod (ordinal 0, empty data volume) looks for a running peer to join
before it founds the cluster. A peer serves AMQP only once it belongs to a running cluster (a
blank peer waits for the seed without opening its listener), so on a first deployment nobody
answers and the seed founds the cluster after this wait (paid once); after the seed lost its
disk, the others answer at once and the seed joins them; after a whole-cluster restart they
answer within ~15 s (measured on the local pod runner)."""


def setup_script(
    *,
    statefulset: str,
    replicas: int,
    amqp_port: int,
    conf_source: str,
    conf_dir: str,
    data_dir: str,
    plugins_file: str,
    wait_s: int = SEED_JOIN_WAIT_S,
    tls_source: str | None = None,
    tls: BrokerTls | None = None,
) -> str:
    """The broker pod's init container: the cookie file, the conf.d files, enabled_plugins, and
    the blank-seed guard.

    ``conf_source`` holds the rendered ``*.conf`` files and ``enabled_plugins`` (read-only
    ConfigMap and Secret projections). ``enabled_plugins`` is copied to ``plugins_file`` on a
    writable volume (RABBITMQ_ENABLED_PLUGINS_FILE points there), as the cluster operator does:
    ``rabbitmq-plugins enable`` rewrites that file, and fails on a read-only mount.

    With 4.1+ k8s peer discovery the lowest ordinal founds the cluster whenever its data volume
    is empty: a rabbitmq-0 that lost its disk would start a second, one-node cluster that
    clients still reach through its per-pod name (measured on the local pod runner, 4.3.6: it
    saw only itself while the others kept it as a member with a dead quorum replica). So a blank
    seed first looks for a peer that serves AMQP and, if one does, joins it
    (``cluster_formation.k8s.seed_node``), as any other blank ordinal joins the seed.

    conf.d is copied into a writable directory for that extra file (a projected volume is
    read-only); only ``*.conf`` files, the only ones RabbitMQ reads from conf.d.

    With ``tls``: the TLS Secret (at ``tls_source``) holds every node's certificate and key under
    the pod's name (:func:`contract.wire.tls_cert_key`); this pod's pair and the CA are copied to
    the fixed paths of ``tls`` (one ConfigMap serves every pod), the key 0600. A pod without a
    pair in the Secret (scaled past the certificates) fails here, naming the missing file.
    """
    peers = " ".join(f"{statefulset}-{i}" for i in range(1, replicas))
    tls_copy = ""
    if tls is not None:
        if tls_source is None:
            raise ValueError("setup_script: tls needs tls_source (where the TLS Secret is mounted)")
        cert, key = tls_cert_key("$MY_POD_NAME"), tls_private_key_key("$MY_POD_NAME")
        tls_copy = (
            f'for f in {TLS_CA_KEY} "{cert}" "{key}"; do\n'
            f'  [ -f "{tls_source}/$f" ] || {{ echo "TLS Secret has no $f for this pod" >&2; exit 1; }}\n'
            "done\n"
            f"cp {tls_source}/{TLS_CA_KEY} {tls.cacertfile}\n"
            f'cp "{tls_source}/{cert}" {tls.certfile}\n'
            f'cp "{tls_source}/{key}" {tls.keyfile}\n'
            f"chmod 600 {tls.keyfile}\n"
        )
    return (
        "set -eu\n"
        "cp /tmp/erlang-cookie-secret/.erlang.cookie /var/lib/rabbitmq/.erlang.cookie\n"
        "chmod 600 /var/lib/rabbitmq/.erlang.cookie\n"
        f"cp {conf_source}/*.conf {conf_dir}/\n"
        f"cp {conf_source}/enabled_plugins {plugins_file}\n"
        f"{tls_copy}"
        f'if [ "${{MY_POD_NAME##*-}}" != 0 ] || ls -A {data_dir} | grep -qv "^lost+found$"; then exit 0; fi\n'
        f"deadline=$(( $(date +%s) + {wait_s} ))\n"
        'while [ "$(date +%s)" -lt "$deadline" ]; do\n'
        f"  for peer in {peers}; do\n"
        f'    if timeout 2 bash -c "exec 3<>/dev/tcp/$peer$K8S_HOSTNAME_SUFFIX/{amqp_port}" 2>/dev/null; then\n'
        '      echo "blank seed: joining the running cluster of $peer"\n'
        '      echo "cluster_formation.k8s.seed_node = rabbit@$peer$K8S_HOSTNAME_SUFFIX" \\\n'
        f"        > {conf_dir}/90-join-peer.conf\n"
        "      exit 0\n"
        "    fi\n"
        "  done\n"
        "  sleep 2\n"
        "done\n"
        'echo "blank seed: no running peer, founding the cluster"\n'
    )


def render_default_user_conf(username: str, password: str) -> str:
    """The conf.d file that seeds the default user on a blank node (``30-default-user.conf``).

    Kept out of :func:`render_rabbitmq_conf` on purpose: it is the one rendered file with a secret
    in it, so it goes into a Secret (Kubernetes) or a 0600 file (the harness), never a ConfigMap.
    """
    return f"default_user = {username}\ndefault_pass = {password}\n"


def policy_commands(cfg: BrokerConfig) -> list[list[str]]:
    """``rabbitmqctl set_policy`` argv that (re)apply the same policies at runtime.

    Only the policies: the dead-letter exchange and queue need :func:`contract.wire.import_definitions_command`.
    """
    return [
        [
            "rabbitmqctl",
            "set_policy",
            "-p",
            policy["vhost"],
            "--apply-to",
            policy["apply-to"],
            "--priority",
            str(policy["priority"]),
            policy["name"],
            policy["pattern"],
            json.dumps(policy["definition"], sort_keys=True),
        ]
        for policy in render_definitions(cfg)["policies"]
    ]
