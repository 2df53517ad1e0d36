"""The NetworkPolicy: who may reach AMQP, the management API, clustering and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.rabbitmq import meta
from contract.wire import (
    CLI_DIST_PORTS,
    CLIENT_LABEL,
    DIST_PORT,
    EPMD_PORT,
    MANAGEMENT_PORT,
    NAMESPACE_NAME_LABEL,
    OPS_LABEL,
    PROMETHEUS_PORT,
)

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def _tcp(port: int) -> k8s.networking.v1.NetworkPolicyPortArgsDict:
    return {"protocol": "TCP", "port": port}


def namespaces_peer(namespaces: tuple[str, ...]) -> k8s.networking.v1.NetworkPolicyPeerArgsDict:
    """A NetworkPolicy peer: every pod of these namespaces (by their immutable name label)."""
    return {
        "namespace_selector": {
            "match_expressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(namespaces)}]
        }
    }


def network_policy(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> k8s.networking.v1.NetworkPolicy:
    selector = meta.selector(args)
    ops: k8s.networking.v1.NetworkPolicyPeerArgsDict = {
        # Both selectors in one peer: an ops-labelled pod counts only in the ops namespace.
        "namespace_selector": {"match_labels": {NAMESPACE_NAME_LABEL: args.ops_namespace}},
        "pod_selector": {"match_labels": {OPS_LABEL: "true"}},
    }
    management_from = [ops]
    if args.keda_namespace is not None:
        # KEDA's rabbitmq trigger reads queue depth from the management API (the monitoring user).
        management_from.append(namespaces_peer((args.keda_namespace,)))
    return k8s.networking.v1.NetworkPolicy(
        f"{name}-netpol",
        metadata=meta.metadata(args.name, args),
        spec={
            "pod_selector": {"match_labels": selector},
            "policy_types": ["Ingress"],
            "ingress": [
                {
                    # A podSelector alone means this namespace: the workers and the scheduler.
                    "from_": [{"pod_selector": {"match_labels": {CLIENT_LABEL: "true"}}}, ops],
                    "ports": [_tcp(meta.amqp_port(args))],
                },
                {"from_": management_from, "ports": [_tcp(MANAGEMENT_PORT)]},
                {
                    # Clustering: epmd, the node's distribution port, and the ports the CLI tools
                    # of a peer pod listen on while they talk to this node. Only between brokers.
                    # AMQP too: a blank seed's init container probes its peers' AMQP port to join
                    # a running cluster instead of founding a second one (broker.render.setup_script).
                    "from_": [{"pod_selector": {"match_labels": selector}}],
                    "ports": [
                        _tcp(meta.amqp_port(args)),
                        _tcp(EPMD_PORT),
                        _tcp(DIST_PORT),
                        {"protocol": "TCP", "port": CLI_DIST_PORTS[0], "end_port": CLI_DIST_PORTS[1]},
                    ],
                },
                {"from_": [namespaces_peer(args.metrics_namespaces)], "ports": [_tcp(PROMETHEUS_PORT)]},
            ],
        },
        opts=child,
    )
