"""The node drills' report (drill.node_scenarios.NodeReport): times relative to the drill's start,
and the worker capacity at GKE's own timing."""

from __future__ import annotations

import pytest

from contract.timing import NODE_MONITOR_GRACE_S, WORKER_NODE_TOLERATION_S
from drill.node_scenarios import NODE_COMPRESSION, NodeReport
from drill.scenario import Scenario


def test_the_capacity_time_at_gke_timing_gives_back_the_compressed_grace_and_toleration() -> None:
    report = NodeReport(Scenario.KILL_NODE.value, node="node-1", fault_at=110.0, full_worker_capacity_at=118.0)
    waited = NODE_MONITOR_GRACE_S + WORKER_NODE_TOLERATION_S
    assert report.time_to_full_worker_capacity_s == 8.0
    assert report.at_gke_timing_s == pytest.approx(8.0 + waited - waited / NODE_COMPRESSION)
    out = report.to_json(started_at=100.0)
    assert (out["fault_at"], out["time_to_full_worker_capacity_s"], out["compression"]) == (10.0, 8.0, NODE_COMPRESSION)
    # delete-node waits for no grace or toleration: nothing to give back.
    deleted = NodeReport(Scenario.DELETE_NODE.value, fault_at=110.0, full_worker_capacity_at=118.0)
    assert deleted.at_gke_timing_s == 8.0


def test_no_capacity_time_before_the_workers_are_back() -> None:
    report = NodeReport(Scenario.KILL_NODE.value, fault_at=110.0)
    assert report.time_to_full_worker_capacity_s is None
    assert report.to_json(100.0)["time_to_full_worker_capacity_at_gke_timing_s"] is None
