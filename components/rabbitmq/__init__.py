"""RabbitMQCluster: a RabbitMQ 4.3 StatefulSet that keeps quorum through the loss of a node.

Modelled on what the RabbitMQ Cluster Operator generates, without the operator: fixed
object names (node identities derive from them), a headless Service that publishes
not-ready pods, Parallel pod management, conf.d files rendered by ``broker/`` (the same
renderer the local drills boot from), generated users (an administrator for operators, one
user per client role, see broker.users) and Erlang cookie in Secrets, a quorum-safe drain on
shutdown, a PDB and a NetworkPolicy.

One module per object kind, as the operator's ``internal/resource/``: ``tls``, ``secrets``,
``config``, ``pod``, ``services``, ``network_policy``, ``statefulset`` (and its StorageClass),
``pdb``, ``priority`` (the PriorityClass and the tolerations of a lost node); ``meta`` holds what
they share. ``RabbitMQCluster.__init__`` is the table of contents.
Object names come from ``contract.wire.child_name``, which the harness reads too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from broker.config import TaskQueue
from components.rabbitmq import (
    config,
    meta,
    network_policy,
    pdb,
    pod,
    priority,
    secrets,
    services,
    statefulset,
    tls,
)
from components.rabbitmq.network_policy import namespaces_peer
from contract.timing import CONSUMER_TIMEOUT_MS
from contract.wire import (
    CA_SECRET,
    DEFAULT_USER_SECRET,
    GMP_NAMESPACE,
    QUEUE_NAME,
    BrokerRole,
    child_name,
    role_secret_name,
)

__all__ = ["RabbitMQCluster", "RabbitMQClusterArgs", "namespaces_peer"]


@dataclass(frozen=True)
class RabbitMQClusterArgs:
    namespace: pulumi.Input[str]
    """Namespace of every namespaced object."""
    replicas: int
    """RabbitMQ nodes: odd, so a quorum queue keeps a majority through one loss."""
    disk_type: str
    """Compute Engine disk type of the data volumes (pd-ssd, pd-standard, pd-balanced, hyperdisk-balanced)."""
    storage_gi: int
    """Data volume per node, GiB, for the claims created on the first ``pulumi up``. Later changes
    are ignored (a claim template change would replace the StatefulSet): disks grow by volume
    expansion, see docs/operate-broker.md."""
    image: pulumi.Input[str]
    """rabbitmq:4.3.x image (or its mirror in Artifact Registry)."""
    cpu_millis: int
    """CPU request = limit per pod (Guaranteed QoS, init container included: a broker is not a
    burstable workload, and is the last to be evicted under node memory pressure)."""
    memory_mib: int
    """Memory request = limit per pod; RabbitMQ is told 80% of it (BrokerConfig.memory_available_bytes)."""
    production: bool
    """Required one-broker-per-node anti-affinity, zone spread enforced, disks kept after their
    claims are deleted (StorageClass Retain; dev: Delete). Claims outlive the StatefulSet in both."""
    consumer_timeout_ms: int
    """Broker-side limit on an unacked delivery; must exceed the workers' task time limit."""
    cluster_name: str
    """Shown in the management UI and on metrics."""
    task_queues: tuple[TaskQueue, ...] = (TaskQueue(QUEUE_NAME, CONSUMER_TIMEOUT_MS),)
    """The worker lanes' queues, each declared with its own policy and consumer timeout."""
    ops_namespace: str = "ha-celery"
    """Namespace whose pods labelled ``ha-celery/ops=true`` reach AMQP and the management API; the
    label counts nowhere else (any namespace's owner could set it)."""
    metrics_namespaces: tuple[str, ...] = (GMP_NAMESPACE,)
    """Namespaces whose pods may scrape the broker's metrics port (GKE managed Prometheus's
    collectors run in gmp-system)."""
    keda_namespace: str | None = None
    """KEDA's namespace, whose pods may read the management API (its rabbitmq trigger); None
    when the workers are not autoscaled by KEDA."""
    tls: bool = False
    """AMQP over TLS only (AMQPS_PORT, no plain listener) with a CA and per-node certificates generated
    here (pulumi-tls); the keys live in Kubernetes Secrets and, as secrets, in the state."""
    name: str = "rabbitmq"
    """Fixed object name: node names (rabbit@rabbitmq-0.rabbitmq-nodes...) derive from it, so
    Pulumi auto-naming would give every deploy a new cluster and orphan the data."""


class RabbitMQCluster(pulumi.ComponentResource):
    """StorageClass, Secrets, ConfigMap, Services, StatefulSet, PDB and NetworkPolicy of the broker."""

    statefulset: k8s.apps.v1.StatefulSet
    pod_selector: dict[str, str]
    """Labels that select the broker pods (for other components' NetworkPolicies)."""
    service_name: pulumi.Output[str]
    hosts: pulumi.Output[list[str]]
    credentials_secret: pulumi.Output[str]
    """The administrator's Secret (operators only: no workload mounts it)."""
    worker_credentials_secret: pulumi.Output[str]
    scheduler_credentials_secret: pulumi.Output[str]
    password: pulumi.Output[str]
    management_url: pulumi.Output[str]
    """The management API's URL with the monitoring user's credentials (secret)."""
    amqp_port: int
    """The one AMQP port clients use: AMQPS_PORT with TLS, else AMQP_PORT."""
    ca_secret: pulumi.Output[str] | None
    """With TLS: the Secret holding only the CA certificate (key TLS_CA_KEY), for clients to mount."""

    def __init__(self, name: str, args: RabbitMQClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:RabbitMQCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        storage_class = statefulset.storage_class(name, args, child)
        self.password, cookie = secrets.passwords(name, child)
        user_secret, cookie_secret = secrets.secrets(name, args, self.password, cookie, child)
        role_passwords = secrets.role_passwords(name, child)
        role_secrets = secrets.role_secrets(name, args, role_passwords, child)
        material = tls.material(name, args, child) if args.tls else None
        config_files = config.files(args)
        config_map = config.config_map(name, args, config_files, child)
        headless, client = services.services(name, args, child)
        priority_class = priority.priority_class(name, args, child)
        credentials = {"default-user": self.password, "erlang-cookie": cookie} | {
            role.value: password for role, password in role_passwords.items()
        }
        tls_secrets = [material.broker_secret, material.ca_secret] if material is not None else []
        self.statefulset = statefulset.statefulset(
            name,
            args,
            child,
            pod_spec=pod.pod_spec(args, pod.volumes(args)),
            annotations=_pod_annotations(config.config_checksum(config_files), credentials, material),
            mounts=[
                storage_class,
                priority_class,
                headless,
                config_map,
                user_secret,
                cookie_secret,
                *role_secrets.values(),
                *tls_secrets,
            ],
        )
        pdb.pdb(name, args, child)
        network_policy.network_policy(name, args, child)

        self.service_name = client.metadata["name"]
        self.pod_selector = meta.selector(args)
        """Labels of the broker pods (what scrapes them selects), known without waiting on the cluster."""
        self.hosts = services.hosts(args)
        # Names as plain values (no dependency on the Secret resources: see pod.volumes); the
        # clients wait for the StatefulSet, which waits for them.
        self.credentials_secret = pulumi.Output.from_input(child_name(args.name, DEFAULT_USER_SECRET))
        self.worker_credentials_secret = pulumi.Output.from_input(role_secret_name(args.name, BrokerRole.WORKER))
        self.scheduler_credentials_secret = pulumi.Output.from_input(role_secret_name(args.name, BrokerRole.SCHEDULER))
        self.management_url = secrets.monitoring_url(args, role_passwords[BrokerRole.MONITORING])
        self.amqp_port = meta.amqp_port(args)
        self.ca_secret = pulumi.Output.from_input(child_name(args.name, CA_SECRET)) if material is not None else None
        self.worker_pod_annotations: dict[str, pulumi.Output[str]] = {
            secrets.CREDENTIALS_CHECKSUM_ANNOTATION: meta.output_digest(
                {BrokerRole.WORKER.value: role_passwords[BrokerRole.WORKER]}
            )
        }
        """Checksums of what a worker pod reads at start from this component (its user's
        password, the CA): the worker Deployment's template carries them and rolls on a change."""
        if material is not None:
            self.worker_pod_annotations[tls.TLS_CHECKSUM_ANNOTATION] = material.ca_checksum
        self.node_cert_not_after = material.not_after if material is not None else {}
        """With TLS: each node certificate's end of validity (RFC 3339) by pod name."""
        self.register_outputs(
            {
                "service_name": self.service_name,
                "hosts": self.hosts,
                "credentials_secret": self.credentials_secret,
                "worker_credentials_secret": self.worker_credentials_secret,
                "scheduler_credentials_secret": self.scheduler_credentials_secret,
                "password": self.password,
                "management_url": self.management_url,
                "amqp_port": self.amqp_port,
                "ca_secret": self.ca_secret,
                "node_cert_not_after": self.node_cert_not_after,
            }
        )


def _pod_annotations(
    config_checksum: str, credentials: dict[str, pulumi.Output[str]], material: tls.TlsMaterial | None
) -> dict[str, pulumi.Input[str]]:
    """Checksums of what the broker pods read at start and can change: a change rolls them one at a
    time, and only a change does. Computed from the values (the rendered files, the passwords and
    certificates), never from the ConfigMap/Secret resources (see meta.output_digest)."""
    annotations: dict[str, pulumi.Input[str]] = {
        config.CONFIG_CHECKSUM_ANNOTATION: config_checksum,
        secrets.CREDENTIALS_CHECKSUM_ANNOTATION: meta.output_digest(credentials),
    }
    if material is not None:
        annotations[tls.TLS_CHECKSUM_ANNOTATION] = material.checksum
    return annotations
