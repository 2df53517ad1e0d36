"""ha-celery: settings -> components -> exports. The only place that reads stack config."""

import pulumi

import settings
from components.gke import GkeCluster, GkeClusterArgs
from components.registry import Registry, RegistryArgs

config = settings.load()
labels = {"app": "ha-celery", "stack": config.stack, "environment": config.environment.value}

gke = GkeCluster(
    f"ha-celery-{config.stack}",
    GkeClusterArgs(
        project=config.cluster.project,
        location=config.cluster.location,
        regional=config.cluster.regional,
        node_zones=config.cluster.node_zones,
        nodes_per_zone=config.cluster.nodes_per_zone,
        machine_type=config.cluster.machine_type,
        spot=config.cluster.spot_nodes,
        disk_type=config.cluster.node_disk_type.value,
        disk_size_gb=config.cluster.node_disk_size_gb,
        release_channel=config.cluster.release_channel.value,
        min_master_version=config.cluster.kubernetes_version,
        deletion_protection=config.cluster.deletion_protection,
        labels=labels,
    ),
)

registry = Registry(
    f"ha-celery-{config.stack}",
    RegistryArgs(
        project=config.cluster.project,
        location=config.registry.location,
        app_dir="app",
        mirror_image=config.broker.image if config.registry.mirror_rabbitmq_image else None,
        labels=labels,
    ),
)

pulumi.export("cluster_name", gke.name)
pulumi.export("kubeconfig", gke.kubeconfig)
pulumi.export("registry_url", registry.url)
pulumi.export("worker_image", registry.worker_image)
if registry.broker_image is not None:
    pulumi.export("broker_image", registry.broker_image)
