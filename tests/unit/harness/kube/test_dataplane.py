"""The policy dataplane's bookkeeping, nft replaced by a recorder: what is loaded where, and when."""

from __future__ import annotations

import pytest

from harness.kube.dataplane import HostPeer, PodNetwork, PolicyDataplane
from harness.kube.netpol import Endpoint, parse_network_policy
from harness.runtime import nft as nft_module

POLICY = parse_network_policy(
    {
        "kind": "NetworkPolicy",
        "metadata": {"name": "brokers", "namespace": "app"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "rabbitmq"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"client": "true"}}}], "ports": [{"port": 5672}]}],
        },
    }
)
BROKER = PodNetwork(Endpoint("rabbitmq-0", "198.18.0.10", "app", {"app": "rabbitmq"}), "ns-broker", "198.18.0.1")
WORKER = PodNetwork(Endpoint("worker-a", "198.18.0.11", "app", {"client": "true"}), "ns-worker", "198.18.0.2")


class Recorder:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.denied: dict[tuple[str, str], list[tuple[str, ...]]] = {}

    def apply(self, netns: str, script: str) -> None:
        self.loaded.append((netns, script))

    def set_elements(self, netns: str, table: str, name: str) -> list[tuple[str, ...]]:
        del table
        return self.denied.get((netns, name), [])

    def event(self, subject: str, reason: str, message: str) -> None:
        self.events.append((subject, reason, message))


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(nft_module, "apply", recorder.apply)
    monkeypatch.setattr(nft_module, "set_elements", recorder.set_elements)
    return recorder


def test_rules_are_loaded_once_and_again_when_a_peer_comes_or_goes(nft: Recorder) -> None:
    plane = PolicyDataplane(nft.event, enforce=True)
    plane.sync([POLICY], [BROKER])
    plane.sync([POLICY], [BROKER])
    assert [ns for ns, _ in nft.loaded] == ["ns-broker"], "an unchanged ruleset is not reloaded"
    assert "198.18.0.11" not in nft.loaded[0][1]
    plane.sync([POLICY], [BROKER, WORKER])
    assert [ns for ns, _ in nft.loaded[1:]] == ["ns-broker", "ns-worker"]
    assert "ip saddr { 198.18.0.11 } tcp dport { 5672 }" in nft.loaded[1][1], "the new worker is admitted"
    plane.sync([POLICY], [BROKER])
    assert nft.loaded[-1] == nft.loaded[0], "the worker gone: the broker's rules drop its address"
    applied = [e for e in nft.events if e[1] == "PolicyApplied"]
    assert applied == [
        ("rabbitmq-0", "PolicyApplied", "ingress: brokers; egress: open"),
        ("worker-a", "PolicyApplied", "ingress: open; egress: open"),
    ]


def test_a_readdressed_pod_moves_in_its_peers_rules(nft: Recorder) -> None:
    plane = PolicyDataplane(nft.event, enforce=True)
    plane.sync([POLICY], [BROKER, WORKER])
    moved = PodNetwork(Endpoint("worker-a", "198.18.0.42", "app", {"client": "true"}), "ns-worker2", "198.18.0.2")
    plane.sync([POLICY], [BROKER, moved])
    broker_rules = [script for ns, script in nft.loaded if ns == "ns-broker"]
    assert "198.18.0.42" in broker_rules[-1]
    assert "198.18.0.11" not in broker_rules[-1]


def test_refused_flows_are_events_of_the_refusing_pod_once_each(nft: Recorder) -> None:
    plane = PolicyDataplane(nft.event, enforce=True)
    plane.sync([POLICY], [BROKER, WORKER], [Endpoint("the host", "198.18.0.254", "gmp-system")])
    nft.denied[("ns-broker", "denied_in")] = [("198.18.0.11", "tcp", "15672"), ("198.18.0.9", "tcp", "22")]
    assert plane.read_denied() == [
        "rabbitmq-0: ingress from 198.18.0.11 (worker-a) tcp/15672 refused",
        "rabbitmq-0: ingress from 198.18.0.9 (an unknown address) tcp/22 refused",
    ]
    assert plane.read_denied() == []
    assert [e[1] for e in nft.events].count("PolicyDenied") == 2


def test_a_load_failure_is_an_event_and_retried(nft: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(netns: str, script: str) -> None:
        del script
        raise nft_module.NftError(f"{netns}: no such table")

    plane = PolicyDataplane(nft.event, enforce=True)
    monkeypatch.setattr(nft_module, "apply", broken)
    plane.sync([POLICY], [BROKER])
    assert nft.events[-1][:2] == ("rabbitmq-0", "PolicyFailed")
    monkeypatch.setattr(nft_module, "apply", nft.apply)
    plane.sync([POLICY], [BROKER])
    assert [ns for ns, _ in nft.loaded] == ["ns-broker"]


def test_without_nft_every_policy_is_a_delta_and_nothing_is_loaded(nft: Recorder) -> None:
    plane = PolicyDataplane(nft.event, enforce=False)
    plane.sync([POLICY], [BROKER])
    assert nft.loaded == []
    deltas = plane.deltas([POLICY], "198.18.0.254", [])
    assert [(d.obj, d.local) for d in deltas] == [
        ("NetworkPolicy/app/brokers", "not enforced: every local pod reaches every port of every other")
    ]
    assert PolicyDataplane(nft.event, enforce=True).deltas([POLICY], "198.18.0.254", []) == []


def test_each_identity_of_the_host_is_a_delta(nft: Recorder) -> None:
    plane = PolicyDataplane(nft.event, enforce=True)
    peer = HostPeer("gmp-system", {}, "the drill's Prometheus scrapes from the host")
    [delta] = plane.deltas([POLICY], "198.18.0.254", [peer])
    assert delta.path == "address 198.18.0.254"
    assert "namespace gmp-system" in delta.local
    assert delta.why == peer.why
    dns = HostPeer("kube-system", {"k8s-app": "kube-dns"}, "a local DNS server stands for kube-dns", ip="198.18.0.253")
    assert [d.path for d in plane.deltas([POLICY], "198.18.0.254", [peer, dns])] == [
        "address 198.18.0.254",
        "address 198.18.0.253",
    ]
