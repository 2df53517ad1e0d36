"""The cluster DNS server: Debian's dnsmasq in a namespace of its own, answering the cluster domain.

It stands where GKE's kube-dns pods stand (namespace ``kube-system``, label ``k8s-app: kube-dns``,
the peer the plan's client NetworkPolicy lets the workers reach on port 53): at
:attr:`harness.runtime.netns.NetnsLayout.dns_ip`, in :attr:`~harness.runtime.netns.NetnsLayout.dns_ns`,
on the hub off every node, so no node fault takes it down. It answers only from the records file
(:func:`harness.kube.dns.hosts_text`), which :meth:`ClusterDns.publish` rewrites whenever the
records change and then signals (dnsmasq re-reads ``--addn-hosts`` on SIGHUP). Every other name
under the cluster domain is NXDOMAIN; names outside it have no upstream server (the pods need none).

:func:`query` is a minimal client (one A question over UDP): the readiness check, and for tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from harness.kube.dns import Records, hosts_text
from harness.kube.workloads import CLUSTER_DOMAIN
from harness.runtime.netns import NetnsLayout
from harness.runtime.poll import poll

DNSMASQ_BIN: Final = "dnsmasq"
NAMESPACE: Final = "kube-system"
"""The namespace GKE's cluster DNS pods run in."""
LABELS: Final[Mapping[str, str]] = {"k8s-app": "kube-dns"}
"""The labels of GKE's kube-dns pods (what a NetworkPolicy peer selects the cluster DNS by)."""
PORT: Final = 53
TTL_S: Final = 5
"""CoreDNS's kubernetes plugin default TTL (the pods' resolvers cache nothing anyway)."""
READY_TIMEOUT_S: Final = 15.0


class DnsError(RuntimeError):
    """The DNS server could not start or answer; the message says why."""


class ClusterDns:
    """One dnsmasq serving one cluster's records; files in ``workdir``. See the module docstring."""

    def __init__(self, workdir: Path, cluster_domain: str = CLUSTER_DOMAIN) -> None:
        self.workdir = workdir
        self.cluster_domain = cluster_domain
        self.address = ""
        """The server's address once started (``layout.dns_ip``)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._published: Records | None = None
        self._lock = threading.Lock()

    @property
    def hosts_file(self) -> Path:
        return self.workdir / "records"

    @property
    def log(self) -> Path:
        return self.workdir / "dnsmasq.log"

    def argv(self, layout: NetnsLayout) -> list[str]:
        """dnsmasq's command line: no config, resolv.conf, /etc/hosts or upstream; the records file only."""
        binary = shutil.which(DNSMASQ_BIN)
        if binary is None:
            raise DnsError("dnsmasq is not installed: `make system-deps` (apt-get install dnsmasq-base)")
        return [
            "nsenter",
            f"--net=/run/netns/{layout.dns_ns}",
            "--",
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--addn-hosts={self.hosts_file}",
            f"--local=/{self.cluster_domain}/",
            f"--listen-address={layout.dns_ip}",
            "--bind-interfaces",
            f"--port={PORT}",
            f"--local-ttl={TTL_S}",
            "--pid-file=",
            # root: it reads the records file from the run's work directory, whatever its modes.
            "--user=root",
            "--group=root",
            f"--log-facility={self.log}",
        ]

    def start(self, layout: NetnsLayout) -> None:
        """Start answering (no record yet); returns once the server answers a query."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write({})
        self._proc = subprocess.Popen(
            self.argv(layout), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self.address = layout.dns_ip

        def answers() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise DnsError(f"dnsmasq exited with {self._proc.returncode}; see {self.log}")
            return query(self.address, f"ready.{self.cluster_domain}", timeout=0.5) is not None

        poll(answers, READY_TIMEOUT_S, f"the cluster DNS at {self.address} to answer", interval=0.1, not_yet=(OSError,))

    def publish(self, records: Records) -> bool:
        """Serve ``records`` from now on (dnsmasq re-reads them on SIGHUP); False if nothing changed."""
        with self._lock:
            if self._proc is None or records == self._published:
                return False
            self._write(records)
            self._proc.send_signal(signal.SIGHUP)
            return True

    def _write(self, records: Records) -> None:
        # Replaced whole: a SIGHUP never finds half a file.
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text(hosts_text(records))
        os.replace(tmp, self.hosts_file)
        self._published = dict(records)

    def stop(self) -> None:
        """Stop the server. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# --- a minimal client ----------------------------------------------------------------------------

_NXDOMAIN: Final = 3


def _question(name: str, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)  # type A, class IN


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length


def parse_answer(data: bytes, ident: int) -> list[str] | None:
    """The A records of a response to question ``ident``; [] for NXDOMAIN or no data, None if not one."""
    if len(data) < 12:
        return None
    got, flags, questions, answers = struct.unpack("!HHHH", data[:8])
    if got != ident or not flags & 0x8000:
        return None
    if flags & 0x000F not in (0, _NXDOMAIN):
        return None
    at = 12
    for _ in range(questions):
        at = _skip_name(data, at) + 4
    found: list[str] = []
    for _ in range(answers):
        at = _skip_name(data, at)
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[at : at + 10])
        at += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(data[at : at + 4]))
        at += length
    return found


def query(server: str, name: str, *, timeout: float = 2.0) -> list[str] | None:
    """Ask ``server`` for ``name``'s A records: the addresses ([] if none), None if it did not answer."""
    ident = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(_question(name, ident), (server, PORT))
        with contextlib.suppress(TimeoutError):
            return parse_answer(sock.recv(4096), ident)
    return None
