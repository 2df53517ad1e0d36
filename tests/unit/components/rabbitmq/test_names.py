"""Child object names: the component takes them from contract.wire.child_name, and the local
harness's Secret rules find the same objects through the same function."""

from __future__ import annotations

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import broker_config_map, statefulset


def test_children_are_named_by_child_name_and_the_harness_fills_them(plan: Plan) -> None:
    from contract import wire
    from drill.plan_secrets import ha_celery_rules

    app = statefulset(plan)["metadata"]["name"]
    secrets = {s["metadata"]["name"] for s in plan.objects("Secret") if s["metadata"]["name"].startswith(f"{app}-")}
    expected = {wire.child_name(app, kind) for kind in (wire.DEFAULT_USER_SECRET, wire.ERLANG_COOKIE_SECRET)}
    expected |= {wire.role_secret_name(app, role) for role in wire.BrokerRole}
    if plan.stack == "prod":  # brokerTls: on in prod
        expected |= {wire.child_name(app, wire.TLS_SECRET), wire.child_name(app, wire.CA_SECRET)}
    assert secrets == expected, plan.stack
    rules = ha_celery_rules(broker_nodes=statefulset(plan)["spec"]["replicas"], app=app)
    assert secrets <= {name for name, _ in rules}, "a Secret the pod runner could not fill"
    assert statefulset(plan)["spec"]["serviceName"] == wire.child_name(app, wire.NODES_SERVICE)
    assert broker_config_map(plan)["metadata"]["name"] == wire.child_name(app, wire.CONFIG_MAP)


def test_quorum_safe_sizes() -> None:
    from contract.wire import quorum_safe

    assert [n for n in range(8) if quorum_safe(n)] == [1, 3, 5, 7]
