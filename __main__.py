"""ha-celery: settings -> components -> exports. The only place that reads stack config."""

import pulumi
import pulumi_kubernetes as k8s

import settings
from broker.config import TaskQueue
from components.gke import CLUSTER_APIS, GkeCluster, GkeClusterArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.rabbitmq import RabbitMQCluster, RabbitMQClusterArgs
from components.registry import Registry, RegistryArgs
from components.workers import CeleryWorkers, CeleryWorkersArgs
from contract import timing
from contract.wire import KEDA_NAMESPACE, Autoscaling
from monitoring.scrape import MetricsCollection

config = settings.load()
labels = {"app": "ha-celery", "stack": config.stack, "environment": config.environment.value}
managed_prometheus = config.monitoring.collection is MetricsCollection.MANAGED

gke = GkeCluster(
    f"ha-celery-{config.stack}",
    GkeClusterArgs(
        project=config.cluster.project,
        location=config.cluster.location,
        region=config.cluster.region,
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
        private_nodes=config.cluster.private_nodes,
        master_authorized_networks=config.cluster.master_authorized_networks,
        secrets_encryption=config.cluster.secrets_encryption,
        maintenance_window=config.cluster.maintenance_window,
        maintenance_exclusions=config.cluster.maintenance_exclusions,
        managed_prometheus=managed_prometheus,
        # The cluster's APIs and the Registry's, all enabled by the program: a fresh project works.
        # containerscanning: the Registry's vulnerability scanning (its repository inherits it);
        # monitoring: where managed collection writes and its rule evaluator reads.
        apis=(
            *CLUSTER_APIS,
            "artifactregistry.googleapis.com",
            "containerscanning.googleapis.com",
            *(("monitoring.googleapis.com",) if managed_prometheus else ()),
        ),
    ),
)

registry = Registry(
    f"ha-celery-{config.stack}",
    RegistryArgs(
        project=config.cluster.project,
        location=config.registry.location,
        repository_id=config.registry.repository_id,
        platforms=config.registry.image_platforms,
        context_dir=".",
        mirror_image=config.broker.image if config.registry.mirror_rabbitmq_image else None,
        labels=labels,
    ),
    opts=pulumi.ResourceOptions(depends_on=gke.apis),
)

k8s_opts = pulumi.ResourceOptions(provider=gke.provider)
# Fixed name: the broker's node names and the workers' broker hostnames contain it.
namespace = k8s.core.v1.Namespace(
    "ha-celery", metadata={"name": "ha-celery", "labels": {"app.kubernetes.io/part-of": "ha-celery"}}, opts=k8s_opts
)

broker = RabbitMQCluster(
    "rabbitmq",
    RabbitMQClusterArgs(
        namespace=namespace.metadata["name"],
        replicas=config.broker.replicas,
        disk_type=config.broker.storage.disk_type.value,
        storage_gi=config.broker.storage_gi,
        image=registry.broker_image if registry.broker_image is not None else config.broker.image,
        cpu_millis=config.broker.cpu_millis,
        memory_mib=config.broker.memory_mib,
        production=config.production,
        consumer_timeout_ms=timing.CONSUMER_TIMEOUT_MS,
        # Each lane's queue with its own consumer timeout (a policy per queue: above the global is fine).
        task_queues=tuple(
            TaskQueue(lane.queue, lane.timing.consumer_timeout_s * 1000, lane.delivery_limit)
            for lane in config.workers.lanes
        ),
        cluster_name=f"ha-celery-{config.stack}",
        ops_namespace=config.network.ops_namespace,
        metrics_namespaces=config.network.metrics_namespaces,
        keda_namespace=KEDA_NAMESPACE if config.workers.autoscaling is Autoscaling.KEDA else None,
        tls=config.broker.tls,
    ),
    opts=k8s_opts,
)

workers = CeleryWorkers(
    "celery",
    CeleryWorkersArgs(
        namespace=namespace.metadata["name"],
        image=registry.worker_image,
        broker_hosts=broker.hosts,
        broker_port=broker.amqp_port,
        broker_ca_secret=broker.ca_secret,
        credentials_secret=broker.worker_credentials_secret,
        scheduler_credentials_secret=broker.scheduler_credentials_secret,
        management_url=broker.management_url,
        lanes=config.workers.lanes,
        scheduler_enabled=config.workers.scheduler_enabled,
        scheduler_tasks=config.workers.scheduler_tasks,
        scheduler_run=config.workers.scheduler_run,
        autoscaling=config.workers.autoscaling,
        broker_selector=broker.pod_selector,
        metrics_namespaces=config.network.metrics_namespaces,
        pod_annotations=broker.worker_pod_annotations,
    ),
    # Pulumi awaits the StatefulSet until every broker is Ready: workers and the scheduler then
    # connect on their first try instead of crash-looping (or failing the Job) while disks
    # attach and brokers boot; on destroy they go before the brokers they drain into.
    opts=pulumi.ResourceOptions(provider=gke.provider, depends_on=[broker.statefulset]),
)

monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(
        namespace=namespace.metadata["name"],
        collection=config.monitoring.collection,
        broker_selector=broker.pod_selector,
        worker_selector=workers.pod_selector,
        broker_nodes=config.broker.replicas,
        operator_labels=dict(config.monitoring.operator_labels),
        dashboard=config.monitoring.dashboard,
    ),
    # After the brokers are Ready: then the node pool schedules and runs pods, and GKE's
    # gmp-operator (scheduled on it at the same time, a small binary serving in seconds where a
    # broker takes minutes) answers the validating webhook that `Rules` goes through. Created
    # seconds after a brand-new pool, `Rules` fails the first `up` (cloud review 3, finding 3).
    # depends_on, not an Output: no property depends on the StatefulSet, so nothing here is
    # replaced with it.
    opts=pulumi.ResourceOptions(provider=gke.provider, depends_on=[broker.statefulset]),
)

pulumi.export("cluster_name", gke.name)
pulumi.export("kubeconfig", gke.kubeconfig)
pulumi.export("registry_url", registry.url)
pulumi.export("worker_image", registry.worker_image)
if registry.broker_image is not None:
    pulumi.export("broker_image", registry.broker_image)
pulumi.export("broker_hosts", broker.hosts)
pulumi.export("broker_service", broker.service_name)
pulumi.export("broker_credentials_secret", broker.credentials_secret)
pulumi.export("worker_deployment", workers.deployment_name)
pulumi.export("worker_lanes", {lane.name: lane.deployment for lane in config.workers.lanes})
pulumi.export("monitoring_objects", monitoring.object_names)
if config.broker.tls:
    # Each node certificate's notAfter (RFC 3339): renewal needs a `pulumi up` in its last 30 days
    # (components/rabbitmq/tls.py); a CI check or a calendar reads it here.
    pulumi.export("broker_node_cert_not_after", broker.node_cert_not_after)
