"""The two Services: the headless one that names each node, and the client one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.rabbitmq import meta
from contract.wire import DIST_PORT, EPMD_PORT, MANAGEMENT_PORT, NODES_SERVICE, PROMETHEUS_PORT, child_name

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def services(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> tuple[k8s.core.v1.Service, k8s.core.v1.Service]:
    headless = k8s.core.v1.Service(
        f"{name}-nodes",
        metadata=meta.metadata(child_name(args.name, NODES_SERVICE), args),
        spec={
            "cluster_ip": "None",
            # Peers must resolve each other while booting, before any is ready, or a whole-
            # cluster restart waits for a readiness that needs the peers: a deadlock.
            "publish_not_ready_addresses": True,
            "selector": meta.selector(args),
            "ports": [
                {"name": "epmd", "port": EPMD_PORT, "target_port": EPMD_PORT},
                {"name": "cluster-links", "port": DIST_PORT, "target_port": DIST_PORT},
            ],
        },
        opts=child,
    )
    client = k8s.core.v1.Service(
        f"{name}-client",
        metadata=meta.metadata(args.name, args),
        spec={
            "type": "ClusterIP",
            "selector": meta.selector(args),
            "ports": [
                _amqp_service_port(args),
                {"name": "management", "port": MANAGEMENT_PORT, "target_port": MANAGEMENT_PORT, "app_protocol": "http"},
                {"name": "prometheus", "port": PROMETHEUS_PORT, "target_port": PROMETHEUS_PORT, "app_protocol": "http"},
            ],
        },
        opts=child,
    )
    return headless, client


def _amqp_service_port(args: RabbitMQClusterArgs) -> k8s.core.v1.ServicePortArgsDict:
    port, port_name = meta.amqp_port(args), meta.amqp_port_name(args)
    return {"name": port_name, "port": port, "target_port": port, "app_protocol": port_name}


def hosts(args: RabbitMQClusterArgs) -> pulumi.Output[list[str]]:
    """Every node's DNS name through the headless Service (the workers' failover list)."""
    app, nodes_service = args.name, child_name(args.name, NODES_SERVICE)
    return pulumi.Output.from_input(args.namespace).apply(
        lambda ns: [f"{app}-{i}.{nodes_service}.{ns}.svc.cluster.local" for i in range(args.replicas)]
    )
