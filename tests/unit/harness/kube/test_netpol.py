"""The NetworkPolicy compiler: objects -> one pod's nftables ruleset, by the API's semantics.

Each test reads the accept lines of a chain (rules are tagged with the policy rule they come from);
the real packets through these rules are tests/integration/kube/test_netpol_dataplane.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.kube.fields import UnsupportedFieldError, audit
from harness.kube.netpol import Endpoint, compile_pod, parse_network_policy
from harness.kube.objects import ContainerPort

NODE = "198.18.0.1"
BROKER = Endpoint("rabbitmq-0", "198.18.0.10", "app", {"app": "rabbitmq"}, (ContainerPort(5672, "amqp"),))
CLIENT = Endpoint("worker-a", "198.18.0.11", "app", {"client": "true"}, (ContainerPort(9808, "metrics"),))
CLIENT_ELSEWHERE = Endpoint("client-b", "198.18.0.12", "other", {"client": "true"})
DNS = Endpoint("dns", "198.18.0.13", "kube-system", {"k8s-app": "kube-dns"}, (ContainerPort(53, "dns", "UDP"),))
PEERS = [BROKER, CLIENT, CLIENT_ELSEWHERE, DNS]


def policy(spec: dict[str, Any], namespace: str = "app", name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def chain(script: str, direction: str) -> list[str] | None:
    """The lines of a chain (None: the pod is not isolated in that direction)."""
    lines = script.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"chain {direction} {{"), None)
    if start is None:
        return None
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return [line.strip() for line in lines[start + 1 : end]]


def accepts(script: str, direction: str) -> list[str]:
    """A chain's policy-derived accept lines, without their comments."""
    found = chain(script, direction)
    assert found is not None, f"not isolated for {direction}"
    return [line.split(" comment ")[0] for line in found if "/p " in line and " accept " in line]


def compiled(specs: list[dict[str, Any]], pod: Endpoint, namespaces: dict[str, dict[str, str]] | None = None) -> str:
    policies = [parse_network_policy(policy(s)) for s in specs]
    return compile_pod(policies, pod, NODE, PEERS, namespaces)


BROKER_INGRESS = {
    "podSelector": {"matchLabels": {"app": "rabbitmq"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"client": "true"}}}], "ports": [{"port": 5672}]}],
}


def test_a_pod_no_policy_selects_is_open_both_ways() -> None:
    script = compiled([BROKER_INGRESS], CLIENT)
    assert chain(script, "ingress") is None
    assert chain(script, "egress") is None
    assert "table inet hacel_netpol {" in script, "the table is still replaced (a policy removed must open it)"


def test_policy_types_default_to_ingress_and_egress_when_egress_is_written() -> None:
    assert parse_network_policy(policy(BROKER_INGRESS)).policy_types == {"Ingress"}
    both = parse_network_policy(policy({**BROKER_INGRESS, "egress": []}))
    assert both.policy_types == {"Ingress", "Egress"}
    script = compiled([{**BROKER_INGRESS, "egress": []}], BROKER)
    assert accepts(script, "egress") == [], "an empty egress list isolates: nothing is allowed out"
    assert chain(script, "egress") is not None


def test_a_pod_selector_alone_means_the_policys_namespace() -> None:
    script = compiled([BROKER_INGRESS], BROKER)
    assert accepts(script, "ingress") == ["ip saddr { 198.18.0.11 } tcp dport { 5672 } accept"]
    assert chain(script, "egress") is None, "Ingress only: egress stays open"


def test_namespace_and_pod_selectors_in_one_peer_are_an_and_two_peers_an_or() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"team": "x"}},
                        "podSelector": {"matchLabels": {"client": "true"}},
                    },
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}},
                ]
            }
        ],
    }
    # "other" is labelled team=x by its Namespace object; "app" is not.
    script = compiled([spec], BROKER, {"other": {"team": "x"}})
    assert accepts(script, "ingress") == ["ip saddr { 198.18.0.12, 198.18.0.13 } accept"]


def test_rules_of_every_selecting_policy_are_a_union() -> None:
    metrics = {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "metrics"}, {"port": 15692}]}],
    }
    script = compiled([BROKER_INGRESS, metrics], BROKER)
    every_pod = "ip saddr { 198.18.0.10, 198.18.0.11, 198.18.0.12, 198.18.0.13 }"
    assert accepts(script, "ingress") == [
        "ip saddr { 198.18.0.11 } tcp dport { 5672 } accept",
        # The broker has no port named "metrics": that entry matches nothing on it.
        f"{every_pod} tcp dport {{ 15692 }} accept",
    ]


def test_named_ports_resolve_on_the_destination_pod() -> None:
    spec = {
        "podSelector": {"matchLabels": {"client": "true"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": "metrics"}]}],
        "egress": [
            {"to": [{"namespaceSelector": {}}], "ports": [{"port": "amqp"}, {"port": "dns", "protocol": "UDP"}]}
        ],
    }
    script = compiled([spec], CLIENT)
    assert accepts(script, "ingress") == ["tcp dport { 9808 } accept"], "no peers: from anywhere"
    assert accepts(script, "egress") == [
        "ip daddr { 198.18.0.10 } tcp dport { 5672 } accept",
        "ip daddr { 198.18.0.13 } udp dport { 53 } accept",
    ]


def test_port_ranges_protocol_only_entries_and_rules_without_ports() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "rabbitmq"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "rabbitmq"}}}]},
            {"ports": [{"port": 35672, "endPort": 35682}, {"protocol": "UDP"}]},
        ],
    }
    assert accepts(compiled([spec], BROKER), "ingress") == [
        "ip saddr { 198.18.0.10 } accept",
        "tcp dport { 35672-35682 } accept",
        "meta l4proto udp accept",
    ]


def test_ip_blocks_match_addresses_minus_their_exceptions() -> None:
    spec = {
        "podSelector": {"matchLabels": {"client": "true"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": 443}]}],
    }
    script = compiled([spec], CLIENT)
    assert chain(script, "ingress") is None
    assert accepts(script, "egress") == ["ip daddr 10.0.0.0/8 ip daddr != { 10.1.0.0/16 } tcp dport { 443 } accept"]


def test_an_isolated_pod_keeps_loopback_replies_and_its_node_and_records_what_it_drops() -> None:
    lines = chain(compiled([BROKER_INGRESS], BROKER), "ingress")
    assert lines is not None
    assert lines[1].startswith('iif "lo" accept')
    assert lines[2].startswith("ct state established,related accept")
    assert lines[3].startswith(f"ip saddr {NODE} accept")
    assert lines[-2].startswith("meta l4proto { tcp, udp, sctp } update @denied_in")
    assert lines[-1].startswith("meta l4proto { tcp, udp, sctp, icmp } drop")


def test_policies_of_another_namespace_do_not_select_the_pod() -> None:
    elsewhere = parse_network_policy(policy({"podSelector": {}, "ingress": []}, namespace="other"))
    assert chain(compile_pod([elsewhere], BROKER, NODE, PEERS), "ingress") is None
    assert chain(compile_pod([elsewhere], CLIENT_ELSEWHERE, NODE, PEERS), "ingress") is not None


def test_the_field_table_accepts_every_field_the_compiler_reads() -> None:
    spec = {
        "podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"x": "y"}}, "namespaceSelector": {"matchLabels": {"n": "m"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"protocol": "TCP", "port": 1, "endPort": 2}, {"protocol": "UDP", "port": "dns"}],
            }
        ],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "SCTP", "port": 3}]}],
    }
    deltas, refused = audit(policy(spec))
    assert (deltas, refused) == ([], [])
    assert [r.path for r in audit(policy({**spec, "policyTypes": ["Sideways"]}))[1]] == ["spec.policyTypes[0]"]


def test_a_port_the_compiler_cannot_run_is_refused_by_name() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": "amqp", "endPort": 9}]}]}
    with pytest.raises(UnsupportedFieldError, match=r"spec\.ingress\[0\]\.ports\[0\]\.endPort"):
        parse_network_policy(policy(spec))
