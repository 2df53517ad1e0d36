"""brokerTls for real: the dev plan with ``brokerTls=true`` booted on the pod runner (RabbitMQ 4.3 with
the plan's TLS config and Secrets, filled by the harness's local CA; the worker Deployment with the
CA mounted). Workers and the scheduler work over TLS only; the plain port is closed; a client that
lacks the CA, or checks another name, is refused."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import pytest

from contract.wire import BrokerRole
from drill import records
from drill.pod_scenarios import BROKERS
from drill.runner import booted_plan
from drill.targets import broker_env
from harness.kube.cluster import KubeCluster
from harness.kube.secretfill import LocalCa
from harness.runtime.poll import poll
from tests.zero_loss.conftest import Booted

# The first test pays for its own plan (a Pulumi program under mocks) and the whole boot.
pytestmark = [pytest.mark.drill, pytest.mark.timeout(600)]

CLIENT_SERVICE = "rabbitmq.ha-celery.svc.cluster.local"
"""In every node's certificate (contract.wire.broker_tls_names)."""


@pytest.fixture(scope="module")
def tls(plan_runner: Callable[..., subprocess.CompletedProcess[str]]) -> Iterator[Booted]:
    done = plan_runner("dev", "brokerTls=true")
    assert done.returncode == 0, done.stderr
    with booted_plan(Path(done.stdout.split("-> ")[-1].strip())) as (target, results):
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


def test_workers_the_scheduler_and_the_dlq_cli_work_over_tls_only(tls: Booted) -> None:
    tls.clean()
    cluster = tls.target.cluster
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
        lambda: records.tally(tls.results).keys == frozenset(range(count)),
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


def test_the_plain_amqp_port_refuses_connections(tls: Booted) -> None:
    for pod, ip in pod_ips(tls.target.cluster).items():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, 5672), timeout=10).close()
        print(f"{pod} ({ip}): 5672 refused")


UNTRUSTED = {"self-signed certificate in certificate chain", "unable to get local issuer certificate"}
"""What OpenSSL says when the chain does not end in a trusted CA (RabbitMQ sends its CA along)."""


def test_a_client_without_the_ca_is_refused(tls: Booted, tmp_path: Path) -> None:
    ip = next(iter(pod_ips(tls.target.cluster).values()))
    # The system's CAs only: what a client gets without BROKER_TLS_CA_FILE.
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ip, ssl.create_default_context(), CLIENT_SERVICE)
    assert info.value.verify_message in UNTRUSTED, info.value
    # py-amqp as the app drives it (app.config._ssl_options), trusting another CA.
    other = tmp_path / "other-ca.crt"
    other.write_text(LocalCa().cert_pem)
    options = {"ca_certs": str(other), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": CLIENT_SERVICE}
    user = next(s for s in tls.target.cluster.plan.secrets if s.name == "rabbitmq-default-user").data
    conn = amqp.Connection(
        f"{ip}:5671", userid=user["username"].decode(), password=user["password"].decode(), ssl=options
    )
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        conn.connect()
    assert info.value.verify_message in UNTRUSTED, info.value


def test_each_node_is_verified_by_its_own_name_and_a_wrong_name_is_refused(tls: Booted) -> None:
    cluster = tls.target.cluster
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
