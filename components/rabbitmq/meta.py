"""What every object of the broker shares: labels, metadata, the selector and the AMQP port."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pulumi
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


def digest(parts: Mapping[str, str]) -> str:
    """sha256 of named parts, names included, in name order."""
    sha = hashlib.sha256()
    for key in sorted(parts):
        sha.update(f"{key}\0{parts[key]}\0".encode())
    return sha.hexdigest()


def output_digest(parts: Mapping[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """``digest`` of values known only after their resources exist (certificates, passwords).

    The result depends on those resources (a TLS certificate, a RandomPassword), never on the
    Kubernetes Secret or ConfigMap that carries them: an Output of the Secret would make the pod
    template depend on it, and the engine's dependent replacement would come back through it
    (mitodl/ol-infrastructure PR#5893). Unsecret: a sha256 of a certificate is public like the
    certificate, and of a 32-character random password (190 bits) it tells a new value from the
    old one and nothing about either.
    """
    names = sorted(parts)
    joined = pulumi.Output.all(*(parts[n] for n in names)).apply(
        lambda values: digest(dict(zip(names, (str(v) for v in values), strict=True)))
    )
    return pulumi.Output.unsecret(joined)
