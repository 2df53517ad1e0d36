"""The PodDisruptionBudget: one broker at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.rabbitmq import meta

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs


def pdb(name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions) -> k8s.policy.v1.PodDisruptionBudget:
    return k8s.policy.v1.PodDisruptionBudget(
        f"{name}-pdb",
        metadata=meta.metadata(args.name, args),
        # One node at a time: with 3 nodes a quorum of 2 always remains through a drain.
        spec={"max_unavailable": 1, "selector": {"match_labels": meta.selector(args)}},
        opts=child,
    )
