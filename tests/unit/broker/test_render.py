"""broker/: the rendered rabbitmq.conf, plugins and definitions per version (fast, no broker;
tests/integration/test_broker_3_10.py boots a real RabbitMQ 3.10 node from them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from unittest import mock

import pytest

from broker import (
    BrokerConfig,
    PeerDiscovery,
    RabbitVersion,
    TaskQueue,
    enabled_plugins,
    policy_commands,
    policy_definition,
    rabbitmq_conf_settings,
    render_definitions,
    render_definitions_json,
    render_enabled_plugins,
    render_rabbitmq_conf,
)
from contract import timing
from contract.wire import DELAYED_LEVELS

NODES = ("rabbit@n0", "rabbit@n1", "rabbit@n2")
SCHEMA_ROOT = Path("/usr/lib/rabbitmq/lib")
GIB = 1024**3


def k8s(**kw: object) -> BrokerConfig:
    return BrokerConfig(version=RabbitVersion.V4_3, peer_discovery=PeerDiscovery.K8S, **kw)  # type: ignore[arg-type]


def local(**kw: object) -> BrokerConfig:
    return BrokerConfig(
        version=RabbitVersion.V3_10,
        peer_discovery=PeerDiscovery.CLASSIC,
        classic_nodes=NODES,
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- rabbitmq.conf ----


def test_4_3_on_kubernetes_uses_k8s_discovery_and_no_partition_handling() -> None:
    conf = rabbitmq_conf_settings(k8s(memory_limit_bytes=2 * GIB))
    assert conf["cluster_formation.peer_discovery_backend"] == "k8s"
    assert "cluster_partition_handling" not in conf, "Khepri (4.3) has no partition strategy to choose"
    assert not [k for k in conf if k.startswith("cluster_formation.classic_config")]
    assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert conf["quorum_queue.continuous_membership_reconciliation.target_group_size"] == "3"
    assert conf["quorum_queue.continuous_membership_reconciliation.auto_remove"] == "false"
    # A lost consumer's deliveries back 10 s after its node is declared down, not 60 (4.x's default).
    assert conf["consumer_disconnected_timeout"] == "10000"
    assert conf["total_memory_available_override_value"] == str(2 * GIB - 2 * GIB // 5)
    assert conf["log.console"] == "true"
    assert conf["log.file"] == "false"
    assert "cluster_formation.k8s.ordinal_start" not in conf


@pytest.mark.parametrize(
    ("limit", "available", "wal"),
    [
        (GIB, GIB - GIB // 5, 64 * 1024**2),
        (2 * GIB, 2 * GIB - 2 * GIB // 5, 64 * 1024**2),
        (4 * GIB, 4 * GIB - 4 * GIB // 5, None),
        # The headroom stops growing at 2 GiB, as the cluster operator's.
        (20 * GIB, 18 * GIB, None),
    ],
    ids=["1GiB", "2GiB", "4GiB", "20GiB"],
)
def test_memory_headroom_and_quorum_wal_size(limit: int, available: int, wal: int | None) -> None:
    """RabbitMQ is told 80% of the limit, and a small broker's quorum WAL (held in memory) stays small."""
    conf = rabbitmq_conf_settings(k8s(memory_limit_bytes=limit))
    assert int(conf["total_memory_available_override_value"]) == available
    assert available >= limit * 0.8 or limit - available == 2 * GIB
    # The watermark applies to what RabbitMQ was told, so blocking starts well inside the cgroup limit.
    assert available * float(conf["vm_memory_high_watermark.relative"]) <= 0.6 * limit
    if wal is None:
        assert "raft.wal_max_size_bytes" not in conf, "RabbitMQ's default (512 MiB) for large brokers"
    else:
        assert conf["raft.wal_max_size_bytes"] == str(wal)
        # The WAL's memory tables must fit beside the watermark with room to spare.
        assert wal <= (limit - available) // 2


def test_3_10_local_uses_classic_config_and_pause_minority() -> None:
    conf = rabbitmq_conf_settings(local())
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert [conf[f"cluster_formation.classic_config.nodes.{i}"] for i in (1, 2, 3)] == list(NODES)
    assert conf["cluster_partition_handling"] == "pause_minority"
    # 3.10's schema has no such keys: rendering them would stop the node at boot.
    assert not [k for k in conf if k.startswith(("quorum_queue.", "cluster_formation.k8s"))]
    assert "consumer_disconnected_timeout" not in conf
    assert "total_memory_available_override_value" not in conf
    assert "raft.wal_max_size_bytes" not in conf, "no memory limit locally: RabbitMQ's default WAL"


@pytest.mark.parametrize("cfg", [k8s(), local()], ids=["4.3-k8s", "3.10-classic"])
def test_settings_common_to_both_versions(cfg: BrokerConfig) -> None:
    conf = rabbitmq_conf_settings(cfg)
    assert conf["loopback_users.guest"] == "true"
    assert conf["listeners.tcp.default"] == "5672"
    assert conf["management.tcp.port"] == "15672"
    assert conf["prometheus.tcp.port"] == "15692"
    assert conf["queue_leader_locator"] == "balanced"
    assert conf["consumer_timeout"] == str(cfg.consumer_timeout_ms)
    assert conf["vm_memory_high_watermark.relative"] == "0.6"
    assert conf["disk_free_limit.absolute"] == "1000000000"
    assert conf["default_vhost"] == "/"


def test_k8s_ordinal_start_and_seed_node() -> None:
    conf = rabbitmq_conf_settings(k8s(k8s_ordinal_start=1, k8s_seed_node="rabbit@rmq-1.rmq-nodes.ns.svc.cluster.local"))
    assert conf["cluster_formation.k8s.ordinal_start"] == "1"
    assert conf["cluster_formation.k8s.seed_node"] == "rabbit@rmq-1.rmq-nodes.ns.svc.cluster.local"


def test_bind_address_pins_every_listener() -> None:
    conf = rabbitmq_conf_settings(local(bind_address="127.0.0.1", amqp_port=25000))
    assert conf["listeners.tcp.default"] == "127.0.0.1:25000"
    assert conf["management.tcp.ip"] == "127.0.0.1"
    assert conf["prometheus.tcp.ip"] == "127.0.0.1"
    assert conf["distribution.listener.interface"] == "127.0.0.1"
    assert "management.tcp.ip" not in rabbitmq_conf_settings(k8s())


def test_optional_settings_render_only_when_set() -> None:
    conf = rabbitmq_conf_settings(local(net_ticktime_s=10, cluster_name="drill", memory_high_watermark=0.4))
    assert conf["net_ticktime"] == "10"
    assert conf["cluster_name"] == "drill"
    assert conf["vm_memory_high_watermark.relative"] == "0.4"
    assert "net_ticktime" not in rabbitmq_conf_settings(local())
    assert "cluster_name" not in rabbitmq_conf_settings(local())


@pytest.mark.parametrize("cfg", [k8s(memory_limit_bytes=GIB, cluster_name="x"), local(net_ticktime_s=5)])
def test_rendered_file_is_commented_key_value_lines_without_secrets(cfg: BrokerConfig) -> None:
    text = render_rabbitmq_conf(cfg)
    keys = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z0-9_.]+) = (\S+)", line)
        assert match, f"not a sysctl-style line: {line!r}"
        keys.append(match[1])
    assert len(keys) == len(set(keys)), "a key is rendered twice"
    assert keys == list(rabbitmq_conf_settings(cfg)), "the file and the settings view disagree"
    assert "default_pass" not in text
    assert "default_user" not in text
    # The non-obvious lines carry their reason right above them.
    commented = (
        "loopback_users.guest",
        "consumer_timeout",
        "queue_leader_locator",
        "vm_memory_high_watermark.relative",
    )
    for key in commented:
        before = text.split(f"\n{key} = ")[0].splitlines()[-1]
        assert before.startswith("# "), f"{key} has no comment saying why"


# ---------------------------------------------------------------- plugins ----


def test_plugins_per_discovery() -> None:
    assert render_enabled_plugins(k8s()) == ("[rabbitmq_management,rabbitmq_peer_discovery_k8s,rabbitmq_prometheus].\n")
    assert render_enabled_plugins(local()) == "[rabbitmq_management,rabbitmq_prometheus].\n"
    assert "rabbitmq_peer_discovery_k8s" not in enabled_plugins(local())


# ---------------------------------------------------------------- definitions ----


@pytest.mark.parametrize(("cfg", "apply_to"), [(k8s(), "quorum_queues"), (local(), "queues")], ids=["4.3", "3.10"])
def test_definitions_keep_poison_tasks_in_a_dead_letter_queue(cfg: BrokerConfig, apply_to: str) -> None:
    defs = render_definitions(cfg)
    assert set(defs) == {"exchanges", "queues", "bindings", "policies"}, "no users, permissions or vhosts"
    exchange = defs["exchanges"][0]
    assert exchange == {
        "name": "celery.dlx",
        "vhost": "/",
        "type": "fanout",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }
    queue = defs["queues"][0]
    assert queue["name"] == "celery.dlq"
    assert queue["durable"] is True
    # 4.x counts deliveries on every quorum queue (default limit 20); the DLQ must never drop.
    limit = {"x-delivery-limit": -1} if apply_to == "quorum_queues" else {}
    assert queue["arguments"] == {"x-queue-type": "quorum", **limit}
    binding = defs["bindings"][0]
    assert (binding["source"], binding["destination"], binding["destination_type"]) == (
        "celery.dlx",
        "celery.dlq",
        "queue",
    )
    policy, *lane_policies = defs["policies"]
    assert policy["apply-to"] == apply_to
    assert policy["vhost"] == "/"
    dead_letter_rules = {
        "dead-letter-exchange": "celery.dlx",
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
        "delivery-limit": 20,
    }
    assert policy["definition"] == dead_letter_rules
    if apply_to == "quorum_queues":
        # 4.3: the task queue's own policy wins (priority 1) and keeps the same dead-letter rules.
        (lane,) = lane_policies
        assert (lane["name"], lane["pattern"], lane["priority"]) == ("lane-celery", "^celery$", 1)
        assert lane["definition"] == {
            **dead_letter_rules,
            "consumer-timeout": timing.CONSUMER_TIMEOUT_MS,
            "delayed-retry-type": "failed",
            "delayed-retry-min": timing.RETRY_DELAY_MIN_MS,
            "delayed-retry-max": timing.RETRY_DELAY_MAX_MS,
        }
    else:
        assert lane_policies == [], "3.10 has no per-queue consumer timeout nor delayed retry"
    assert json.loads(render_definitions_json(cfg)) == defs


def _kombu_topology() -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str, str, str]]]:
    """What kombu (and a worker's DelayedDelivery step) declares, recorded from a fake channel."""
    from kombu.transport.native_delayed_delivery import (
        bind_queue_to_native_delayed_delivery_exchange,
        declare_native_delayed_delivery_exchanges_and_queues,
    )

    from app.config import task_queue

    channel = mock.MagicMock()
    connection = mock.MagicMock()
    connection.channel.return_value = channel
    # What py-amqp's channel does with queue arguments: hands them on unchanged.
    channel.prepare_queue_arguments.side_effect = lambda arguments, **_: dict(arguments)
    declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
    bind_queue_to_native_delayed_delivery_exchange(connection, task_queue())
    task_queue().bind(channel).declare()
    exchanges = {(c.kwargs["exchange"], c.kwargs["type"]) for c in channel.exchange_declare.call_args_list}
    queues = {
        (c.kwargs["queue"], json.dumps(c.kwargs["arguments"], sort_keys=True))
        for c in channel.queue_declare.call_args_list
    }
    bindings = {
        (c.kwargs["exchange"], c.kwargs["queue"], "queue", c.kwargs["routing_key"])
        for c in channel.queue_bind.call_args_list
    } | {
        (c.kwargs["source"], c.kwargs["destination"], "exchange", c.kwargs["routing_key"])
        for c in channel.exchange_bind.call_args_list
    }
    return exchanges, queues, bindings


def test_3_10_definitions_leave_the_task_queue_to_its_app() -> None:
    """The 3.10 harness also boots the seed, whose 2018 app declares `celery` classic and direct."""
    defs = render_definitions(local())
    assert [q["name"] for q in defs["queues"]] == ["celery.dlq"]
    assert [e["name"] for e in defs["exchanges"]] == ["celery.dlx"]


def test_definitions_declare_what_celery_and_kombu_declare_for_delayed_tasks() -> None:
    """A countdown task published before any worker started finds every level and binding."""
    defs = render_definitions(k8s())
    exchanges, queues, bindings = _kombu_topology()
    assert len(queues) == DELAYED_LEVELS + 1, "28 levels and the task queue"
    assert exchanges <= {(e["name"], e["type"]) for e in defs["exchanges"]}
    assert queues <= {(q["name"], json.dumps(q["arguments"], sort_keys=True)) for q in defs["queues"]}
    assert bindings <= {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in defs["bindings"]
    }
    assert all(e["durable"] and not e["auto_delete"] for e in defs["exchanges"])
    assert all(q["durable"] and not q["auto_delete"] for q in defs["queues"])


@pytest.mark.parametrize("name", ["celery", "default", "tasks.high", "celery.count", "celery-dlq"])
def test_policy_pattern_covers_task_queues(name: str) -> None:
    assert re.search(local().policy_pattern, name), name


@pytest.mark.parametrize(
    "name",
    [
        "celeryev.5f1c0f5e-4d3c-4b0a-9f43-3b2c8a4f5e21",
        "celery@worker-0.celery.pidbox",
        "7b6a1c2e-0f5d-3c2b-8a7e-6d5c4b3a2f10.reply.celery.pidbox",
        "celery_delayed_27",
        "celery_delayed_0",
        "celery.dlq",
    ],
)
def test_policy_pattern_skips_celery_internal_queues_and_the_dlq(name: str) -> None:
    assert not re.search(local().policy_pattern, name), name


def test_policy_pattern_follows_a_renamed_dead_letter_queue() -> None:
    cfg = local(dead_letter_queue="tasks.dead")
    assert not re.search(cfg.policy_pattern, "tasks.dead")
    assert re.search(cfg.policy_pattern, "celery.dlq")


def test_policy_commands_match_the_definitions() -> None:
    cfg = k8s(task_queues=(TaskQueue("celery", 1_800_000), TaskQueue("celery.long", 7_260_000)))
    commands = policy_commands(cfg)
    policies = render_definitions(cfg)["policies"]
    assert len(commands) == len(policies) == 3, "the catch-all policy, then one per lane's queue"
    (*head, name, pattern, body) = commands[0]
    assert head == ["rabbitmqctl", "set_policy", "-p", "/", "--apply-to", "quorum_queues", "--priority", "0"]
    assert (name, pattern) == (cfg.policy_name, cfg.policy_pattern)
    assert json.loads(body) == policy_definition(cfg)
    for command, policy in zip(commands[1:], policies[1:], strict=True):
        assert command[-4:-3] == [str(policy["priority"])]
        assert command[-3:-1] == [policy["name"], policy["pattern"]]
        assert json.loads(command[-1]) == policy["definition"]
    assert json.loads(commands[2][-1])["consumer-timeout"] == 7_260_000
    assert re.search(commands[2][-2], "celery.long")
    assert not re.search(commands[2][-2], "celery.longer")


def test_each_lane_queue_is_declared_with_its_delayed_delivery_bindings() -> None:
    cfg = k8s(task_queues=(TaskQueue("celery", 1_800_000), TaskQueue("celery.long", 7_260_000)))
    defs = render_definitions(cfg)
    for queue in ("celery", "celery.long"):
        assert {
            "name": queue,
            "vhost": "/",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-queue-type": "quorum"},
        } in defs["queues"]
        routes = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
        assert {
            (queue, queue, queue),
            ("celery_delayed_delivery", queue, f"#.{queue}"),
            (queue, queue, f"#.{queue}"),
        } <= routes


@pytest.mark.parametrize(
    "queues",
    [
        (TaskQueue("celery.long", 7_260_000),),
        (TaskQueue("celery", 1_800_000), TaskQueue("celery", 1_800_000)),
        (TaskQueue("celery", 1_800_000), TaskQueue("celery.x", 59_999)),
        (TaskQueue("celery", 1_800_000), TaskQueue("celery.dlq", 1_800_000)),
    ],
)
def test_bad_task_queues_are_refused(queues: tuple[TaskQueue, ...]) -> None:
    with pytest.raises(ValueError, match="task_queues"):
        k8s(task_queues=queues)


# ---------------------------------------------------------------- validation ----


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": RabbitVersion.V3_10, "peer_discovery": PeerDiscovery.K8S}, "needs version 4.3"),
        ({"version": RabbitVersion.V3_10, "peer_discovery": PeerDiscovery.CLASSIC}, "needs classic_nodes"),
        (
            {"version": RabbitVersion.V3_10, "peer_discovery": PeerDiscovery.CLASSIC, "classic_nodes": NODES[:2]},
            "cluster_size=3 but 2",
        ),
        (
            {"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "classic_nodes": NODES},
            "only used with",
        ),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "cluster_size": 4}, "must be odd"),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "memory_high_watermark": 1.2}, "0.9"),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "management_port": 5672}, "differ"),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "bind_address": "localhost"}, "IPv4"),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "consumer_timeout_ms": 5}, ">= 60000"),
        ({"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "delivery_limit": 0}, "delivery_limit"),
        (
            {"version": RabbitVersion.V4_3, "peer_discovery": PeerDiscovery.K8S, "excluded_queue_patterns": ("(",)},
            "not a regex",
        ),
        (
            {
                "version": RabbitVersion.V3_10,
                "peer_discovery": PeerDiscovery.CLASSIC,
                "classic_nodes": NODES,
                "k8s_ordinal_start": 0,
            },
            "need peer_discovery=k8s",
        ),
    ],
)
def test_invalid_configs_name_the_problem(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


def test_default_consumer_timeout_outlasts_the_workers() -> None:
    cfg = k8s()
    assert cfg.consumer_timeout_ms >= timing.MIN_CONSUMER_TIMEOUT_MS
    assert timing.worst_unacked_s(timing.MAX_PREFETCH_MULTIPLIER) * 1000 < cfg.consumer_timeout_ms
    assert timing.worst_unacked_s(2, task_time_limit_s=1000) * 1000 > cfg.consumer_timeout_ms
