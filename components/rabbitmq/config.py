"""The broker's configuration: the conf.d files rendered by ``broker/``, their ConfigMap and checksum."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from broker.config import BrokerConfig, PeerDiscovery, RabbitVersion
from broker.render import render_definitions_json, render_enabled_plugins, render_rabbitmq_conf
from components.rabbitmq import meta
from components.rabbitmq.tls import BROKER_TLS
from contract.wire import AMQP_PORT, AMQPS_PORT, CONFIG_MAP, MANAGEMENT_PORT, PROMETHEUS_PORT, child_name

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def files(args: RabbitMQClusterArgs) -> dict[str, str]:
    config = BrokerConfig(
        version=RabbitVersion.V4_3,
        peer_discovery=PeerDiscovery.K8S,
        cluster_size=args.replicas,
        memory_limit_bytes=args.memory_mib * 1024 * 1024,
        consumer_timeout_ms=args.consumer_timeout_ms,
        task_queues=args.task_queues,
        amqp_port=AMQP_PORT,
        tls=BROKER_TLS if args.tls else None,
        amqps_port=AMQPS_PORT,
        management_port=MANAGEMENT_PORT,
        prometheus_port=PROMETHEUS_PORT,
        cluster_name=args.cluster_name,
    )
    return {
        "20-ha-celery.conf": render_rabbitmq_conf(config),
        "enabled_plugins": render_enabled_plugins(config),
        "definitions.json": render_definitions_json(config),
    }


CONFIG_CHECKSUM_ANNOTATION = "ha-celery/config-sha256"
"""Pod template annotation: a config change must roll the pods, or running brokers keep the old
files (they are copied at start, and RabbitMQ reads its config only at boot)."""


def config_checksum(files: dict[str, str]) -> str:
    """sha256 of the rendered files, names included, in name order: plain values, known before
    any resource exists, so the pod template does not depend on the ConfigMap resource."""
    return meta.digest(files)


def config_map(
    name: str, args: RabbitMQClusterArgs, files: dict[str, str], child: pulumi.ResourceOptions
) -> k8s.core.v1.ConfigMap:
    return k8s.core.v1.ConfigMap(
        f"{name}-config", metadata=meta.metadata(child_name(args.name, CONFIG_MAP), args), data=files, opts=child
    )
