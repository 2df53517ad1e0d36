"""The policy dataplane: the plan's NetworkPolicies enforced with nftables in every pod's namespace.

The CNI's part that GKE Dataplane V2 plays. At every pass of the controllers :meth:`PolicyDataplane.sync`
compiles each running pod's ruleset (:func:`harness.kube.netpol.compile_pod`) from the policies and
the addresses of the pods that run now, and loads it in the pod's namespace when it changed: a pod
that starts, stops or gets another address changes its peers' rules at the next pass, as an agent
watching the API server would. A new pod gets its own rules before its first container starts.

A thread reads the rulesets' ``denied`` sets every :data:`DENIED_POLL_S` and records each refused
flow once as a ``PolicyDenied`` event of the pod that refused it: a drill can tell a policy that
blocked what the plan needs from a fault.

Without ``nft`` nothing is enforced, and :meth:`PolicyDataplane.deltas` says so per policy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.kube.fields import Delta
from harness.kube.netpol import (
    DENIED_SETS,
    TABLE,
    Endpoint,
    NetworkPolicy,
    compile_pod,
    isolating,
    parse_network_policy,
)
from harness.kube.store import Store
from harness.runtime import nft

log = logging.getLogger(__name__)

DENIED_POLL_S = 5.0
"""How often the refused flows are read (a few nft calls per pod)."""


@dataclass(frozen=True)
class HostPeer:
    """A pod identity an address outside the pods carries in the policies: the host's (``ip`` None;
    the drill's publisher runs there and connects as the scheduler's pods would), or another one a
    local service listens on (a cluster DNS standing for kube-system's kube-dns pods). Always a
    reported delta."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    why: str = ""
    ip: str | None = None


@dataclass(frozen=True)
class PodNetwork:
    """A running pod as the dataplane sees it: its identity and address, its namespace, its node."""

    endpoint: Endpoint
    netns: str
    node_ip: str


class PolicyDataplane:
    """See the module docstring. ``on_event(subject, reason, message)`` records an event."""

    def __init__(self, on_event: Callable[[str, str, str], None], *, enforce: bool | None = None) -> None:
        self.enforcing = nft.available() if enforce is None else enforce
        self._on_event = on_event
        self._lock = threading.Lock()
        self._applied: dict[str, str] = {}
        """Pod network namespace -> the script loaded there."""
        self._owners: dict[str, str] = {}
        """Pod network namespace -> the pod's name (whose events the refusals are)."""
        self._names: dict[str, str] = {}
        """Address -> the pod (or host identity) that has it, for readable refusals."""
        self._seen: set[tuple[str, str, tuple[str, ...]]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self.enforcing and self._thread is None:
            self._thread = threading.Thread(target=self._poll_forever, name="netpol-denied", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the refusal reader after a last read (before the namespaces are removed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.enforcing:
            self.read_denied()

    # ------------------------------------------------------------------------------- rules

    def sync(
        self,
        policies: Sequence[NetworkPolicy],
        pods: Sequence[PodNetwork],
        others: Sequence[Endpoint] = (),
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Give every pod of ``pods`` the rules of ``policies`` among ``pods`` and ``others`` (addresses
        that stand for pods: :class:`HostPeer`); load only what changed. A failure is an event, and
        the pod is retried at the next call."""
        if not self.enforcing:
            return
        peers = [p.endpoint for p in pods] + list(others)
        desired = {p.netns: (p, compile_pod(policies, p.endpoint, p.node_ip, peers, namespaces)) for p in pods}
        with self._lock:
            names: dict[str, list[str]] = {}
            for e in peers:
                names.setdefault(e.ip, []).append(e.name)
            self._names = {ip: " = ".join(dict.fromkeys(n)) for ip, n in names.items()}
            for gone in set(self._applied) - set(desired):
                del self._applied[gone]
                self._owners.pop(gone, None)
        for netns, (pod, script) in desired.items():
            with self._lock:
                if self._applied.get(netns) == script:
                    continue
            try:
                nft.apply(netns, script)
            except (nft.NftError, OSError) as exc:
                self._on_event(pod.endpoint.name, "PolicyFailed", f"rules not loaded: {exc}")
                continue
            with self._lock:
                first = netns not in self._applied
                self._applied[netns] = script
                self._owners[netns] = pod.endpoint.name
            if first:
                self._on_event(pod.endpoint.name, "PolicyApplied", _summary(policies, pod.endpoint))

    def sync_store(self, store: Store, host_peers: Sequence[HostPeer]) -> None:
        """:meth:`sync` for the store's policies and running pods (the host's address, when the cluster
        has one, standing for ``host_peers``). Called with the store's lock held."""
        if not self.enforcing or store.layout is None:
            return
        policies = [parse_network_policy(o) for o in store.plan.network_policies]
        namespaces = {
            str(o["metadata"]["name"]): dict((o.get("metadata") or {}).get("labels") or {})
            for o in store.plan.namespaces
        }
        pods = [
            PodNetwork(
                Endpoint(
                    pod.name,
                    pod.worker.sandbox.ip,
                    pod.namespace,
                    dict(pod.template.labels),
                    tuple(port for c in pod.template.spec.containers for port in c.ports),
                ),
                pod.worker.sandbox.netns,
                pod.worker.sandbox.node_ip,
            )
            for pod in store.pods.values()
            if pod.worker is not None
        ]
        host = store.layout.root_ip
        others = [
            Endpoint(
                "the host" if p.ip is None else f"{p.namespace} at {p.ip}", p.ip or host, p.namespace, dict(p.labels)
            )
            for p in host_peers
        ]
        self.sync(policies, pods, others, namespaces)

    # ------------------------------------------------------------------------------- refusals

    def _poll_forever(self) -> None:
        while not self._stop.wait(DENIED_POLL_S):
            try:
                self.read_denied()
            except Exception:  # a reader error must be seen, and must not stop the reader
                log.exception("reading the refused flows failed")

    def read_denied(self) -> list[str]:
        """Record every refused flow not seen before as a ``PolicyDenied`` event; return their messages."""
        with self._lock:
            owners, names = dict(self._owners), dict(self._names)
        messages = []
        for netns, pod in sorted(owners.items()):
            for direction, set_name in DENIED_SETS.items():
                for flow in nft.set_elements(netns, TABLE, set_name):
                    key = (pod, direction, flow)
                    if key in self._seen:
                        continue
                    self._seen.add(key)
                    message = _refusal(direction, flow, names)
                    messages.append(f"{pod}: {message}")
                    self._on_event(pod, "PolicyDenied", message)
        return messages

    # ------------------------------------------------------------------------------- report

    def deltas(self, policies: Sequence[NetworkPolicy], host: str, host_peers: Sequence[HostPeer]) -> list[Delta]:
        """What differs from a cluster's dataplane: nothing enforced without nft; the host's identities."""
        out = [
            Delta(
                "(host)",
                f"address {p.ip or host}",
                "not a pod: no policy admits it",
                f"a pod of namespace {p.namespace} labelled {dict(p.labels)} in the NetworkPolicies",
                p.why,
            )
            for p in host_peers
        ]
        if not self.enforcing:
            out += [
                Delta(
                    f"NetworkPolicy/{p.namespace}/{p.name}",
                    "spec.*",
                    "enforced by the cluster's dataplane",
                    "not enforced: every local pod reaches every port of every other",
                    f"`{nft.NFT}` is not installed (make system-deps: Debian's nftables)",
                )
                for p in policies
            ]
        return out


def _summary(policies: Sequence[NetworkPolicy], pod: Endpoint) -> str:
    parts = []
    for direction in ("Ingress", "Egress"):
        names = [p.name for p in isolating(policies, pod, direction)]
        parts.append(f"{direction.lower()}: {', '.join(names) if names else 'open'}")
    return "; ".join(parts)


def _refusal(direction: str, flow: tuple[str, ...], names: Mapping[str, str]) -> str:
    address, *rest = flow
    protocol, port = [*rest, "?", "?"][:2]
    who = names.get(address, "an unknown address")
    way = "from" if direction == "Ingress" else "to"
    return f"{direction.lower()} {way} {address} ({who}) {protocol}/{port} refused"
