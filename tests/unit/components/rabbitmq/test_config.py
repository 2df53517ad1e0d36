"""The broker's rendered configuration, its ConfigMap and the checksum that rolls the pods."""

from __future__ import annotations

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    STATEFULSET,
    broker_config_map,
    component,
    get,
    put,
    statefulset,
)


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


def test_consumer_timeout_outlasts_the_task_time_limit(plan: Plan) -> None:
    from contract import timing

    conf = broker_config_map(plan)["data"]["20-ha-celery.conf"]
    [line] = [ln for ln in conf.splitlines() if ln.startswith("consumer_timeout = ")]
    timeout_ms = int(line.split("=")[1])
    assert timeout_ms >= timing.MIN_CONSUMER_TIMEOUT_MS
    assert timeout_ms > timing.TASK_TIME_LIMIT_S * 1000


def test_config_checksum_annotation_matches_the_config_map(plan: Plan) -> None:
    from components.rabbitmq.config import CONFIG_CHECKSUM_ANNOTATION, config_checksum

    annotations = statefulset(plan)["spec"]["template"]["metadata"]["annotations"]
    data = broker_config_map(plan)["data"]
    assert set(data) == {"20-ha-celery.conf", "enabled_plugins", "definitions.json"}
    assert annotations[CONFIG_CHECKSUM_ANNOTATION] == config_checksum(data), plan.stack


def test_a_config_change_rolls_the_pods_and_changes_nothing_else() -> None:
    before, after = component(), component(consumer_timeout_ms=2_400_000)
    assert before.keys() == after.keys()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("kubernetes:core/v1:ConfigMap", "rabbitmq-config"), (STATEFULSET, "rabbitmq-statefulset")}
    old, new = before[(STATEFULSET, "rabbitmq-statefulset")].inputs, after[(STATEFULSET, "rabbitmq-statefulset")].inputs
    annotations = "spec.template.metadata.annotations"
    assert get(old, annotations) != get(new, annotations), "the pod template must change, or no pod restarts"
    put(new, annotations, get(old, annotations))
    assert old == new, "only the checksum annotation may differ in the StatefulSet"
