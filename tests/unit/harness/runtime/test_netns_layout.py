"""The namespaces' addresses: pods, the cluster DNS server and the root namespace never collide."""

from __future__ import annotations

import ipaddress

import pytest

from harness.runtime.netns import POD_SLOTS, NetnsError, NetnsLayout

LAYOUT = NetnsLayout(owner_pid=42, short="abc123", subnet=ipaddress.IPv4Network("198.18.7.0/24"), nodes=3)


def test_the_dns_server_has_its_own_address_and_namespace() -> None:
    assert LAYOUT.dns_ip == "198.18.7.253"
    assert LAYOUT.dns_ns == "hacel-42-abc123-dns"
    assert LAYOUT.dns_ns in LAYOUT.all_ns()
    pods = {LAYOUT.pod_ip(k) for k in range(POD_SLOTS)}
    nodes = {LAYOUT.node_ip(i) for i in range(LAYOUT.nodes)}
    assert len(pods) == POD_SLOTS
    assert not pods & ({LAYOUT.dns_ip, LAYOUT.root_ip} | nodes)


def test_no_pod_slot_beyond_the_range() -> None:
    with pytest.raises(NetnsError, match="outside"):
        LAYOUT.pod_ip(POD_SLOTS)
