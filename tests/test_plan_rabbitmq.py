"""RabbitMQCluster in each stack's plan: the properties that keep quorum through a node loss."""

from __future__ import annotations

from typing import Any

from tests.conftest import Plan


def statefulset(plan: Plan) -> dict[str, Any]:
    found = plan.objects("StatefulSet")
    assert len(found) == 1, f"{plan.stack}: one StatefulSet (the broker)"
    return found[0]


def pod(plan: Plan) -> dict[str, Any]:
    spec: dict[str, Any] = statefulset(plan)["spec"]["template"]["spec"]
    return spec


def broker_container(plan: Plan) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod(plan)["containers"] if c["name"] == "rabbitmq"]
    assert len(found) == 1
    return found[0]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_storage_class_per_stack(plans: dict[str, Plan]) -> None:
    expected = {"prod": ("pd-ssd", "Retain"), "dev": ("pd-standard", "Delete")}
    for stack, (disk, reclaim) in expected.items():
        sc = plans[stack].object("StorageClass")
        assert sc["provisioner"] == "pd.csi.storage.gke.io"
        assert sc["parameters"] == {"type": disk}, stack
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
        assert sc["allowVolumeExpansion"] is True
        assert sc["reclaimPolicy"] == reclaim, stack
        claim = statefulset(plans[stack])["spec"]["volumeClaimTemplates"][0]["spec"]
        assert claim["storageClassName"] == sc["metadata"]["name"]


def test_statefulset_identity_and_scaling(plan: Plan) -> None:
    sts = statefulset(plan)
    assert sts["metadata"]["name"] == "rabbitmq", "a fixed name: node identities derive from it"
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    headless = [s for s in plan.objects("Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    assert spec["serviceName"] == headless[0]["metadata"]["name"]
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True


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
    assert "tcpSocket" in container["readinessProbe"]
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
    # there and a failed hook kills the container, so it must retry (tests/kube/test_runner.py boots it).
    assert "until rabbitmqctl --timeout 60 await_startup" in post_start
    mounts = {m["mountPath"]: m["name"] for m in broker_container(plan)["volumeMounts"]}
    assert mounts["/etc/ha-celery"] == "ha-celery-files"


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
    for plan in plans.values():
        resources = broker_container(plan)["resources"]
        assert resources["requests"] == resources["limits"], "Guaranteed QoS"
        limit_mib = int(resources["limits"]["memory"].removesuffix("Mi"))
        conf = plan.object("ConfigMap")["data"]["20-ha-celery.conf"]
        assert f"total_memory_available_override_value = {limit_mib * 1024 * 1024}" in conf
    assert broker_container(plans["prod"])["resources"]["limits"]["memory"] == "2048Mi"


def test_non_root_and_pinned_image(plan: Plan) -> None:
    spec = pod(plan)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False, "4.1+ peer discovery needs no API access"
    for container in spec["containers"] + spec["initContainers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["image"].startswith("rabbitmq:4.3.")
        assert container["image"].split(":")[1].count(".") == 2
    assert not plan.objects("Role"), "no RBAC: 4.3 peer discovery makes no API calls"


def test_rendered_config_is_the_k8s_variant(plan: Plan) -> None:
    conf = plan.object("ConfigMap")["data"]["20-ha-celery.conf"]
    assert "cluster_formation.peer_discovery_backend = k8s" in conf
    settings_lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings_lines if line.startswith("cluster_partition_handling")], (
        "Khepri ignores the key: it must not be set for 4.3"
    )
    assert "loopback_users.guest = true" in conf
    plugins = plan.object("ConfigMap")["data"]["enabled_plugins"]
    assert "rabbitmq_peer_discovery_k8s" in plugins
    assert "rabbitmq_prometheus" in plugins


def test_cookie_is_a_file_and_credentials_a_secret(plan: Plan) -> None:
    volumes = {v["name"]: v for v in pod(plan)["volumes"]}
    cookie = volumes["erlang-cookie-secret"]["secret"]
    cookie_secret = [s for s in plan.objects("Secret") if s["metadata"]["name"] == cookie["secretName"]]
    assert cookie_secret
    assert ".erlang.cookie" in cookie_secret[0]["stringData"]
    sources = volumes["rabbitmq-confd-source"]["projected"]["sources"]
    assert any("secret" in s for s in sources), "the default user comes from a Secret"
    conf_map = plan.object("ConfigMap")["data"]
    assert "default_pass" not in "".join(conf_map.values())


def test_pdb_one_at_a_time(plan: Plan) -> None:
    pdbs = [p for p in plan.objects("PodDisruptionBudget") if p["metadata"]["name"] == "rabbitmq"]
    assert len(pdbs) == 1
    assert pdbs[0]["spec"]["maxUnavailable"] == 1
    assert pdbs[0]["spec"]["selector"] == statefulset(plan)["spec"]["selector"]


def test_network_policy(plan: Plan) -> None:
    [policy] = [p for p in plan.objects("NetworkPolicy") if p["metadata"]["name"] == "rabbitmq"]
    rules = policy["spec"]["ingress"]
    by_port = {port["port"]: rule["from"] for rule in rules for port in rule["ports"]}
    assert {"podSelector": {"matchLabels": {"ha-celery/broker-client": "true"}}} in by_port[5672]
    selector = statefulset(plan)["spec"]["selector"]
    assert by_port[25672] == [{"podSelector": selector}], "inter-node ports only between broker pods"
    assert by_port[4369] == [{"podSelector": selector}]
    assert by_port[15692] == [{"namespaceSelector": {}}]


def test_component_outputs(plan: Plan) -> None:
    component = plan.one("ha-celery:index:RabbitMQCluster")
    assert component["parent"] is None
    children = [r for r in plan.resources if r["parent"] == "ha-celery:index:RabbitMQCluster"]
    assert len(children) >= 10
    assert all(c["name"].startswith("rabbitmq-") for c in children), "children are named from the component"


def test_consumer_timeout_outlasts_the_task_time_limit(plan: Plan) -> None:
    from contract import timing

    conf = plan.object("ConfigMap")["data"]["20-ha-celery.conf"]
    [line] = [ln for ln in conf.splitlines() if ln.startswith("consumer_timeout = ")]
    timeout_ms = int(line.split("=")[1])
    assert timeout_ms >= timing.MIN_CONSUMER_TIMEOUT_MS
    assert timeout_ms > timing.TASK_TIME_LIMIT_S * 1000


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
