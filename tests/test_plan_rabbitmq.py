"""RabbitMQCluster in each stack's plan: the properties that keep quorum through a node loss."""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import STACKS, Plan

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def broker_config_map(plan: Plan) -> dict[str, Any]:
    """The broker's ConfigMap (the plan also ships the dashboard's)."""
    found = [c for c in plan.objects("ConfigMap") if c["metadata"]["name"] == "rabbitmq-config"]
    assert len(found) == 1, f"{plan.stack}: one rabbitmq-config ConfigMap"
    return found[0]


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
    # Disks outlive `pulumi destroy` in prod on purpose; in dev they go with the StatefulSet.
    expected = "Retain" if plan.stack == "prod" else "Delete"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == expected, plan.stack
    assert plan.object("StorageClass")["reclaimPolicy"] == expected, plan.stack
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
        assert container["image"].startswith("rabbitmq:4.3.")
        assert container["image"].split(":")[1].count(".") == 2
    assert not plan.objects("Role"), "no RBAC: 4.3 peer discovery makes no API calls"


def test_rendered_config_is_the_k8s_variant(plan: Plan) -> None:
    conf = broker_config_map(plan)["data"]["20-ha-celery.conf"]
    assert "cluster_formation.peer_discovery_backend = k8s" in conf
    settings_lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings_lines if line.startswith("cluster_partition_handling")], (
        "Khepri ignores the key: it must not be set for 4.3"
    )
    assert "loopback_users.guest = true" in conf
    plugins = broker_config_map(plan)["data"]["enabled_plugins"]
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
    conf_map = broker_config_map(plan)["data"]
    assert "default_pass" not in "".join(conf_map.values())


def test_pdb_one_at_a_time(plan: Plan) -> None:
    pdbs = [p for p in plan.objects("PodDisruptionBudget") if p["metadata"]["name"] == "rabbitmq"]
    assert len(pdbs) == 1
    assert pdbs[0]["spec"]["maxUnavailable"] == 1
    assert pdbs[0]["spec"]["selector"] == statefulset(plan)["spec"]["selector"]


def test_network_policy(plan: Plan) -> None:
    [policy] = [p for p in plan.objects("NetworkPolicy") if p["metadata"]["name"] == "rabbitmq"]
    rules = policy["spec"]["ingress"]
    by_port: dict[int, list[dict[str, Any]]] = {}
    for rule in rules:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    amqp = 5671 if plan.stack == "prod" else 5672  # brokerTls: on in prod
    assert {"podSelector": {"matchLabels": {"ha-celery/broker-client": "true"}}} in by_port[amqp]
    selector = statefulset(plan)["spec"]["selector"]
    assert {"podSelector": selector} in by_port[amqp], "a blank seed probes its peers' AMQP port"
    assert by_port[25672] == [{"podSelector": selector}], "inter-node ports only between broker pods"
    assert by_port[4369] == [{"podSelector": selector}]
    assert by_port[35672] == [{"podSelector": selector}]
    gmp = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gmp-system"]}]}
    assert by_port[15692] == [{"namespaceSelector": gmp}]
    # The whole reachability table: tests/test_network_policy.py.


def test_component_outputs(plan: Plan) -> None:
    component = plan.one("ha-celery:index:RabbitMQCluster")
    assert component["parent"] is None
    children = [r for r in plan.resources if r["parent"] == "ha-celery:index:RabbitMQCluster"]
    assert len(children) >= 10
    assert all(c["name"].startswith("rabbitmq-") for c in children), "children are named from the component"


def test_consumer_timeout_outlasts_the_task_time_limit(plan: Plan) -> None:
    from contract import timing

    conf = broker_config_map(plan)["data"]["20-ha-celery.conf"]
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


def test_config_checksum_annotation_matches_the_config_map(plan: Plan) -> None:
    from components.rabbitmq import CONFIG_CHECKSUM_ANNOTATION, config_checksum

    annotations = statefulset(plan)["spec"]["template"]["metadata"]["annotations"]
    data = broker_config_map(plan)["data"]
    assert set(data) == {"20-ha-celery.conf", "enabled_plugins", "definitions.json"}
    assert annotations[CONFIG_CHECKSUM_ANNOTATION] == config_checksum(data), plan.stack


# ---------------------------------------------------------------- resource options ----
# The plan records inputs only; what `pulumi up` does on a change also depends on the resource
# options (ignore_changes, replace_on_changes, custom_timeouts), which only the engine sees. These
# tests run the program (or the component) under the same mocks with a monitor that records them.


@dataclass(frozen=True)
class Registered:
    """One resource registration: masked inputs (camelCase, as the engine gets them) and options."""

    inputs: dict[str, Any]
    ignore_changes: tuple[str, ...]
    replace_on_changes: tuple[str, ...]
    delete_before_replace: bool
    protect: bool
    timeouts: dict[str, str]


def _record(stack: str, program: Callable[[], None], config: dict[str, str]) -> dict[tuple[str, str], Registered]:
    import pulumi
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from plan.__main__ import mask
    from plan.mocks import RecordingMocks
    from settings import PROJECT

    requests: dict[tuple[str, str], Any] = {}

    class OptionsMonitor(MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            requests[(request.type, request.name)] = request
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]

    def run() -> dict[tuple[str, str], Registered]:
        mocks = RecordingMocks(project=config.get("gcp:project", "mock-project"))
        pulumi.runtime.set_all_config(config)
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=OptionsMonitor(mocks))
        _sync_await(run_pulumi_func(program))
        out = {}
        for r in mocks.registrations:
            req = requests[(r.type, r.name)]
            timeouts = {k: getattr(req.customTimeouts, k) for k in ("create", "update", "delete")}
            out[(r.type, r.name)] = Registered(
                mask(r.inputs),
                tuple(req.ignoreChanges),
                tuple(req.replaceOnChanges),
                bool(req.deleteBeforeReplace),
                bool(req.protect),
                {k: v for k, v in timeouts.items() if v},
            )
        return out

    # Pulumi's runtime settings are context variables: a copied context leaves no global state behind.
    return contextvars.copy_context().run(run)


@pytest.fixture(scope="module")
def options() -> dict[str, dict[tuple[str, str], Registered]]:
    """Per stack, every registration of the whole program, with its options."""
    from plan.__main__ import run_program, stack_config

    return {stack: _record(stack, run_program, stack_config(stack, [])) for stack in STACKS}


def _dev_args(**changes: Any) -> RabbitMQClusterArgs:
    """Dev-like broker args with ``changes``."""
    from components.rabbitmq import RabbitMQClusterArgs

    args = RabbitMQClusterArgs(
        namespace="ha-celery",
        replicas=3,
        disk_type="pd-standard",
        storage_gi=10,
        image="rabbitmq:4.3.6-management",
        cpu_millis=500,
        memory_mib=1024,
        production=False,
        consumer_timeout_ms=1_800_000,
        cluster_name="ha-celery-dev",
    )
    return dataclasses.replace(args, **changes)


def _component(**changes: Any) -> dict[tuple[str, str], Registered]:
    """The broker component alone, with dev-like args and ``changes``."""
    from components.rabbitmq import RabbitMQCluster

    args = _dev_args(**changes)

    def program() -> None:
        RabbitMQCluster("rabbitmq", args)

    return _record("dev", program, {})


def _only(found: dict[tuple[str, str], Registered], token: str) -> Registered:
    [one] = [r for (t, _), r in found.items() if t == token]
    return one


def _get(tree: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        tree = tree[int(part)] if part.isdigit() else tree[part]
    return tree


def _set(tree: Any, path: str, value: Any) -> None:
    *parents, last = re.findall(r"[^.\[\]]+", path)
    parent = _get(tree, ".".join(parents))
    parent[int(last) if last.isdigit() else last] = value


def _duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


STATEFULSET = "kubernetes:apps/v1:StatefulSet"


def test_a_config_change_rolls_the_pods_and_changes_nothing_else() -> None:
    before, after = _component(), _component(consumer_timeout_ms=2_400_000)
    assert before.keys() == after.keys()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("kubernetes:core/v1:ConfigMap", "rabbitmq-config"), (STATEFULSET, "rabbitmq-statefulset")}
    old, new = before[(STATEFULSET, "rabbitmq-statefulset")].inputs, after[(STATEFULSET, "rabbitmq-statefulset")].inputs
    annotations = "spec.template.metadata.annotations"
    assert _get(old, annotations) != _get(new, annotations), "the pod template must change, or no pod restarts"
    _set(new, annotations, _get(old, annotations))
    assert old == new, "only the checksum annotation may differ in the StatefulSet"


def test_growing_the_disks_does_not_replace_the_statefulset() -> None:
    from components.rabbitmq import STORAGE_REQUEST_PATH

    before, after = _component(storage_gi=10), _component(storage_gi=20)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {(STATEFULSET, "rabbitmq-statefulset")}
    old, new = before[(STATEFULSET, "rabbitmq-statefulset")], after[(STATEFULSET, "rabbitmq-statefulset")]
    assert STORAGE_REQUEST_PATH in new.ignore_changes
    assert (_get(old.inputs, STORAGE_REQUEST_PATH), _get(new.inputs, STORAGE_REQUEST_PATH)) == ("10Gi", "20Gi")
    # What the engine does with ignore_changes: the old value goes back into the new inputs. The
    # provider replaces a StatefulSet on any change to these fields; none may be left.
    _set(new.inputs, STORAGE_REQUEST_PATH, _get(old.inputs, STORAGE_REQUEST_PATH))
    for force_new in ("spec.volumeClaimTemplates", "spec.selector", "spec.serviceName"):
        assert _get(old.inputs, force_new) == _get(new.inputs, force_new), force_new
    assert old.inputs == new.inputs


def test_await_timeouts_cover_the_brokers_own_budgets(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    """Pulumi's default 10 min await must not cut a rollout whose pods may each take the grace period."""
    timeouts = {k: _duration_s(v) for k, v in _only(options[plan.stack], STATEFULSET).timeouts.items()}
    spec = statefulset(plan)["spec"]
    grace = pod(plan)["terminationGracePeriodSeconds"]
    pre_stop = " ".join(broker_container(plan)["lifecycle"]["preStop"]["exec"]["command"])
    waits = [int(w) for w in pre_stop.split() if w.isdigit()]
    assert sum(waits) + 60 <= grace, f"{plan.stack}: preStop may wait {sum(waits)} s of a {grace} s grace period"
    deadline = r"deadline=\$\(\( \$\(date \+%s\) \+ (\d+) \)\)"
    [boot] = re.findall(deadline, broker_container(plan)["lifecycle"]["postStart"]["exec"]["command"][-1])
    [seed_wait] = re.findall(deadline, pod(plan)["initContainers"][0]["command"][-1])
    start = int(seed_wait) + int(boot)
    assert timeouts["create"] >= start, plan.stack
    # Rolling, one pod at a time: each stops (up to the grace period) and boots again.
    assert timeouts["update"] >= spec["replicas"] * (grace + start), plan.stack
    assert timeouts["delete"] >= grace, plan.stack


def test_immutable_storage_class_fields_replace_it(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    sc = _only(options[plan.stack], "kubernetes:storage.k8s.io/v1:StorageClass")
    assert set(sc.replace_on_changes) == {"reclaimPolicy", "volumeBindingMode"}
    assert set(sc.replace_on_changes) <= set(plan.object("StorageClass")), "names of real fields"
    assert sc.delete_before_replace, "fixed name: the old class must be deleted before the new one exists"


def test_generated_password_and_cookie_are_never_replaced_by_an_input_change(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    generated = {n: r for (t, n), r in options[plan.stack].items() if t == "random:index/randomPassword:RandomPassword"}
    roles = {f"rabbitmq-{role}-password" for role in ("worker", "scheduler", "monitoring")}
    assert set(generated) == {"rabbitmq-password", "rabbitmq-erlang-cookie", *roles}
    for name, registered in generated.items():
        # Every input of RandomPassword forces a new value; the registered ones (camelCase) and the rest.
        assert set(registered.inputs) <= set(registered.ignore_changes), name
        assert {"length", "special", "keepers", "overrideSpecial", "minUpper"} <= set(registered.ignore_changes), name
        assert not registered.protect, f"{name}: protect would block `pulumi destroy` of dev"


def test_the_management_url_logs_in_as_the_monitoring_user_with_its_own_password() -> None:
    """KEDA's trigger reads queue depth with this URL. The plan masks it and the local harness
    rebuilds it from its own rules (harness/kube/secretfill.py), so only the component's real
    output shows which user it names."""
    import pulumi
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from components.rabbitmq import RabbitMQCluster
    from contract.wire import BrokerRole, management_url, role_secret_name, role_username
    from plan.mocks import RecordingMocks
    from settings import PROJECT

    args = _dev_args()
    urls: list[str] = []

    def run() -> RecordingMocks:
        mocks = RecordingMocks()
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="dev", preview=False)

        def program() -> None:
            RabbitMQCluster("rabbitmq", args).management_url.apply(urls.append)

        _sync_await(run_pulumi_func(program))
        return mocks

    mocks = contextvars.copy_context().run(run)
    [secret] = [
        r.inputs
        for r in mocks.registrations
        if r.type == "kubernetes:core/v1:Secret"
        and r.inputs["metadata"]["name"] == role_secret_name("rabbitmq", BrokerRole.MONITORING)
    ]
    data = secret["stringData"]["value"]  # the engine's secret wrapper: the component marked it secret
    user, password = data["username"], data["password"]
    assert user == role_username(BrokerRole.MONITORING)
    assert urls == [management_url(user, password, "rabbitmq", "ha-celery")]
