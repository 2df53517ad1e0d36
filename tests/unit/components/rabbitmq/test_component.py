"""RabbitMQCluster itself: its children and outputs."""

from __future__ import annotations

from tests.conftest import Plan


def test_component_outputs(plan: Plan) -> None:
    component = plan.one("ha-celery:index:RabbitMQCluster")
    assert component["parent"] is None
    children = [r for r in plan.resources if r["parent"] == "ha-celery:index:RabbitMQCluster"]
    assert len(children) >= 10
    assert all(c["name"].startswith("rabbitmq-") for c in children), "children are named from the component"
