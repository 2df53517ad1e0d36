"""The worker's reading of the broker certificates' expiry (app.certs), against real TLS listeners on
loopback with certificates from the harness's local CA (as the broker pods get theirs)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from cryptography import x509
from prometheus_client import generate_latest

from app import certs
from app.certs import CertificateWatch, Endpoint
from app.metrics import WorkerMetrics
from contract import metrics
from harness.kube.secretfill import LocalCa

NAME = "rabbitmq-0.rabbitmq-nodes.ha-celery.svc.cluster.local"


class Listener:
    """A TLS server on 127.0.0.1 that completes handshakes with one certificate until closed."""

    def __init__(self, cert_pem: str, key_pem: str, directory: Path) -> None:
        (directory / "tls.crt").write_text(cert_pem)
        (directory / "tls.key").write_text(key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.not_after = x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc.timestamp()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                raw.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[LocalCa, str]:
    local = LocalCa()
    path = tmp_path / "ca.crt"
    path.write_text(local.cert_pem)
    return local, str(path)


@pytest.fixture
def listeners(tmp_path: Path, ca: tuple[LocalCa, str]) -> Iterator[list[Listener]]:
    local, _ = ca
    made: list[Listener] = []
    for days in (90, 20):
        directory = tmp_path / f"node-{days}"
        directory.mkdir()
        made.append(Listener(*local.server_pair([NAME], dt.timedelta(days=days)), directory))
    yield made
    for listener in made:
        listener.close()


def at(listener: Listener) -> Endpoint:
    return Endpoint("127.0.0.1", listener.port, NAME)


def test_endpoints_are_the_amqps_hosts_once_each_checked_by_their_own_name_or_the_one_given() -> None:
    urls = [
        "amqps://u:p@rabbitmq-0.nodes:5671//",
        "amqps://u:p@rabbitmq-1.nodes//",
        "amqps://u:p@rabbitmq-0.nodes:5671/other",
        "amqp://u:p@plain.nodes:5672//",
    ]
    assert certs.endpoints(urls, None) == (
        Endpoint("rabbitmq-0.nodes", 5671, "rabbitmq-0.nodes"),
        Endpoint("rabbitmq-1.nodes", 5671, "rabbitmq-1.nodes"),
    )
    assert {e.server_name for e in certs.endpoints(urls, "rmq.ns.svc")} == {"rmq.ns.svc"}


def test_the_earliest_certificate_of_the_nodes_is_read(ca: tuple[LocalCa, str], listeners: list[Listener]) -> None:
    _, ca_file = ca
    later, sooner = listeners
    assert certs.not_after(ca_file, at(later), timeout=5) == pytest.approx(later.not_after, abs=1)
    assert certs.earliest(ca_file, [at(later), at(sooner)], timeout=5) == pytest.approx(sooner.not_after, abs=1)


def test_an_expired_certificate_reads_as_expiring_now(ca: tuple[LocalCa, str], tmp_path: Path) -> None:
    local, ca_file = ca
    listener = Listener(*local.server_pair([NAME], dt.timedelta(minutes=-1)), tmp_path)
    try:
        assert certs.not_after(ca_file, at(listener), timeout=5, now=lambda: 1234.0) == 1234.0
    finally:
        listener.close()


def test_a_node_that_cannot_be_read_is_left_out_and_none_read_gives_no_value(
    ca: tuple[LocalCa, str], listeners: list[Listener], tmp_path: Path
) -> None:
    _, ca_file = ca
    later, _ = listeners
    other = tmp_path / "other-ca.crt"
    other.write_text(LocalCa().cert_pem)
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    down = Endpoint("127.0.0.1", port, NAME)
    wrong_name = Endpoint("127.0.0.1", later.port, "broker.example.com")
    assert certs.earliest(ca_file, [down, wrong_name, at(later)], timeout=5) == pytest.approx(later.not_after, abs=1)
    assert certs.earliest(str(other), [at(later)], timeout=5) is None, "another CA's certificate was trusted"
    assert certs.earliest(ca_file, [down], timeout=5) is None


def test_the_watch_is_built_only_for_tls() -> None:
    urls = ["amqps://u:p@rabbitmq-0.nodes//"]
    assert CertificateWatch.from_ssl(urls, False) is None
    assert CertificateWatch.from_ssl(urls, {"ca_certs": None}) is None
    assert CertificateWatch.from_ssl(["amqp://u:p@plain//"], {"ca_certs": "/ca.crt"}) is None
    watch = CertificateWatch.from_ssl(urls, {"ca_certs": "/ca.crt", "server_hostname": None})
    assert watch is not None
    assert watch.endpoints == (Endpoint("rabbitmq-0.nodes", 5671, "rabbitmq-0.nodes"),)


def test_the_worker_exports_the_reading_once_there_is_one(
    ca: tuple[LocalCa, str], listeners: list[Listener], tmp_path: Path
) -> None:
    _, ca_file = ca
    later, sooner = listeners
    watch = CertificateWatch(ca_file, [at(later), at(sooner)], interval=3600, timeout=5)
    worker = WorkerMetrics(Celery("certs-test"), tmp_path / "heartbeat", None, watch)
    try:
        assert metrics.BROKER_CERTIFICATE_EXPIRY not in generate_latest(worker.registry).decode()
        watch.read()
        exposed = generate_latest(worker.registry).decode()
    finally:
        worker.close()
    line = next(x for x in exposed.splitlines() if x.startswith(metrics.BROKER_CERTIFICATE_EXPIRY + " "))
    assert float(line.split()[1]) == pytest.approx(sooner.not_after, abs=1)


def test_the_watch_retries_soon_while_no_node_answers_then_reads_hourly(
    ca: tuple[LocalCa, str], listeners: list[Listener]
) -> None:
    _, ca_file = ca
    later, _ = listeners
    closed = socket.create_server(("127.0.0.1", 0))
    down = Endpoint("127.0.0.1", closed.getsockname()[1], NAME)
    closed.close()
    watch = CertificateWatch(ca_file, [down], interval=3600, timeout=5, retry=30)
    assert watch.tick() == 30
    assert watch.expiry is None
    watch.endpoints = (at(later),)  # the broker comes up
    assert watch.tick() == 3600
    assert watch.expiry == pytest.approx(later.not_after, abs=1)
