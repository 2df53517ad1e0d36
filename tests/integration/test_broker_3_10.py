"""broker/ against a real RabbitMQ 3.10 (Debian's rabbitmq-server): every rendered key is in the
installed schema, and a node booted from the rendered files runs with them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import policy_definition, rabbitmq_conf_settings, render_definitions
from harness.seed.cluster import LocalCluster
from tests.integration.conftest import cluster_workdir
from tests.requires import requires
from tests.unit.broker.test_render import GIB, local

pytestmark = pytest.mark.integration

SCHEMA_ROOT = Path("/usr/lib/rabbitmq/lib")


def _schema_mappings() -> list[re.Pattern[str]]:
    patterns = []
    for schema in SCHEMA_ROOT.glob("rabbitmq_server-3.10.*/plugins/*/priv/schema/*.schema"):
        for key in re.findall(r'\{mapping, "([^"]+)"', schema.read_text(errors="replace")):
            patterns.append(re.compile(re.sub(r"\\\$[a-z_]+", "[^.]+", re.escape(key)) + "$"))
    return patterns


def test_every_3_10_key_exists_in_the_installed_schema() -> None:
    requires("rabbitmq-server")
    patterns = _schema_mappings()
    assert patterns
    cfg = local(net_ticktime_s=10, cluster_name="c", memory_limit_bytes=GIB, bind_address="127.0.0.1")
    unknown = [k for k in rabbitmq_conf_settings(cfg) if not any(p.match(k) for p in patterns)]
    assert not unknown, f"keys unknown to RabbitMQ 3.10 (the node would refuse to boot): {unknown}"


@pytest.fixture
def workdir() -> Iterator[Path]:
    requires("rabbitmq-server")
    path = cluster_workdir("broker-test")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listen_addresses() -> dict[int, set[str]]:
    """port -> addresses with a listening TCP socket, from /proc/net/tcp{,6}."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            address, state = row.split()[1], row.split()[3]
            if state != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = address.split(":")
            if len(addr_hex) == 8:
                addr = ".".join(str(b) for b in reversed(bytes.fromhex(addr_hex)))
            else:
                addr = "::" if set(addr_hex) == {"0"} else addr_hex
            found.setdefault(int(port_hex, 16), set()).add(addr)
    return found


def _flat(text: str) -> str:
    # Whitespace and atom quotes depend on Erlang's pretty-printer, not on the value.
    return re.sub(r"[\s']+", "", text)


def test_rendered_config_takes_effect_on_a_real_3_10_node(workdir: Path) -> None:
    overrides = {"memory_limit_bytes": 2 * GIB, "consumer_timeout_ms": 1_234_000, "delivery_limit": 7}
    with LocalCluster(workdir, nodes=1, config=overrides) as node:
        cfg = node.broker_config(0)
        env = _flat(
            node.rabbitmqctl(
                0,
                "eval",
                "[{K, application:get_env(rabbit, K)} || K <- [consumer_timeout, queue_leader_locator,"
                " cluster_partition_handling, loopback_users, vm_memory_high_watermark,"
                " total_memory_available_override_value, disk_free_limit, cluster_nodes]]"
                " ++ [{net_ticktime, net_kernel:get_net_ticktime()},"
                " {wal_max_size_bytes, application:get_env(ra, wal_max_size_bytes)},"
                " {total_memory, vm_memory_monitor:get_total_memory()},"
                " {apps, [A || {A, _, _} <- application:which_applications()]}].",
            )
        )
        expected = [
            "{consumer_timeout,{ok,1234000}}",
            '{queue_leader_locator,{ok,<<"balanced">>}}',
            "{cluster_partition_handling,{ok,pause_minority}}",
            '{loopback_users,{ok,[<<"guest">>]}}',
            "{vm_memory_high_watermark,{ok,0.6}}",
            # 80% of the limit: what the node is told it has (cfg.memory_available_bytes).
            f"{{total_memory_available_override_value,{{ok,{2 * GIB - 2 * GIB // 5}}}}}",
            "{disk_free_limit,{ok,1000000000}}",
            f"{{cluster_nodes,{{ok,{{[{node.node_names()[0]}],disc}}}}}}",
            "{net_ticktime,10}",
            f"{{total_memory,{2 * GIB - 2 * GIB // 5}}}",
            f"{{wal_max_size_bytes,{{ok,{64 * 1024 * 1024}}}}}",
        ]
        for item in expected:
            assert item in env, f"{item} not in the node's environment:\n{env}"
        assert "rabbitmq_management" in env
        assert "rabbitmq_prometheus" in env
        assert "rabbitmq_peer_discovery_k8s" not in env

        # rabbitmq-diagnostics reports cowboy listeners as [::]; the kernel knows the truth.
        listening = _listen_addresses()
        for port in (cfg.amqp_port, cfg.management_port, cfg.prometheus_port, node.node_info(0).dist_port):
            assert listening.get(port) == {"127.0.0.1"}, f"port {port} listens on {listening.get(port)}"

        policies = json.loads(node.rabbitmqctl(0, "-q", "list_policies", "--formatter", "json"))
        (policy,) = policies
        assert policy["name"] == cfg.policy_name
        assert policy["apply-to"] == "queues"
        assert json.loads(policy["definition"]) == policy_definition(cfg) | {"delivery-limit": 7}

        users = node.rabbitmqctl(0, "-q", "list_users")
        assert node.user in users, "the default user from conf.d was not created"


def test_boot_time_definitions_suppress_default_user(workdir: Path) -> None:
    """Why the definitions are imported after boot: importing them at boot (the documented
    "recommended" way) makes a blank node skip the default user that Kubernetes gives it
    (and the default vhost: without a "vhosts" section the node does not even boot)."""
    defs = workdir / "boot-definitions.json"
    cfg = local()
    defs.write_text(json.dumps({"vhosts": [{"name": cfg.default_vhost}], **render_definitions(cfg)}))
    defs.chmod(0o644)
    extra = f"definitions.import_backend = local_filesystem\ndefinitions.local.path = {defs}\n"
    with LocalCluster(workdir, nodes=1, extra_conf=extra) as node:
        users = node.rabbitmqctl(0, "-q", "list_users")
        assert node.user not in users, "default user created despite boot-time definitions"
        log = node.node_info(0).log_file.read_text()
        assert "Will not seed default virtual host and user: have definitions to load" in log
