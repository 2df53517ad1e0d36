"""RabbitMQCluster: a RabbitMQ 4.3 StatefulSet that keeps quorum through the loss of a node.

Modelled on what the RabbitMQ Cluster Operator generates, without the operator: fixed
object names (node identities derive from them), a headless Service that publishes
not-ready pods, Parallel pod management, conf.d files rendered by ``broker/`` (the same
renderer the local drills boot from), generated users (an administrator for operators, one
user per client role, see broker.users) and Erlang cookie in Secrets, a quorum-safe drain on
shutdown, a PDB and a NetworkPolicy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls

from broker.config import BrokerConfig, BrokerTls, PeerDiscovery, RabbitVersion
from broker.render import (
    BOOT_DEADLINE_S,
    SEED_JOIN_WAIT_S,
    post_start_script,
    render_default_user_conf,
    render_definitions_json,
    render_enabled_plugins,
    render_rabbitmq_conf,
    setup_script,
)
from broker.users import role_users, users_script
from contract.metrics import BROKER_METRICS_PORT_NAME
from contract.wire import (
    AMQP_PORT,
    AMQPS_PORT,
    BROKER_CA_SECRET_SUFFIX,
    BROKER_TLS_SECRET_SUFFIX,
    BROKER_USERNAME,
    CLI_DIST_PORTS,
    CLIENT_LABEL,
    DEFINITIONS_PATH,
    DIST_PORT,
    EPMD_PORT,
    GMP_NAMESPACE,
    MANAGEMENT_PORT,
    NAMESPACE_NAME_LABEL,
    OPS_LABEL,
    PROMETHEUS_PORT,
    RABBITMQ_UID,
    ROLE_PASSWORDS_DIR,
    TLS_CA_KEY,
    BrokerRole,
    broker_tls_names,
    management_url,
    role_secret_name,
    role_username,
    tls_cert_key,
    tls_private_key_key,
)

GRACE_SECONDS = 600
"""Finite, unlike the operator's 7 days: a drain that cannot finish in 10 min will not finish, and
a node update must not hang forever. The preStop waits use most of it."""


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
    expansion, see README "Operating the broker"."""
    image: pulumi.Input[str]
    """rabbitmq:4.3.x image (or its mirror in Artifact Registry)."""
    cpu_millis: int
    """CPU request = limit per pod (Guaranteed QoS, init container included: a broker is not a
    burstable workload, and is the last to be evicted under node memory pressure)."""
    memory_mib: int
    """Memory request = limit per pod; RabbitMQ is told 80% of it (BrokerConfig.memory_available_bytes)."""
    production: bool
    """Required one-broker-per-node anti-affinity, zone spread enforced, disks kept on delete
    (StorageClass Retain, claims retained with the StatefulSet); dev deletes both."""
    consumer_timeout_ms: int
    """Broker-side limit on an unacked delivery; must exceed the workers' task time limit."""
    cluster_name: str
    """Shown in the management UI and on metrics."""
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

        storage_class = _storage_class(name, args, child)
        self.password, cookie = _passwords(name, child)
        user_secret, cookie_secret = _secrets(name, args, self.password, cookie, child)
        role_passwords = _role_passwords(name, child)
        role_secrets = _role_secrets(name, args, role_passwords, child)
        tls_secret, ca_secret = _tls_secrets(name, args, child) if args.tls else (None, None)
        config_files = _config_files(args)
        config_map = _config_map(name, args, config_files, child)
        headless, client = _services(name, args, child)
        pod_spec = _pod_spec(args, _volumes(cookie_secret, config_map, user_secret, role_secrets, tls_secret))
        self.statefulset = _statefulset(
            name,
            args,
            child,
            service=headless,
            storage=storage_class,
            pod_spec=pod_spec,
            config_checksum=config_checksum(config_files),
        )
        _pdb(name, args, child)
        _network_policy(name, args, child)

        self.service_name = client.metadata["name"]
        self.pod_selector = _selector(args)
        """Labels of the broker pods (what scrapes them selects), known without waiting on the cluster."""
        self.hosts = _hosts(args)
        self.credentials_secret = user_secret.metadata["name"]
        self.worker_credentials_secret = role_secrets[BrokerRole.WORKER].metadata["name"]
        self.scheduler_credentials_secret = role_secrets[BrokerRole.SCHEDULER].metadata["name"]
        self.management_url = _management_url(args, role_passwords[BrokerRole.MONITORING])
        self.amqp_port = _amqp_port(args)
        self.ca_secret = ca_secret.metadata["name"] if ca_secret is not None else None
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
            }
        )


def _tls_names(args: RabbitMQClusterArgs, ordinal: int) -> pulumi.Output[list[str]]:
    app, nodes_service = args.name, _nodes_service(args)
    return pulumi.Output.from_input(args.namespace).apply(lambda ns: broker_tls_names(app, nodes_service, ns, ordinal))


def _amqp_port(args: RabbitMQClusterArgs) -> int:
    return AMQPS_PORT if args.tls else AMQP_PORT


TLS_DIR = "/etc/rabbitmq/tls"
"""The node's CA, certificate and key, copied from the TLS Secret by the init container onto a
memory-backed emptyDir (the key never lands on the node's disk)."""
TLS_SOURCE = "/etc/ha-celery/tls"
"""Where the init container reads the TLS Secret (every node's pair: only this pod's is copied)."""
BROKER_TLS = BrokerTls(
    cacertfile=f"{TLS_DIR}/{TLS_CA_KEY}", certfile=f"{TLS_DIR}/tls.crt", keyfile=f"{TLS_DIR}/tls.key"
)
CA_VALIDITY_HOURS = 10 * 365 * 24
"""The CA outlives many node certificates: replacing it means every client's CA file changes too."""
NODE_CERT_VALIDITY_HOURS = 365 * 24
NODE_CERT_EARLY_RENEWAL_HOURS = 30 * 24
"""A `pulumi up` in a node certificate's last 30 days replaces it (README: rotation)."""


def _tls_secrets(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> tuple[k8s.core.v1.Secret, k8s.core.v1.Secret]:
    """A CA, one key and certificate per node, and the two Secrets: the broker's (CA, every node's
    pair) and the clients' (the CA certificate only)."""
    # ECDSA P-256: as strong as RSA-3072 for a fraction of the handshake cost; Erlang/OTP and
    # Python's ssl both take it.
    ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
    ca = tls.SelfSignedCert(
        f"{name}-ca-cert",
        private_key_pem=ca_key.private_key_pem,
        is_ca_certificate=True,
        subject={"common_name": f"{args.cluster_name} broker CA", "organization": "ha-celery"},
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
        opts=child,
    )
    data: dict[str, pulumi.Input[str]] = {TLS_CA_KEY: ca.cert_pem}
    for i in range(args.replicas):
        pod = f"{args.name}-{i}"
        names = _tls_names(args, i)
        key = tls.PrivateKey(f"{name}-{i}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-{i}-csr",
            private_key_pem=key.private_key_pem,
            subject={"common_name": names[0], "organization": "ha-celery"},
            dns_names=names,
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-{i}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=NODE_CERT_VALIDITY_HOURS,
            early_renewal_hours=NODE_CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        data[tls_cert_key(pod)] = cert.cert_pem
        # The provider marks private keys secret; stated here too, so no change of it leaks one.
        data[tls_private_key_key(pod)] = pulumi.Output.secret(key.private_key_pem)
    broker_secret = k8s.core.v1.Secret(
        f"{name}-tls",
        metadata=_metadata(f"{args.name}{BROKER_TLS_SECRET_SUFFIX}", args),
        type="Opaque",
        string_data=data,
        opts=child,
    )
    ca_cert: pulumi.Output[str] = pulumi.Output.secret(ca.cert_pem)
    # Secret, not ConfigMap, although a CA certificate is public: the local harness generates its
    # own CA for masked values only, and clients must get the CA that signed the nodes' pairs.
    ca_secret = k8s.core.v1.Secret(
        f"{name}-ca",
        metadata=_metadata(f"{args.name}{BROKER_CA_SECRET_SUFFIX}", args),
        type="Opaque",
        string_data={TLS_CA_KEY: ca_cert},
        opts=child,
    )
    return broker_secret, ca_secret


def _nodes_service(args: RabbitMQClusterArgs) -> str:
    return f"{args.name}-nodes"


def _selector(args: RabbitMQClusterArgs) -> dict[str, str]:
    return {"app.kubernetes.io/name": args.name}


def _labels(args: RabbitMQClusterArgs) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": args.name,
        "app.kubernetes.io/component": "broker",
        "app.kubernetes.io/part-of": "ha-celery",
    }


def _metadata(object_name: str, args: RabbitMQClusterArgs) -> k8s.meta.v1.ObjectMetaArgsDict:
    return {"name": object_name, "namespace": args.namespace, "labels": _labels(args)}


def _storage_class(name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions) -> k8s.storage.v1.StorageClass:
    return k8s.storage.v1.StorageClass(
        f"{name}-storage",
        metadata={"name": f"{args.name}-{args.disk_type}", "labels": _labels(args)},
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


STORAGE_CLASS_IMMUTABLE = ("reclaimPolicy", "volumeBindingMode")
"""StorageClass fields the API server refuses to update, which the provider does not replace on."""

RANDOM_PASSWORD_INPUTS = (
    "length",
    "keepers",
    "lower",
    "min_lower",
    "min_numeric",
    "min_special",
    "min_upper",
    "number",
    "numeric",
    "override_special",
    "special",
    "upper",
)
"""Every input of random.RandomPassword; each one forces a new value when it changes."""


def _passwords(name: str, child: pulumi.ResourceOptions) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    # A new value would lock everybody out: default_user/default_pass act on a blank node only, so
    # the broker keeps the old password while the Secret gets the new one; a new cookie keeps
    # restarted pods out of the cluster. So no input change may replace them. Not `protect`:
    # that blocks `pulumi destroy` of dev. A deliberate rotation is `pulumi up --replace <urn>`
    # plus `rabbitmqctl change_password` (README "Operating the broker").
    keep = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=list(RANDOM_PASSWORD_INPUTS)))
    # No special characters: the password goes into AMQP URLs and a conf file verbatim.
    password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=keep)
    cookie = random.RandomPassword(f"{name}-erlang-cookie", length=64, special=False, opts=keep)
    return pulumi.Output.secret(password.result), pulumi.Output.secret(cookie.result)


def _secrets(
    name: str,
    args: RabbitMQClusterArgs,
    password: pulumi.Output[str],
    cookie: pulumi.Output[str],
    child: pulumi.ResourceOptions,
) -> tuple[k8s.core.v1.Secret, k8s.core.v1.Secret]:
    user_secret = k8s.core.v1.Secret(
        f"{name}-default-user",
        metadata=_metadata(f"{args.name}-default-user", args),
        type="Opaque",
        string_data={
            "username": BROKER_USERNAME,
            "password": password,
            # Read by RabbitMQ from conf.d: the user exists from the first boot, and the
            # password never appears in the ConfigMap. Setting default_user also means no
            # guest user is created at all.
            "default_user.conf": password.apply(lambda p: render_default_user_conf(BROKER_USERNAME, p)),
        },
        opts=child,
    )
    cookie_secret = k8s.core.v1.Secret(
        f"{name}-erlang-cookie",
        metadata=_metadata(f"{args.name}-erlang-cookie", args),
        type="Opaque",
        string_data={".erlang.cookie": cookie},
        opts=child,
    )
    return user_secret, cookie_secret


def _role_passwords(name: str, child: pulumi.ResourceOptions) -> dict[BrokerRole, pulumi.Output[str]]:
    # Kept like the default password (see _passwords): the broker pods take a new value only when
    # they restart (their postStart hook), so a replaced one would lock the clients out until then.
    keep = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=list(RANDOM_PASSWORD_INPUTS)))
    return {
        role: pulumi.Output.secret(
            random.RandomPassword(f"{name}-{role.value}-password", length=32, special=False, opts=keep).result
        )
        for role in BrokerRole
    }


def _role_secrets(
    name: str, args: RabbitMQClusterArgs, passwords: dict[BrokerRole, pulumi.Output[str]], child: pulumi.ResourceOptions
) -> dict[BrokerRole, k8s.core.v1.Secret]:
    """One Secret per role: a pod mounts the one of its own role, never another's or the admin's."""
    return {
        role: k8s.core.v1.Secret(
            f"{name}-{role.value}-user",
            metadata=_metadata(role_secret_name(args.name, role), args),
            type="Opaque",
            string_data={"username": role_username(role), "password": password},
            opts=child,
        )
        for role, password in passwords.items()
    }


def _config_files(args: RabbitMQClusterArgs) -> dict[str, str]:
    config = BrokerConfig(
        version=RabbitVersion.V4_3,
        peer_discovery=PeerDiscovery.K8S,
        cluster_size=args.replicas,
        memory_limit_bytes=args.memory_mib * 1024 * 1024,
        consumer_timeout_ms=args.consumer_timeout_ms,
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
    """sha256 of the rendered files, names included, in name order."""
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(f"{key}\0{files[key]}\0".encode())
    return digest.hexdigest()


def _config_map(
    name: str, args: RabbitMQClusterArgs, files: dict[str, str], child: pulumi.ResourceOptions
) -> k8s.core.v1.ConfigMap:
    return k8s.core.v1.ConfigMap(
        f"{name}-config", metadata=_metadata(f"{args.name}-config", args), data=files, opts=child
    )


def _services(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> tuple[k8s.core.v1.Service, k8s.core.v1.Service]:
    headless = k8s.core.v1.Service(
        f"{name}-nodes",
        metadata=_metadata(_nodes_service(args), args),
        spec={
            "cluster_ip": "None",
            # Peers must resolve each other while booting, before any is ready, or a whole-
            # cluster restart waits for a readiness that needs the peers: a deadlock.
            "publish_not_ready_addresses": True,
            "selector": _selector(args),
            "ports": [
                {"name": "epmd", "port": EPMD_PORT, "target_port": EPMD_PORT},
                {"name": "cluster-links", "port": DIST_PORT, "target_port": DIST_PORT},
            ],
        },
        opts=child,
    )
    client = k8s.core.v1.Service(
        f"{name}-client",
        metadata=_metadata(args.name, args),
        spec={
            "type": "ClusterIP",
            "selector": _selector(args),
            "ports": [
                _amqp_service_port(args),
                {"name": "management", "port": MANAGEMENT_PORT, "target_port": MANAGEMENT_PORT, "app_protocol": "http"},
                {"name": "prometheus", "port": PROMETHEUS_PORT, "target_port": PROMETHEUS_PORT, "app_protocol": "http"},
            ],
        },
        opts=child,
    )
    return headless, client


def _amqp_port_name(args: RabbitMQClusterArgs) -> str:
    return "amqps" if args.tls else "amqp"


def _amqp_service_port(args: RabbitMQClusterArgs) -> k8s.core.v1.ServicePortArgsDict:
    port, port_name = _amqp_port(args), _amqp_port_name(args)
    return {"name": port_name, "port": port, "target_port": port, "app_protocol": port_name}


def _env(args: RabbitMQClusterArgs) -> list[k8s.core.v1.EnvVarArgsDict]:
    return [
        {"name": "MY_POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
        {"name": "MY_POD_NAMESPACE", "value_from": {"field_ref": {"field_path": "metadata.namespace"}}},
        {"name": "K8S_SERVICE_NAME", "value": _nodes_service(args)},
        {"name": "RABBITMQ_USE_LONGNAME", "value": "true"},
        {
            "name": "RABBITMQ_NODENAME",
            "value": "rabbit@$(MY_POD_NAME).$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE).svc.cluster.local",
        },
        {
            "name": "K8S_HOSTNAME_SUFFIX",
            "value": ".$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE).svc.cluster.local",
        },
        {"name": "RABBITMQ_ENABLED_PLUGINS_FILE", "value": PLUGINS_FILE},
    ]


AWAIT_QUORUM_S = 300
"""preStop: how long to wait for every quorum queue to keep a majority without this node."""
DRAIN_S = GRACE_SECONDS - AWAIT_QUORUM_S - 60
"""preStop: how long the drain may take; both waits and a minute to stop fit in the grace period
(the kubelet counts the grace from the start of the hook and SIGKILLs when it runs out)."""


def _lifecycle() -> k8s.core.v1.LifecycleArgsDict:
    return {
        # Definitions (DLX, dead-letter queue, policy) after boot: importing them
        # at boot would skip creating the default user (see broker.render).
        # Then the role users from their Secrets (see broker.users for why not as definitions).
        "post_start": {"exec_": {"command": ["sh", "-c", post_start_script(DEFINITIONS_PATH, then=users_script())]}},
        # Leave only when every quorum queue keeps a majority without this node,
        # then hand leadership and clients over before the process stops.
        "pre_stop": {
            "exec_": {
                "command": [
                    "sh",
                    "-c",
                    f"rabbitmq-upgrade await_online_quorum_plus_one -t {AWAIT_QUORUM_S}"
                    f" && rabbitmq-upgrade drain -t {DRAIN_S}",
                ]
            }
        },
    }


def _container(args: RabbitMQClusterArgs) -> k8s.core.v1.ContainerArgsDict:
    return {
        "name": "rabbitmq",
        "image": args.image,
        "env": _env(args),
        "ports": [
            {"name": _amqp_port_name(args), "container_port": _amqp_port(args)},
            {"name": "management", "container_port": MANAGEMENT_PORT},
            {"name": BROKER_METRICS_PORT_NAME, "container_port": PROMETHEUS_PORT},
            {"name": "epmd", "container_port": EPMD_PORT},
            {"name": "cluster-links", "container_port": DIST_PORT},
        ],
        "resources": {
            "requests": {"cpu": f"{args.cpu_millis}m", "memory": f"{args.memory_mib}Mi"},
            "limits": {"cpu": f"{args.cpu_millis}m", "memory": f"{args.memory_mib}Mi"},
        },
        # TCP, not a full health check: readiness gates the client Service only, and
        # a check that needs the peers would keep a restarting cluster unready forever.
        "readiness_probe": {
            # A TCP connect only, no handshake: the same check with and without TLS.
            "tcp_socket": {"port": _amqp_port_name(args)},
            "initial_delay_seconds": 10,
            "period_seconds": 10,
            "timeout_seconds": 5,
            "failure_threshold": 3,
        },
        # No liveness probe, as the operator: a node replaying a large quorum log or
        # waiting for its peers looks dead to any cheap check, and a restart then
        # throws that work away: a slow boot becomes a crash loop. A hung BEAM is
        # rare; a restart loop under load is not.
        "lifecycle": _lifecycle(),
        "security_context": _container_security(),
        "volume_mounts": [
            {"name": "persistence", "mount_path": "/var/lib/rabbitmq/mnesia"},
            {"name": "rabbitmq-home", "mount_path": "/var/lib/rabbitmq"},
            {"name": "rabbitmq-confd", "mount_path": "/etc/rabbitmq/conf.d"},
            {"name": "ha-celery-files", "mount_path": "/etc/ha-celery"},
            {"name": "role-passwords", "mount_path": ROLE_PASSWORDS_DIR},
            *_tls_mounts(args, init=False),
        ],
    }


def _tls_mounts(args: RabbitMQClusterArgs, *, init: bool) -> list[k8s.core.v1.VolumeMountArgsDict]:
    if not args.tls:
        return []
    if init:
        return [{"name": "tls-secret", "mount_path": TLS_SOURCE}, {"name": "tls", "mount_path": TLS_DIR}]
    return [{"name": "tls", "mount_path": TLS_DIR, "read_only": True}]


CONF_SOURCE = "/etc/ha-celery/conf.d"
"""Where the init container reads the rendered conf.d files and enabled_plugins (ConfigMap +
Secret, read-only)."""
PLUGINS_FILE = "/var/lib/rabbitmq/enabled_plugins"
"""The node's enabled_plugins: copied by the init container onto the writable rabbitmq-home
emptyDir, so `rabbitmq-plugins enable` works (until the pod restarts: plugins to keep belong in
broker.render.enabled_plugins)."""


def _cookie_setup_container(args: RabbitMQClusterArgs) -> k8s.core.v1.ContainerArgsDict:
    # The cookie must be a 0600 file owned by rabbitmq; a Secret volume cannot be both (fsGroup
    # makes it group-readable), so it is copied as the operator does; conf.d and enabled_plugins
    # too, onto writable volumes, see setup_script.
    script = setup_script(
        statefulset=args.name,
        replicas=args.replicas,
        amqp_port=_amqp_port(args),
        conf_source=CONF_SOURCE,
        conf_dir="/etc/rabbitmq/conf.d",
        data_dir="/var/lib/rabbitmq/mnesia",
        plugins_file=PLUGINS_FILE,
        tls_source=TLS_SOURCE if args.tls else None,
        tls=BROKER_TLS if args.tls else None,
    )
    return {
        "name": "setup",
        "image": args.image,
        "command": ["bash", "-c", script],
        "env": _env(args),
        "security_context": _container_security(read_only_root=True),
        # requests = limits: one init container with requests below its limits makes the whole
        # pod Burstable instead of Guaranteed.
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volume_mounts": [
            {"name": "erlang-cookie-secret", "mount_path": "/tmp/erlang-cookie-secret"},
            {"name": "rabbitmq-home", "mount_path": "/var/lib/rabbitmq"},
            {"name": "persistence", "mount_path": "/var/lib/rabbitmq/mnesia"},
            {"name": "rabbitmq-confd-source", "mount_path": CONF_SOURCE},
            {"name": "rabbitmq-confd", "mount_path": "/etc/rabbitmq/conf.d"},
            *_tls_mounts(args, init=True),
        ],
    }


def _volumes(
    cookie_secret: k8s.core.v1.Secret,
    config_map: k8s.core.v1.ConfigMap,
    user_secret: k8s.core.v1.Secret,
    role_secrets: dict[BrokerRole, k8s.core.v1.Secret],
    tls_secret: k8s.core.v1.Secret | None,
) -> list[k8s.core.v1.VolumeArgsDict]:
    tls_volumes: list[k8s.core.v1.VolumeArgsDict] = []
    if tls_secret is not None:
        tls_volumes = [
            # Only the init container mounts every node's pair; the broker sees its own, copied.
            {"name": "tls-secret", "secret": {"secret_name": tls_secret.metadata["name"], "default_mode": 0o400}},
            {"name": "tls", "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
        ]
    return [
        *tls_volumes,
        {"name": "rabbitmq-home", "empty_dir": {}},
        {"name": "rabbitmq-confd", "empty_dir": {}},
        {
            "name": "erlang-cookie-secret",
            "secret": {"secret_name": cookie_secret.metadata["name"], "default_mode": 0o400},
        },
        {
            "name": "rabbitmq-confd-source",
            "projected": {
                "sources": [
                    {
                        "config_map": {
                            "name": config_map.metadata["name"],
                            "items": [
                                {"key": "20-ha-celery.conf", "path": "20-ha-celery.conf"},
                                {"key": "enabled_plugins", "path": "enabled_plugins"},
                            ],
                        }
                    },
                    {
                        "secret": {
                            "name": user_secret.metadata["name"],
                            "items": [{"key": "default_user.conf", "path": "30-default-user.conf"}],
                        }
                    },
                ]
            },
        },
        {
            "name": "ha-celery-files",
            "config_map": {
                "name": config_map.metadata["name"],
                "items": [{"key": "definitions.json", "path": "definitions.json"}],
            },
        },
        {
            # Each role's password as a file named after its user (broker.users.password_file).
            "name": "role-passwords",
            "projected": {
                "sources": [
                    {
                        "secret": {
                            "name": role_secrets[user.role].metadata["name"],
                            "items": [{"key": "password", "path": user.username}],
                        }
                    }
                    for user in role_users()
                ],
            },
        },
    ]


def _pod_spec(args: RabbitMQClusterArgs, volumes: list[k8s.core.v1.VolumeArgsDict]) -> k8s.core.v1.PodSpecArgsDict:
    selector = _selector(args)
    return {
        "termination_grace_period_seconds": GRACE_SECONDS,
        # 4.1+ k8s peer discovery makes no API calls: no token, no RBAC.
        "automount_service_account_token": False,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": RABBITMQ_UID,
            "run_as_group": RABBITMQ_UID,
            "fs_group": RABBITMQ_UID,
            # Re-own the data disk only when its root is not ours yet: a recursive chown of a
            # growing quorum log on every mount slows each restart.
            "fs_group_change_policy": "OnRootMismatch",
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "affinity": {"pod_anti_affinity": _anti_affinity(selector, args.production)},
        "topology_spread_constraints": [
            {
                "max_skew": 1,
                "topology_key": "topology.kubernetes.io/zone",
                # prod: never two brokers in one zone while another zone has none.
                "when_unsatisfiable": "DoNotSchedule" if args.production else "ScheduleAnyway",
                "label_selector": {"match_labels": selector},
            }
        ],
        "init_containers": [_cookie_setup_container(args)],
        "containers": [_container(args)],
        "volumes": volumes,
    }


def _statefulset(
    name: str,
    args: RabbitMQClusterArgs,
    child: pulumi.ResourceOptions,
    *,
    service: k8s.core.v1.Service,
    storage: k8s.storage.v1.StorageClass,
    pod_spec: k8s.core.v1.PodSpecArgsDict,
    config_checksum: str,
) -> k8s.apps.v1.StatefulSet:
    labels = _labels(args)
    return k8s.apps.v1.StatefulSet(
        f"{name}-statefulset",
        metadata=_metadata(args.name, args),
        spec={
            "service_name": service.metadata["name"],
            "replicas": args.replicas,
            # Parallel: all nodes boot together; OrderedReady would wait for pod 0's readiness,
            # which after a full stop may need the other nodes.
            "pod_management_policy": "Parallel",
            "update_strategy": {"type": "RollingUpdate"},
            # Scaled-down claims are kept in every stack (a scale-up back finds its data). On
            # delete, prod keeps its disks; dev deletes them (its StorageClass too), or a
            # `pulumi destroy` would leave them behind and billed.
            "persistent_volume_claim_retention_policy": {
                "when_scaled": "Retain",
                "when_deleted": "Retain" if args.production else "Delete",
            },
            "selector": {"match_labels": _selector(args)},
            "template": {
                "metadata": {"labels": labels, "annotations": {CONFIG_CHECKSUM_ANNOTATION: config_checksum}},
                "spec": pod_spec,
            },
            "volume_claim_templates": [
                {
                    "metadata": {"name": "persistence", "labels": labels},
                    "spec": {
                        "access_modes": ["ReadWriteOnce"],
                        "storage_class_name": storage.metadata["name"],
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
                # claims grow by volume expansion instead (README). A disk kind change still replaces.
                ignore_changes=[STORAGE_REQUEST_PATH],
                custom_timeouts=_timeouts(args.replicas),
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


def _pdb(name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions) -> k8s.policy.v1.PodDisruptionBudget:
    return k8s.policy.v1.PodDisruptionBudget(
        f"{name}-pdb",
        metadata=_metadata(args.name, args),
        # One node at a time: with 3 nodes a quorum of 2 always remains through a drain.
        spec={"max_unavailable": 1, "selector": {"match_labels": _selector(args)}},
        opts=child,
    )


def _tcp(port: int) -> k8s.networking.v1.NetworkPolicyPortArgsDict:
    return {"protocol": "TCP", "port": port}


def namespaces_peer(namespaces: tuple[str, ...]) -> k8s.networking.v1.NetworkPolicyPeerArgsDict:
    """A NetworkPolicy peer: every pod of these namespaces (by their immutable name label)."""
    return {
        "namespace_selector": {
            "match_expressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(namespaces)}]
        }
    }


def _network_policy(
    name: str, args: RabbitMQClusterArgs, child: pulumi.ResourceOptions
) -> k8s.networking.v1.NetworkPolicy:
    selector = _selector(args)
    ops: k8s.networking.v1.NetworkPolicyPeerArgsDict = {
        # Both selectors in one peer: an ops-labelled pod counts only in the ops namespace.
        "namespace_selector": {"match_labels": {NAMESPACE_NAME_LABEL: args.ops_namespace}},
        "pod_selector": {"match_labels": {OPS_LABEL: "true"}},
    }
    management_from = [ops]
    if args.keda_namespace is not None:
        # KEDA's rabbitmq trigger reads queue depth from the management API (the monitoring user).
        management_from.append(namespaces_peer((args.keda_namespace,)))
    return k8s.networking.v1.NetworkPolicy(
        f"{name}-netpol",
        metadata=_metadata(args.name, args),
        spec={
            "pod_selector": {"match_labels": selector},
            "policy_types": ["Ingress"],
            "ingress": [
                {
                    # A podSelector alone means this namespace: the workers and the scheduler.
                    "from_": [{"pod_selector": {"match_labels": {CLIENT_LABEL: "true"}}}, ops],
                    "ports": [_tcp(_amqp_port(args))],
                },
                {"from_": management_from, "ports": [_tcp(MANAGEMENT_PORT)]},
                {
                    # Clustering: epmd, the node's distribution port, and the ports the CLI tools
                    # of a peer pod listen on while they talk to this node. Only between brokers.
                    # AMQP too: a blank seed's init container probes its peers' AMQP port to join
                    # a running cluster instead of founding a second one (broker.render.setup_script).
                    "from_": [{"pod_selector": {"match_labels": selector}}],
                    "ports": [
                        _tcp(_amqp_port(args)),
                        _tcp(EPMD_PORT),
                        _tcp(DIST_PORT),
                        {"protocol": "TCP", "port": CLI_DIST_PORTS[0], "end_port": CLI_DIST_PORTS[1]},
                    ],
                },
                {"from_": [namespaces_peer(args.metrics_namespaces)], "ports": [_tcp(PROMETHEUS_PORT)]},
            ],
        },
        opts=child,
    )


def _hosts(args: RabbitMQClusterArgs) -> pulumi.Output[list[str]]:
    app, nodes_service = args.name, _nodes_service(args)
    return pulumi.Output.from_input(args.namespace).apply(
        lambda ns: [f"{app}-{i}.{nodes_service}.{ns}.svc.cluster.local" for i in range(args.replicas)]
    )


def _management_url(args: RabbitMQClusterArgs, password: pulumi.Output[str]) -> pulumi.Output[str]:
    """The monitoring user's URL (KEDA's trigger logs in with it): ``password`` must be that user's."""
    url = pulumi.Output.all(password, args.namespace).apply(
        lambda values: management_url(role_username(BrokerRole.MONITORING), str(values[0]), args.name, str(values[1]))
    )
    return pulumi.Output.secret(url)


def _anti_affinity(selector: dict[str, str], required: bool) -> k8s.core.v1.PodAntiAffinityArgsDict:
    term: k8s.core.v1.PodAffinityTermArgsDict = {
        "label_selector": {"match_labels": selector},
        "topology_key": "kubernetes.io/hostname",
    }
    if required:
        # One broker per machine: losing a machine must never take two of the three votes.
        return {"required_during_scheduling_ignored_during_execution": [term]}
    return {"preferred_during_scheduling_ignored_during_execution": [{"weight": 100, "pod_affinity_term": term}]}


def _container_security(read_only_root: bool = False) -> k8s.core.v1.SecurityContextArgsDict:
    # The broker keeps a writable root, unlike the operator (which mounts it read-only and gives
    # every writable path a volume): the local pod runner cannot enforce a read-only root, so a
    # path the runtime writes outside the volumes would first fail on GKE.
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }
