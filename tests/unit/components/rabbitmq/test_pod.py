"""The broker pod: names, probes, shutdown, boot hooks, scheduling, resources, security, writable paths."""

from __future__ import annotations

import re

from components.rabbitmq.pod import READINESS_PATH
from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    broker_config_map,
    broker_container,
    env,
    pod,
    statefulset,
)


def test_long_node_names_from_headless_dns(plan: Plan) -> None:
    variables = env(broker_container(plan))
    assert variables["RABBITMQ_USE_LONGNAME"] == "true"
    assert (
        variables["RABBITMQ_NODENAME"]
        == "rabbit@$(MY_POD_NAME).$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE).svc.cluster.local"
    )
    assert variables["K8S_SERVICE_NAME"] == statefulset(plan)["spec"]["serviceName"]
    assert "RABBITMQ_ERLANG_COOKIE" not in variables, "the cookie env var is deprecated: mount a file"


def test_probes_and_shutdown(plan: Plan) -> None:
    container = broker_container(plan)
    # The node's own HTTP answer: a frozen node's kernel still completes a TCP connect.
    readiness = container["readinessProbe"]
    assert "tcpSocket" not in readiness
    assert readiness["httpGet"] == {"port": "prometheus", "path": READINESS_PATH}
    assert {"name": "prometheus", "containerPort": 15692} in container["ports"]
    assert READINESS_PATH == "/metrics/detailed", "no family asked for: the identity only, no peer asked"
    assert readiness["timeoutSeconds"] < readiness["periodSeconds"]
    assert "livenessProbe" not in container
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "await_online_quorum_plus_one" in pre_stop
    assert pre_stop.index("await_online_quorum_plus_one") < pre_stop.index("drain")
    grace = pod(plan)["terminationGracePeriodSeconds"]
    assert 60 <= grace <= 3600, "finite grace period"
    timeouts = [int(w) for w in pre_stop.split() if w.isdigit()]
    assert len(timeouts) == 2
    # The two waits run one after the other, and the kubelet counts the grace from the hook's start.
    assert sum(timeouts) + 60 <= grace, f"preStop may wait {sum(timeouts)} s of a {grace} s grace period"


def test_definitions_applied_after_boot(plan: Plan) -> None:
    post_start = " ".join(broker_container(plan)["lifecycle"]["postStart"]["exec"]["command"])
    assert "import_definitions /etc/ha-celery/definitions.json" in post_start
    # The hook starts before the Erlang VM registers with epmd: a single await_startup fails at once
    # there and a failed hook kills the container, so it must retry (tests/integration/kube/test_runner.py boots it).
    assert "until rabbitmqctl --timeout 60 await_startup" in post_start
    mounts = {m["mountPath"]: m["name"] for m in broker_container(plan)["volumeMounts"]}
    assert mounts["/etc/ha-celery"] == "ha-celery-files"
    # The hook's deadline must outlast a whole-cluster restart, in which Khepri waits for its
    # peers up to 10 x 30 s: a hook that gives up kills the container and throws that wait away.
    [deadline] = re.findall(r"deadline=\$\(\( \$\(date \+%s\) \+ (\d+) \)\)", post_start)
    assert int(deadline) >= 10 * 30 + 120, f"{plan.stack}: postStart gives up after {deadline} s"


def test_anti_affinity_and_zone_spread(plans: dict[str, Plan]) -> None:
    prod_affinity = pod(plans["prod"])["affinity"]["podAntiAffinity"]
    [term] = prod_affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    dev_affinity = pod(plans["dev"])["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in dev_affinity
    assert dev_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    for stack, mode in (("prod", "DoNotSchedule"), ("dev", "ScheduleAnyway")):
        [spread] = pod(plans[stack])["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["whenUnsatisfiable"] == mode, stack


def test_resources_and_memory_override(plans: dict[str, Plan]) -> None:
    for stack, plan in plans.items():
        spec = pod(plan)
        for container in spec["containers"] + spec["initContainers"]:
            # Pod QoS is Guaranteed only if every container, init ones included, has requests = limits.
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], f"{stack}: {container['name']}: Guaranteed QoS"
        limit = int(broker_container(plan)["resources"]["limits"]["memory"].removesuffix("Mi")) * 1024 * 1024
        conf = broker_config_map(plan)["data"]["20-ha-celery.conf"]
        # 20% headroom below the container limit (the cluster operator's), and a small quorum WAL.
        assert f"total_memory_available_override_value = {limit - limit // 5}" in conf, stack
        assert limit <= 2 * 1024**3
        assert f"raft.wal_max_size_bytes = {64 * 1024 * 1024}" in conf, stack
    assert broker_container(plans["prod"])["resources"]["limits"]["memory"] == "2048Mi"


def test_non_root_and_pinned_image(plan: Plan) -> None:
    spec = pod(plan)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False, "4.1+ peer discovery needs no API access"
    for container in spec["containers"] + spec["initContainers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # Writable only where a volume is mounted (the pod runner enforces it in every drill).
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"].startswith("rabbitmq:4.3.")
        assert container["image"].split(":")[1].count(".") == 2
    assert not plan.objects("Role"), "no RBAC: 4.3 peer discovery makes no API calls"


def test_blank_seed_joins_a_running_peer_instead_of_founding_a_cluster(plan: Plan) -> None:
    """A rabbitmq-0 that lost its disk must not found a second cluster (the lose-disk drill boots it)."""
    spec = pod(plan)
    [setup] = spec["initContainers"]
    script = setup["command"][-1]
    assert setup["command"][:2] == ["bash", "-c"], "the peer check uses bash's /dev/tcp"
    assert "cluster_formation.k8s.seed_node = rabbit@$peer$K8S_HOSTNAME_SUFFIX" in script
    replicas = statefulset(plan)["spec"]["replicas"]
    assert f"for peer in {' '.join(f'rabbitmq-{i}' for i in range(1, replicas))}; do" in script
    assert {e["name"] for e in setup["env"]} >= {"MY_POD_NAME", "K8S_HOSTNAME_SUFFIX"}
    mounts = {m["mountPath"]: m["name"] for m in setup["volumeMounts"]}
    assert mounts["/var/lib/rabbitmq/mnesia"] == "persistence", "the guard must see the data volume"
    # conf.d is writable and shared: the setup step copies the rendered files in and may add one.
    assert mounts["/etc/rabbitmq/conf.d"] == "rabbitmq-confd"
    assert {m["mountPath"]: m["name"] for m in broker_container(plan)["volumeMounts"]}["/etc/rabbitmq/conf.d"] == (
        "rabbitmq-confd"
    )
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["rabbitmq-confd"]
    assert "projected" in volumes["rabbitmq-confd-source"]


def test_enabled_plugins_file_is_writable(plan: Plan) -> None:
    """`rabbitmq-plugins enable` rewrites RABBITMQ_ENABLED_PLUGINS_FILE: it must not sit on a read-only mount."""
    spec = pod(plan)
    volumes = {v["name"]: v for v in spec["volumes"]}
    plugins_file = env(broker_container(plan))["RABBITMQ_ENABLED_PLUGINS_FILE"]
    directory = plugins_file.rsplit("/", 1)[0]
    mounts = {m["mountPath"]: m["name"] for m in broker_container(plan)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[directory]], f"{plugins_file} is not on a writable volume"
    [setup] = spec["initContainers"]
    setup_mounts = {m["mountPath"]: m["name"] for m in setup["volumeMounts"]}
    assert setup_mounts[directory] == mounts[directory], "the init container fills the same volume"
    source = "/etc/ha-celery/conf.d"
    assert f"cp {source}/enabled_plugins {plugins_file}" in setup["command"][-1]
    projected = volumes[setup_mounts[source]]["projected"]["sources"]
    items = [i["path"] for s in projected for i in s.get("configMap", {}).get("items", [])]
    assert "enabled_plugins" in items
    # conf.d gets only the *.conf files: the plugins list is no config file.
    assert f"cp {source}/*.conf /etc/rabbitmq/conf.d/" in setup["command"][-1]


def test_data_disk_is_not_rechowned_on_every_mount(plan: Plan) -> None:
    assert pod(plan)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
