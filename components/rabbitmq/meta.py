"""What every object of the broker shares: labels, metadata, the selector and the AMQP port."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi_kubernetes as k8s

from contract.wire import AMQP_PORT, AMQPS_PORT

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def selector(args: RabbitMQClusterArgs) -> dict[str, str]:
    return {"app.kubernetes.io/name": args.name}


def labels(args: RabbitMQClusterArgs) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": args.name,
        "app.kubernetes.io/component": "broker",
        "app.kubernetes.io/part-of": "ha-celery",
    }


def metadata(object_name: str, args: RabbitMQClusterArgs) -> k8s.meta.v1.ObjectMetaArgsDict:
    return {"name": object_name, "namespace": args.namespace, "labels": labels(args)}


def amqp_port(args: RabbitMQClusterArgs) -> int:
    """The one AMQP port clients use: AMQPS_PORT with TLS, else AMQP_PORT."""
    return AMQPS_PORT if args.tls else AMQP_PORT


def amqp_port_name(args: RabbitMQClusterArgs) -> str:
    return "amqps" if args.tls else "amqp"
