"""When do the broker nodes' certificates expire? Read by the worker, for the expiry alert.

RabbitMQ's own metrics say nothing of its certificates, and a node certificate that expires
unnoticed refuses every new AMQP connection from then on (workers after a failover, every
publisher). The worker already trusts the broker CA and knows every broker host, so it asks each
node, the way blackbox_exporter's ``probe_ssl_earliest_cert_expiry`` does: a TLS handshake, the
peer certificate's ``notAfter``, the earliest of them exported as
``contract.metrics.BROKER_CERTIFICATE_EXPIRY``.

The handshake verifies as the worker's connection does (the CA, each host's own name), so it reads
exactly the certificate the worker would get. One that has already expired fails verification:
it reads as expiring at the probe's time, which is what the alert needs to know.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from contract import metrics, timing, wire

logger = logging.getLogger(__name__)

EXPIRED: int = 10
"""OpenSSL's ``X509_V_ERR_CERT_HAS_EXPIRED``, the verify code of an expired certificate."""


@dataclass(frozen=True)
class Endpoint:
    """One broker node's TLS listener and the name its certificate is checked against."""

    host: str
    port: int
    server_name: str


def endpoints(urls: Sequence[str], server_name: str | None) -> tuple[Endpoint, ...]:
    """The ``amqps://`` URLs' hosts (once each), checked by ``server_name`` or else their own host."""
    seen: dict[tuple[str, int], Endpoint] = {}
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "amqps" or not parts.hostname:
            continue
        port = parts.port or wire.AMQPS_PORT
        seen.setdefault((parts.hostname, port), Endpoint(parts.hostname, port, server_name or parts.hostname))
    return tuple(seen.values())


def not_after(ca_file: str, endpoint: Endpoint, timeout: float, now: Callable[[], float] = time.time) -> float:
    """Unix time at which ``endpoint``'s certificate expires (``now()`` if it already has).

    Raises ``OSError`` (``ssl.SSLError`` among them) when the node cannot be asked or its
    certificate is refused for another reason than its age.
    """
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.server_name) as tls,
        ):
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as error:
        if error.verify_code == EXPIRED:
            return now()
        raise
    if not cert or "notAfter" not in cert:
        raise ssl.SSLError(f"{endpoint.host}:{endpoint.port} sent no certificate")
    return float(ssl.cert_time_to_seconds(str(cert["notAfter"])))


def earliest(
    ca_file: str, found: Sequence[Endpoint], timeout: float, now: Callable[[], float] = time.time
) -> float | None:
    """The earliest expiry among the nodes that answered; None when none did (a down node is the
    node-down alert's business, not this one's)."""
    times: list[float] = []
    for endpoint in found:
        try:
            times.append(not_after(ca_file, endpoint, timeout, now))
        except OSError as error:
            logger.info("certificates: %s:%d not read: %s", endpoint.host, endpoint.port, error)
    return min(times, default=None)


class CertificateWatch:
    """Reads the nodes' certificates now and then every ``interval`` seconds, in a daemon thread."""

    def __init__(
        self,
        ca_file: str,
        found: Sequence[Endpoint],
        interval: float = metrics.CERTIFICATE_PROBE_INTERVAL_S,
        timeout: float = timing.BROKER_CONNECT_TIMEOUT_S,
        retry: float = metrics.CERTIFICATE_PROBE_RETRY_S,
    ) -> None:
        self.ca_file = ca_file
        self.endpoints = tuple(found)
        self.interval = interval
        self.timeout = timeout
        self.retry = retry
        self.expiry: float | None = None
        """The last reading (a float is replaced whole: the scrape thread reads it unlocked)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certificate-watch", daemon=True)

    @classmethod
    def from_ssl(cls, urls: Sequence[str], ssl_options: object) -> CertificateWatch | None:
        """From Celery's ``broker_url`` list and ``broker_use_ssl`` (``app.config.ssl_options``); None without TLS."""
        if not isinstance(ssl_options, Mapping) or not ssl_options.get("ca_certs"):
            return None
        found = endpoints(urls, ssl_options.get("server_hostname"))
        return cls(str(ssl_options["ca_certs"]), found) if found else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def read(self) -> bool:
        """One reading of every node; False when none answered (the last value stays)."""
        reading = earliest(self.ca_file, self.endpoints, self.timeout)
        if reading is not None:
            self.expiry = reading
        return reading is not None

    def tick(self) -> float:
        """Read once; the seconds until the next reading. A worker often starts before its brokers
        listen: no answer is retried soon, a reading holds for the interval."""
        return self.interval if self.read() else self.retry

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.tick())
