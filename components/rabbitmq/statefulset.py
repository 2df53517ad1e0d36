"""The StatefulSet and the StorageClass of its claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from broker.render import BOOT_DEADLINE_S, SEED_JOIN_WAIT_S
from components.rabbitmq import meta
from components.rabbitmq.pod import GRACE_SECONDS
from contract.wire import NODES_SERVICE, child_name

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

STORAGE_CLASS_IMMUTABLE = ("reclaimPolicy", "volumeBindingMode")
"""StorageClass fields the API server refuses to update, which the provider does not replace on."""


def storage_class(name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions) -> k8s.storage.v1.StorageClass:
    return k8s.storage.v1.StorageClass(
        f"{name}-storage",
        metadata={"name": child_name(args.name, args.disk_type), "labels": meta.labels(args)},
        provisioner="pd.csi.storage.gke.io",
        parameters={"type": args.disk_type},
        # Bind where the pod lands: a zonal disk provisioned first could strand the pod in a
        # zone the anti-affinity rules out.
        volume_binding_mode="WaitForFirstConsumer",
        allow_volume_expansion=True,
        reclaim_policy="Retain" if args.production else "Delete",
        # Both are immutable in the API, yet the provider would patch them in place (it replaces on
        # parameters/provisioner only) and the API server would refuse. The name is fixed, so the
        # old class must go first; bound claims keep their PVs (and those their reclaim policy).
        opts=pulumi.ResourceOptions.merge(
            child,
            pulumi.ResourceOptions(replace_on_changes=list(STORAGE_CLASS_IMMUTABLE), delete_before_replace=True),
        ),
    )


def statefulset(
    name: str,
    args: RabbitMQClusterArgs,
    child: pulumi.ResourceOptions,
    *,
    pod_spec: k8s.core.v1.PodSpecArgsDict,
    annotations: dict[str, pulumi.Input[str]],
    mounts: list[pulumi.Resource],
) -> k8s.apps.v1.StatefulSet:
    """``annotations``: the pod template's checksums of everything the pods read at start that can
    change. ``mounts``: the objects the pods read (Services, StorageClass, ConfigMap, Secrets),
    waited for through depends_on: every name in the spec is a plain string (child_name), so no
    property of the StatefulSet depends on them and no replacement of one replaces it (the
    engine's dependent replacement follows property dependencies only: pulumi/pulumi
    pkg/resource/deploy/step_generator.go, calculateDependentReplacements)."""
    labels = meta.labels(args)
    return k8s.apps.v1.StatefulSet(
        f"{name}-statefulset",
        metadata=meta.metadata(args.name, args),
        spec={
            "service_name": child_name(args.name, NODES_SERVICE),
            "replicas": args.replicas,
            # Parallel: all nodes boot together; OrderedReady would wait for pod 0's readiness,
            # which after a full stop may need the other nodes.
            "pod_management_policy": "Parallel",
            "update_strategy": {"type": "RollingUpdate"},
            # Claims outlive the StatefulSet in every stack: scaled-down ones (a scale-up back
            # finds its data) and, on delete, all of them. A replacement nobody asked for (a
            # disk kind change, `--replace`) deletes the StatefulSet and creates it again: the
            # new pods take the old claims back by name, with every queued task. Dev's
            # `pulumi destroy` still cleans up: it deletes the namespace, which deletes the
            # claims, and dev's StorageClass (reclaim Delete) then deletes the disks.
            "persistent_volume_claim_retention_policy": {"when_scaled": "Retain", "when_deleted": "Retain"},
            "selector": {"match_labels": meta.selector(args)},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
            "volume_claim_templates": [
                {
                    "metadata": {"name": "persistence", "labels": labels},
                    "spec": {
                        "access_modes": ["ReadWriteOnce"],
                        "storage_class_name": child_name(args.name, args.disk_type),
                        "resources": {"requests": {"storage": f"{args.storage_gi}Gi"}},
                    },
                }
            ],
        },
        opts=pulumi.ResourceOptions.merge(
            child,
            pulumi.ResourceOptions(
                # volumeClaimTemplates is immutable: the provider would replace the StatefulSet
                # (fixed name: delete first, all brokers down at once) on a size change. Existing
                # claims grow by volume expansion instead (docs/operate-broker.md). A disk kind change still replaces.
                ignore_changes=[STORAGE_REQUEST_PATH],
                custom_timeouts=_timeouts(args.replicas),
                depends_on=mounts,
            ),
        ),
    )


STORAGE_REQUEST_PATH = "spec.volumeClaimTemplates[0].spec.resources.requests.storage"
"""Property path of the claim template's size, kept at its first value by ignore_changes."""
POD_START_S = 300
"""Allowance for a broker pod to get going before its boot: disk provisioning and attach, image
pull, scheduling. An estimate: it only pads Pulumi's wait, nothing waits for it."""


def _timeouts(replicas: int) -> pulumi.CustomTimeouts:
    # Pulumi's default 10 min per await is shorter than the broker's own budgets: an update rolls
    # one pod at a time, each may take its whole grace period to stop and its postStart deadline
    # to boot; a delete waits for the grace period (all pods stop together). A timeout here
    # fails `pulumi up` with the rollout half done, so err long.
    boot = POD_START_S + SEED_JOIN_WAIT_S + BOOT_DEADLINE_S
    return pulumi.CustomTimeouts(
        create=f"{boot}s",
        update=f"{replicas * (GRACE_SECONDS + boot)}s",
        delete=f"{GRACE_SECONDS + POD_START_S}s",
    )
