"""The brokers' PriorityClass and their tolerations of a lost node (components/rabbitmq/priority.py)."""

from __future__ import annotations

from contract.timing import DEFAULT_TOLERATION_S, NODE_NOT_READY_TAINT, NODE_UNREACHABLE_TAINT
from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import pod


def test_the_brokers_run_in_their_own_priority_class_below_the_system_ones(plan: Plan) -> None:
    (cls,) = plan.objects("PriorityClass")
    assert pod(plan)["priorityClassName"] == cls["metadata"]["name"]
    assert 0 < cls["value"] < 2_000_000_000, "above the workers (0), below system-cluster-critical"
    assert cls["globalDefault"] is False, "every other pod keeps priority 0"
    assert cls["preemptionPolicy"] == "PreemptLowerPriority"


def test_a_broker_tolerates_an_unreachable_node_for_ever_and_a_not_ready_one_for_the_default(plan: Plan) -> None:
    tolerations = {t["key"]: t for t in pod(plan)["tolerations"]}
    assert set(tolerations) == {NODE_UNREACHABLE_TAINT, NODE_NOT_READY_TAINT}
    assert all(t["effect"] == "NoExecute" and t["operator"] == "Exists" for t in tolerations.values())
    # No eviction from an unreachable node: it frees nothing (the StatefulSet holds the name) and
    # restarts a broker that would have rejoined as it was.
    assert "tolerationSeconds" not in tolerations[NODE_UNREACHABLE_TAINT]
    assert tolerations[NODE_NOT_READY_TAINT]["tolerationSeconds"] == DEFAULT_TOLERATION_S
