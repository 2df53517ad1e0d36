"""The brokers' PriorityClass and their tolerations of a lost node.

Priority: a broker pod that must come back (its node deleted, its StatefulSet recreating it on
another node) may preempt worker pods where the node pool is full, rather than wait for the
autoscaler: three brokers are the whole queue, a worker pod is a fraction of the capacity. Below
GKE's system classes (``system-cluster-critical`` is 2,000,000,000): DNS and the CNI still win.

Tolerations (decided by the node drills, docs/operate-broker.md "A dead node"):

* ``unreachable`` for ever (no ``tolerationSeconds``). Evicting a broker whose node is unreachable
  frees nothing: its StatefulSet never recreates a pod whose object still exists, so the pod stays
  Terminating on the lost node until the Node is deleted (GKE auto-repair, or an operator) or its
  node is tainted out-of-service. And if the node comes back (a network cut), an evicted broker is
  killed by its kubelet and restarted: one more failover and a full resync for nothing, where a
  broker left alone rejoins as it is (``make demo SCENARIO=node-unreachable``);
* ``not-ready`` for the API server's default 300 s, written out: a kubelet that says it cannot run
  pods is alive, so it carries out the eviction (the old broker stops before its object goes, so
  two never run on one disk) and the StatefulSet recreates the pod on a healthy node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from contract.timing import DEFAULT_TOLERATION_S, NODE_NOT_READY_TAINT, NODE_UNREACHABLE_TAINT
from contract.wire import child_name

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

PRIORITY_CLASS = "broker-priority"
"""``<name>-broker-priority``: cluster-scoped, so named after the StatefulSet."""
BROKER_PRIORITY = 1_000_000
"""Above every workload class of the cluster (none is set: 0), far below the system classes."""


def priority_class_name(args: RabbitMQClusterArgs) -> str:
    return child_name(args.name, PRIORITY_CLASS)


def priority_class(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> k8s.scheduling.v1.PriorityClass:
    return k8s.scheduling.v1.PriorityClass(
        f"{name}-priority-class",
        metadata={"name": priority_class_name(args)},
        value=BROKER_PRIORITY,
        global_default=False,
        preemption_policy="PreemptLowerPriority",
        description="RabbitMQ brokers: may preempt worker pods to come back (ha-celery).",
        opts=child,
    )


def tolerations() -> list[k8s.core.v1.TolerationArgsDict]:
    return [
        {"key": NODE_UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"},
        {
            "key": NODE_NOT_READY_TAINT,
            "operator": "Exists",
            "effect": "NoExecute",
            "toleration_seconds": DEFAULT_TOLERATION_S,
        },
    ]
