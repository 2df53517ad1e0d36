"""The prod plan for real, booted once on the pod runner for this module: brokerTls, and the drain.

brokerTls (prod's setting: RabbitMQ 4.3 with the plan's TLS config and Secrets, filled by the
harness's local CA; the worker Deployment with the CA mounted): workers and the scheduler work over
TLS only; the plain port is closed; a client that lacks the CA, or checks another name, is refused.

Then the seed's experiment on prod's objects (required one-broker-per-node anti-affinity, three
zones, zonal disks): a node drained through the PDBs keeps its broker Pending until uncordon. Last:
the cluster comes back from it, but these are the module's last checks.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest
from cryptography import x509
from rich.console import Console

from contract import metrics
from contract.wire import TLS_CA_KEY, BrokerRole
from drill import records
from drill.pod_scenarios import BROKERS, WORKERS
from drill.report import timeline
from drill.runner import DrillOptions, booted_plan, drills_in_turn, write_report
from drill.scenario import Scenario
from drill.targets import broker_env
from harness.kube.cluster import KubeCluster
from harness.kube.secretfill import LocalCa
from harness.runtime.poll import poll
from tests.conftest import Plan
from tests.drills.conftest import REPORT_KEYS, TASK_MS, TASKS, Booted, assert_nothing_lost, python_in_pod_namespace

# The first test pays for the whole boot.
pytestmark = [pytest.mark.drill, pytest.mark.timeout(600)]

CLIENT_SERVICE = "rabbitmq.ha-celery.svc.cluster.local"
"""In every node's certificate (contract.wire.broker_tls_names)."""


@pytest.fixture(scope="module")
def prod(plans: dict[str, Plan]) -> Iterator[Booted]:
    """The prod plan booted, with its Prometheus (the drain drill reports its alerts)."""
    with booted_plan(plans["prod"].directory) as (target, results):
        yield Booted(target, results)


def pod_ips(cluster: KubeCluster) -> dict[str, str]:
    return {pod.name: pod.ip for pod in cluster.pods_of(BROKERS) if pod.ip is not None}


def handshake(ip: str, context: ssl.SSLContext, server_name: str) -> str:
    """A TLS handshake with the broker pod at ``ip`` on 5671; the protocol it agreed on."""
    with (
        socket.create_connection((ip, 5671), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return str(tls.version())


def test_workers_the_scheduler_and_the_dlq_cli_work_over_tls_only(prod: Booted) -> None:
    prod.clean()
    cluster = prod.target.cluster
    count = 300
    env = {**os.environ, **broker_env(cluster)}
    assert env["BROKER_URLS"].startswith("amqps://"), "the plan's clients must use amqps"
    # The image's scheduler CLI (drill.scheduler adds the counting task), from the host by address.
    done = subprocess.run(
        [sys.executable, "-m", "drill.scheduler", "--task", "record", "--count", str(count), "--publisher", "simple"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    poll(
        lambda: records.tally(prod.results).keys == frozenset(range(count)),
        240.0,
        "every scheduled task to run on the worker pods",
        interval=1.0,
    )
    # Every AMQP connection the broker holds (the workers' among them) is a TLS one.
    broker = cluster.pods_of(BROKERS)[0].name
    rows = [
        line.split("\t")
        for line in cluster.exec(
            broker, "rabbitmqctl", "-q", "list_connections", "ssl", "ssl_protocol", "user", "--no-table-headers"
        ).splitlines()
        if line.strip()
    ]
    assert rows, "no connection on the broker: the workers are not connected"
    assert all(row[0] == "true" and row[1].startswith("tlsv1.") for row in rows), rows
    # The operators' dead-letter CLI from the image, over TLS too, as it runs: in a worker pod,
    # with the worker user's credentials (the scheduler user may not read celery.dlq).
    dlq = subprocess.run(
        [sys.executable, "-m", "app.dlq", "list"],
        env={**os.environ, **broker_env(cluster, BrokerRole.WORKER)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dlq.returncode == 0, dlq.stdout + dlq.stderr
    assert "dead-lettered task(s) shown" in dlq.stdout


CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 5672), timeout=10).close()"


def test_the_plain_amqp_port_refuses_connections(prod: Booted) -> None:
    # From inside each broker pod's own network namespace (as `kubectl port-forward` reaches a pod):
    # elsewhere the NetworkPolicy drops 5672 before the broker could say anything; here the broker
    # itself answers, and nothing listens.
    for pod in prod.target.cluster.pods_of(BROKERS):
        assert pod.ip is not None, f"{pod.name} has no address"
        done = python_in_pod_namespace(pod, CONNECT, pod.ip)
        assert done.returncode != 0, f"{pod.name}: 5672 accepted a connection"
        assert "ConnectionRefusedError" in done.stderr, done.stderr[-500:]
        print(f"{pod.name} ({pod.ip}): 5672 refused")


UNTRUSTED = {"self-signed certificate in certificate chain", "unable to get local issuer certificate"}
"""What OpenSSL says when the chain does not end in a trusted CA (RabbitMQ sends its CA along)."""


def test_a_client_without_the_ca_is_refused(prod: Booted, tmp_path: Path) -> None:
    ip = next(iter(pod_ips(prod.target.cluster).values()))
    # The system's CAs only: what a client gets without BROKER_TLS_CA_FILE.
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ip, ssl.create_default_context(), CLIENT_SERVICE)
    assert info.value.verify_message in UNTRUSTED, info.value
    # py-amqp as the app drives it (app.config._ssl_options), trusting another CA.
    other = tmp_path / "other-ca.crt"
    other.write_text(LocalCa().cert_pem)
    options = {"ca_certs": str(other), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": CLIENT_SERVICE}
    user = next(s for s in prod.target.cluster.plan.secrets if s.name == "rabbitmq-default-user").data
    conn = amqp.Connection(
        f"{ip}:5671", userid=user["username"].decode(), password=user["password"].decode(), ssl=options
    )
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        conn.connect()
    assert info.value.verify_message in UNTRUSTED, info.value


def test_each_node_is_verified_by_its_own_name_and_a_wrong_name_is_refused(prod: Booted) -> None:
    cluster = prod.target.cluster
    context = ssl.create_default_context(cafile=broker_env(cluster)["BROKER_TLS_CA_FILE"])
    ips = pod_ips(cluster)
    for pod, ip in ips.items():
        # What each worker checks: the pod's StatefulSet name; and the client Service's.
        assert handshake(ip, context, f"{pod}.rabbitmq-nodes.ha-celery.svc.cluster.local").startswith("TLSv1.")
        assert handshake(ip, context, CLIENT_SERVICE).startswith("TLSv1.")
    pods = sorted(ips)
    # Another node's name: per-node certificates, so a node cannot pass for its peer.
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ips[pods[0]], context, f"{pods[1]}.rabbitmq-nodes.ha-celery.svc.cluster.local")
    assert "Hostname mismatch" in str(info.value), info.value
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ips[pods[0]], context, "broker.example.com")
    assert "Hostname mismatch" in str(info.value), info.value


def test_workers_export_the_earliest_broker_certificate_expiry(prod: Booted) -> None:
    """The expiry alert's input, from the plan's worker pods: the earliest notAfter of the node
    certificates the TLS Secret holds (read here from the Secret, not from a handshake)."""
    cluster = prod.target.cluster
    secret = next(s for s in cluster.plan.secrets if s.name == "rabbitmq-tls").data
    nodes = [key for key in secret if key.endswith(".crt") and key != TLS_CA_KEY]
    assert len(nodes) == 3, sorted(secret)
    earliest = min(x509.load_pem_x509_certificate(secret[key]).not_valid_after_utc.timestamp() for key in nodes)
    workers = [pod for pod in cluster.pods_of(WORKERS) if pod.ip is not None]
    assert workers, "no worker pod with an address"

    def exported(ip: str) -> float | None:
        url = f"http://{ip}:{metrics.WORKER_METRICS_PORT}{metrics.WORKER_METRICS_PATH}"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        line = next((x for x in text.splitlines() if x.startswith(metrics.BROKER_CERTIFICATE_EXPIRY + " ")), None)
        return None if line is None else float(line.split()[1])

    for pod in workers:
        ip = str(pod.ip)
        poll(lambda: exported(ip) is not None, 60.0, f"{pod.name} to export the certificate expiry")  # noqa: B023
        assert exported(ip) == pytest.approx(earliest, abs=1), pod.name


def test_drain_node_keeps_the_broker_pending_until_uncordon(
    prod: Booted, plans: dict[str, Plan], tmp_path: Path
) -> None:
    plan = plans["prod"].directory
    options = DrillOptions(Scenario.DRAIN_NODE, tasks=TASKS, task_ms=TASK_MS, plan=plan)
    [result] = drills_in_turn([options], prod.target, prod.results, Console(stderr=True))
    assert_nothing_lost(result, Scenario.DRAIN_NODE)
    labels = [label for _, label in result.events]
    assert any("Pending" in label for label in labels), f"the evicted broker had nowhere to go: {labels}"
    # What `make demo STACK=prod SCENARIO=drain-node` writes, with the alerts its Prometheus saw.
    report = json.loads(write_report(result, tmp_path).read_text())
    for key in REPORT_KEYS:
        assert key in report
    assert (report["plan"], report["stack"]) == (str(plan), plan.name)
    assert report["deltas"], "a plan booted locally always differs somewhere; the report must say where"
    assert report["alert_timing"] is not None, "the plan-booted cluster runs a Prometheus"
    png = timeline(result, tmp_path / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG"), "timeline is not a PNG"
