"""The broker's PodDisruptionBudget."""

from __future__ import annotations

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    statefulset,
)


def test_pdb_one_at_a_time(plan: Plan) -> None:
    pdbs = [p for p in plan.objects("PodDisruptionBudget") if p["metadata"]["name"] == "rabbitmq"]
    assert len(pdbs) == 1
    assert pdbs[0]["spec"]["maxUnavailable"] == 1
    assert pdbs[0]["spec"]["selector"] == statefulset(plan)["spec"]["selector"]
