"""Cluster DNS records from Services and live pods, the hosts file dnsmasq serves, a pod's resolv.conf."""

from __future__ import annotations

import struct

from harness.kube.dns import cluster_records, hosts_text, resolv_conf, search_path
from harness.kube.dns_server import _question, parse_answer
from harness.kube.objects import Service
from harness.kube.workloads import PodAddress

NS = "ha-celery"
BROKER = {"app": "rabbitmq"}
WORKER = {"app": "celery-worker"}
HEADLESS = Service("rabbitmq-nodes", NS, BROKER, (), headless=True, publish_not_ready_addresses=True)
CLIENT = Service("rabbitmq", NS, BROKER, (), headless=False, publish_not_ready_addresses=False)


def broker(i: int, ip: str, *, ready: bool = True, terminating: bool = False, ns: str = NS) -> PodAddress:
    name = f"rabbitmq-{i}"
    return PodAddress(name, ns, ip, name, "rabbitmq-nodes", ready, BROKER, terminating)


def fqdn(i: int) -> str:
    return f"rabbitmq-{i}.rabbitmq-nodes.{NS}.svc.cluster.local"


def test_statefulset_pods_and_both_services() -> None:
    pods = [broker(0, "10.0.0.10"), broker(1, "10.0.0.11"), broker(2, "10.0.0.12")]
    records = cluster_records([HEADLESS, CLIENT], pods)
    assert records == {
        fqdn(0): ("10.0.0.10",),
        fqdn(1): ("10.0.0.11",),
        fqdn(2): ("10.0.0.12",),
        f"rabbitmq-nodes.{NS}.svc.cluster.local": ("10.0.0.10", "10.0.0.11", "10.0.0.12"),
        f"rabbitmq.{NS}.svc.cluster.local": ("10.0.0.10", "10.0.0.11", "10.0.0.12"),
    }


def test_publish_not_ready_addresses_keeps_a_booting_peer_resolvable() -> None:
    # A booting broker must resolve its peers before any is Ready; the client Service hides it.
    pods = [broker(0, "10.0.0.10"), broker(1, "10.0.0.11", ready=False), broker(2, "10.0.0.12", terminating=True)]
    records = cluster_records([HEADLESS, CLIENT], pods)
    assert records[fqdn(1)] == ("10.0.0.11",)
    assert records[fqdn(2)] == ("10.0.0.12",)
    assert records[f"rabbitmq.{NS}.svc.cluster.local"] == ("10.0.0.10",)


def test_without_publish_not_ready_only_ready_pods_have_names() -> None:
    strict = Service("rabbitmq-nodes", NS, BROKER, (), headless=True, publish_not_ready_addresses=False)
    pods = [broker(0, "10.0.0.10"), broker(1, "10.0.0.11", ready=False), broker(2, "10.0.0.12", terminating=True)]
    records = cluster_records([strict], pods)
    assert fqdn(0) in records
    assert fqdn(1) not in records
    assert fqdn(2) not in records
    assert records[f"rabbitmq-nodes.{NS}.svc.cluster.local"] == ("10.0.0.10",)


def test_a_recreated_pod_is_answered_at_its_new_address_only() -> None:
    before = cluster_records([HEADLESS], [broker(0, "10.0.0.10")])
    after = cluster_records([HEADLESS], [broker(0, "10.0.0.13")])
    assert before[fqdn(0)] == ("10.0.0.10",)
    assert after[fqdn(0)] == ("10.0.0.13",)
    assert cluster_records([HEADLESS], []) == {}


def test_selector_namespace_and_subdomain_decide() -> None:
    worker = PodAddress("celery-worker-abc-xyz12", NS, "10.0.0.20", ready=True, labels=WORKER)
    other_ns = broker(3, "10.0.0.21", ns="elsewhere")
    # A pod whose subdomain names no headless Service has no pod name, even if selected.
    stray = PodAddress("rabbitmq-9", NS, "10.0.0.22", "rabbitmq-9", "other", True, BROKER)
    no_ip = PodAddress("rabbitmq-8", NS, "", "rabbitmq-8", "rabbitmq-nodes", True, BROKER)
    records = cluster_records([HEADLESS, CLIENT], [worker, other_ns, stray, no_ip])
    assert records == {
        f"rabbitmq-nodes.{NS}.svc.cluster.local": ("10.0.0.22",),
        f"rabbitmq.{NS}.svc.cluster.local": ("10.0.0.22",),
    }
    # A ClusterIP Service gives no per-pod names.
    assert not any(n.startswith("rabbitmq-0.rabbitmq.") for n in cluster_records([CLIENT], [broker(0, "10.0.0.10")]))


def test_hosts_text_has_a_line_per_address() -> None:
    text = hosts_text({fqdn(0): ("10.0.0.10",), "svc.ns.svc.cluster.local": ("10.0.0.10", "10.0.0.11")})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        f"10.0.0.10\t{fqdn(0)}",
        "10.0.0.10\tsvc.ns.svc.cluster.local",
        "10.0.0.11\tsvc.ns.svc.cluster.local",
    ]


def test_resolv_conf_is_the_kubelets_cluster_first_file() -> None:
    assert search_path(NS) == (f"{NS}.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert resolv_conf(NS, "198.18.0.253") == (
        f"search {NS}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.18.0.253\noptions ndots:5\n"
    )


def _response(ident: int, name: str, rcode: int, addresses: list[bytes]) -> bytes:
    question = _question(name, ident)[12:]
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(addresses), 0, 0)
    answers = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + a for a in addresses)
    return header + question + answers


def test_parse_answer() -> None:
    name = fqdn(0)
    assert parse_answer(_response(7, name, 0, [bytes([10, 0, 0, 10]), bytes([10, 0, 0, 11])]), 7) == [
        "10.0.0.10",
        "10.0.0.11",
    ]
    assert parse_answer(_response(7, name, 3, []), 7) == []
    assert parse_answer(_response(8, name, 0, []), 7) is None, "another question's answer"
    assert parse_answer(_response(7, name, 5, []), 7) is None, "REFUSED is no answer"
    assert parse_answer(b"\0", 7) is None
