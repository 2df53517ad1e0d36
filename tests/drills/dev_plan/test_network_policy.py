"""The booted dev plan runs behind its own NetworkPolicies (harness.kube.dataplane), as on GKE.

From a worker pod and from the host (which stands for the scheduler and the metrics collector:
``drill.targets.host_peers``): what the policies allow connects, what they do not is dropped (a
timeout, not a reset: the port is open, the packet never reaches it), and each drop is reported
by the pod that dropped it. The whole table on real packets: tests/integration/kube/test_netpol_dataplane.py.
"""

from __future__ import annotations

import json
import socket

import pytest

from contract.metrics import WORKER_METRICS_PORT
from contract.wire import AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT
from drill.pod_scenarios import BROKERS, WORKERS
from harness.runtime.poll import poll
from tests.drills.conftest import Booted

pytestmark = [pytest.mark.drill]

TIMEOUT_S = 2.0
PROBE = """
import json, socket, sys
out = []
for ip, port in json.loads(sys.argv[2]):
    try:
        socket.create_connection((ip, port), timeout=float(sys.argv[1])).close()
        out.append("open")
    except socket.timeout:
        out.append("dropped")
    except OSError:
        out.append("reset")
print(json.dumps(out))
"""


def _from_host(targets: list[tuple[str, int]]) -> list[str]:
    out = []
    for ip, port in targets:
        try:
            socket.create_connection((ip, port), timeout=TIMEOUT_S).close()
            out.append("open")
        except TimeoutError:
            out.append("dropped")
        except OSError:
            out.append("reset")
    return out


def test_the_booted_plan_runs_behind_its_network_policies(booted: Booted) -> None:
    cluster = booted.target.cluster
    broker = cluster.pods_of(BROKERS)[0]
    worker, other = cluster.pods_of(WORKERS)[:2]
    assert broker.ip is not None
    assert worker.ip is not None
    assert other.ip is not None

    targets = [(broker.ip, AMQP_PORT), (broker.ip, MANAGEMENT_PORT), (broker.ip, PROMETHEUS_PORT)]
    targets += [(other.ip, WORKER_METRICS_PORT)]
    out = cluster.exec(worker.name, "python3", "-c", PROBE, str(TIMEOUT_S), json.dumps(targets), timeout=60)
    # A worker's egress: AMQP only (and DNS); the management API and the metrics ports are not its business.
    assert json.loads(out) == ["open", "dropped", "dropped", "dropped"]

    # The host as the scheduler and the collector: AMQP and both metrics ports, not the management API.
    host_targets = [(broker.ip, AMQP_PORT), (broker.ip, PROMETHEUS_PORT), (worker.ip, WORKER_METRICS_PORT)]
    host_targets += [(broker.ip, MANAGEMENT_PORT)]
    assert _from_host(host_targets) == ["open", "open", "open", "dropped"]

    applied = {e.pod for e in cluster.events_of() if e.reason == "PolicyApplied"}
    assert {p.name for p in cluster.pods.values() if p.worker is not None} <= applied
    wanted = {
        (worker.name, f"egress to {broker.ip} ({broker.name}) tcp/{MANAGEMENT_PORT} refused"),
        (broker.name, f"ingress from {cluster.host_ip} (the host) tcp/{MANAGEMENT_PORT} refused"),
    }

    def reported() -> bool:
        denied = {(e.pod, e.message) for e in cluster.events_of() if e.reason == "PolicyDenied"}
        return wanted <= denied

    poll(reported, 30, "the refused flows to be reported as PolicyDenied events", interval=1.0)
