"""The local cluster harness against real RabbitMQ 3.10 nodes: formation, crash and restart, and the
rendered policies doing their job (poison tasks kept).

Not here any more: the seed's partition in network namespaces (a cluster of its own, ~60 s of every
``make test``). What ships is partitioned on 4.3 by the ``partition-node`` drill
(tests/drills/test_drills.py); the seed's ``partition-broker`` runs by ``make demo CONFIG=seed``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from broker import BrokerConfig
from harness.runtime.cleanup import cleanup_stale
from harness.seed.cluster import ClusterError, LocalCluster

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def connect(cluster: LocalCluster, i: int) -> Iterator[amqp.Connection]:
    conn = amqp.Connection(
        host=f"{cluster.host(i)}:{cluster.port(i)}",
        userid=cluster.user,
        password=cluster.password,
        virtual_host=cluster.vhost,
        connect_timeout=5,
    )
    conn.connect()
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def declare_quorum(channel: amqp.Channel, name: str) -> None:
    channel.queue_declare(queue=name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})


def publish_confirmed(channel: amqp.Channel, queue: str, body: bytes) -> None:
    # confirm_select: basic_publish then waits for the broker's ack (raises on nack/timeout).
    channel.confirm_select()
    channel.basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key=queue, timeout=10)


def get_within(channel: amqp.Channel, queue: str, timeout: float) -> amqp.Message | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = channel.basic_get(queue, no_ack=False)
        if message is not None:
            return message
        time.sleep(0.1)
    return None


def _get_after_failover(cluster: LocalCluster, via: int, queue: str, timeout: float) -> bytes | None:
    """Read one message, retrying while the quorum queue elects a new leader: until then the
    survivor closes the channel with INTERNAL_ERROR nodedown, which is not a loss."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with connect(cluster, via) as conn:
                message = get_within(conn.channel(), queue, timeout=5)
                if message is not None:
                    message.channel.basic_ack(message.delivery_tag)
                    body = message.body
                    return body.encode() if isinstance(body, str) else body
        except (amqp.exceptions.AMQPError, ConnectionError, OSError):
            time.sleep(0.5)
    return None


def test_three_nodes_form_one_cluster_with_user_and_policies(rabbit_cluster: LocalCluster) -> None:
    cluster = rabbit_cluster
    assert cluster.formation_seconds is not None
    assert cluster.formation_seconds < 60, f"formation took {cluster.formation_seconds:.1f}s"
    for i in range(3):
        assert cluster.running_nodes(i) == {0, 1, 2}, f"node {i} does not see all three running"
    assert not cluster.cluster_status(0).get("partitions"), "a fresh cluster reports partitions"

    users = cluster.rabbitmqctl(0, "-q", "list_users")
    assert cluster.user in users, "the conf.d default user was not seeded"
    assert "guest" not in users, "guest must not exist when default_user is set"

    cfg: BrokerConfig = cluster.broker_config(0)
    policies = cluster.rabbitmqctl(1, "-q", "list_policies")
    assert cfg.policy_name in policies, "definitions were not imported"
    assert cluster.queue_leader(cfg.dead_letter_queue) in {0, 1, 2}

    for i in range(3):
        with connect(cluster, i) as conn:
            assert conn.connected, f"cannot log in to node {i} with {cluster.url(i)}"


def test_connected_node_of_finds_the_clients_node(rabbit_cluster: LocalCluster) -> None:
    with connect(rabbit_cluster, 1) as conn:
        local_port = conn.transport.sock.getsockname()[1]
        rabbit_cluster.wait_until(
            lambda: rabbit_cluster.connected_node_of(local_port) == 1, 10, "the connection to be listed on node 1"
        )


def test_killed_leader_loses_no_message_and_rejoins(rabbit_cluster: LocalCluster) -> None:
    cluster = rabbit_cluster
    queue = "harness-ha-check"
    with connect(cluster, 0) as conn:
        channel = conn.channel()
        declare_quorum(channel, queue)
        publish_confirmed(channel, queue, b"survives")
    leader = cluster.queue_leader(queue)
    survivor = (leader + 1) % 3

    cluster.kill(leader)
    assert not cluster.is_alive(leader)
    cluster.wait_until(lambda: leader not in cluster.running_nodes(survivor), 30, f"node {leader} to be seen down")
    try:
        body = _get_after_failover(cluster, survivor, queue, timeout=60)
    finally:
        # Restart even on failure, so the module's later tests get their three nodes back.
        started = time.monotonic()
        cluster.start_node(leader)
        rejoin_s = time.monotonic() - started
    assert body == b"survives", "the confirmed message was lost with its queue leader"
    assert cluster.running_nodes(leader) == {0, 1, 2}
    assert cluster.running_nodes(survivor) == {0, 1, 2}
    assert rejoin_s < 60


def test_gracefully_stopped_node_restarts(rabbit_cluster: LocalCluster) -> None:
    cluster = rabbit_cluster
    cluster.stop_node(1)
    assert not cluster.is_alive(1)
    assert cluster.running_nodes(0) == {0, 2}
    with pytest.raises(ClusterError, match="not running"):
        cluster.kill(1)
    cluster.start_node(1)
    assert cluster.running_nodes(0) == {0, 1, 2}


def test_poison_task_is_dead_lettered_not_dropped(rabbit_node: LocalCluster) -> None:
    cluster = rabbit_node
    cfg = cluster.broker_config(0)
    queue = "harness-poison"
    with connect(cluster, 0) as conn:
        channel = conn.channel()
        declare_quorum(channel, queue)
        channel.queue_purge(cfg.dead_letter_queue)
        publish_confirmed(channel, queue, b"poison")
        applied = cluster.rabbitmqctl(0, "-q", "list_queues", "name", "policy")
        assert f"{queue}\t{cfg.policy_name}" in applied, f"policy not applied:\n{applied}"

        # A worker that dies mid-task returns the message unacked; each return counts as one
        # delivery. Past delivery_limit the queue must dead-letter it, not drop it.
        deliveries = 0
        for _ in range(cfg.delivery_limit + 5):
            consumer = conn.channel()
            if get_within(consumer, queue, timeout=2) is None:
                break
            deliveries += 1
            consumer.close()
        assert deliveries == cfg.delivery_limit + 1, f"delivered {deliveries} times"

        dead = get_within(channel, cfg.dead_letter_queue, timeout=10)
        assert dead is not None, f"the poison message is not in {cfg.dead_letter_queue}: it was dropped"
        assert dead.body == b"poison"
        headers = dead.properties.get("application_headers") or {}
        assert headers.get("x-first-death-reason") == "delivery_limit", headers
        assert headers.get("x-first-death-queue") == queue
        assert dead.delivery_tag is not None
        channel.basic_ack(dead.delivery_tag)


def test_partition_outside_netns_mode_is_refused(rabbit_node: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="netns"):
        rabbit_node.partition(0)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.usefixtures("rabbitmq_available")
def test_cleanup_stale_kills_the_nodes_of_a_crashed_harness() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hacel-crashed-"))
    # A harness SIGKILLed after start(): its nodes live on in their own sessions.
    script = (
        "import os, sys; from pathlib import Path; from harness.seed.cluster import LocalCluster;"
        "LocalCluster(Path(sys.argv[1]), nodes=1).start(); os.kill(os.getpid(), 9)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(workdir)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == -9, done.stderr
        assert _processes_mentioning(str(workdir)), "the crashed harness' node should still run"
        assert str(workdir) in cleanup_stale()
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_mentioning(str(workdir)), "cleanup_stale left the node running"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
