"""The broker's NetworkPolicy (the whole reachability table: tests/unit/components/test_network_policy.py)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    statefulset,
)


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
