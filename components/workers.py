"""CeleryWorkers: the worker Deployment, its PDB, the scheduler Job and optional autoscaling."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.rabbitmq import namespaces_peer
from contract import metrics, timing, wire
from contract.wire import (
    CLIENT_LABEL,
    ENV_SCHEDULER_RUN_ID,
    GMP_NAMESPACE,
    JOB_UID_FIELD,
    NAMESPACE_NAME_LABEL,
    SCHEDULER_RUN_PATTERN,
    WORKER_UID,
    Autoscaling,
)

HEALTH = list(wire.HEALTH_COMMAND)
SCHEDULER = "celery-scheduler"
_RUN_ID = re.compile(SCHEDULER_RUN_PATTERN)


@dataclass(frozen=True)
class CeleryWorkersArgs:
    namespace: pulumi.Input[str]
    """Namespace of every object (the broker's)."""
    image: pulumi.Input[str]
    """Worker image by digest (repo/worker:tag@sha256:...), from the Registry component."""
    broker_hosts: pulumi.Input[list[str]]
    """Per-pod broker hostnames: the failover list each worker shuffles."""
    broker_port: int
    """AMQP port of the broker pods (AMQPS_PORT with TLS)."""
    credentials_secret: pulumi.Input[str]
    """The worker user's Secret, `username` and `password` keys (the broker component's)."""
    scheduler_credentials_secret: pulumi.Input[str]
    """The scheduler user's Secret, same keys: the scheduler Job publishes only."""
    management_url: pulumi.Input[str]
    """http://user:password@host:15672/ (secret, the monitoring user): KEDA's rabbitmq trigger
    reads queue depth there."""
    replicas: int
    """Worker pods (the minimum when autoscaling)."""
    concurrency: int
    """Prefork processes per pod."""
    cpu_millis: int
    """CPU request per pod, millicores (no CPU limit: throttling a worker only slows the queue)."""
    memory_mib: int
    """Memory request = limit per pod, MiB."""
    scheduler_enabled: bool
    """Create the scheduler Job that enqueues scheduler_tasks tasks (the seed's experiment)."""
    scheduler_tasks: int
    """Tasks the scheduler Job publishes, every one confirmed by the broker."""
    autoscaling: Autoscaling
    """none, hpa (CPU) or keda (queue length; KEDA must be installed in the cluster)."""
    autoscaling_max_replicas: int
    """Upper bound of worker pods when autoscaling."""
    broker_ca_secret: pulumi.Input[str] | None = None
    """With broker TLS: the Secret holding the broker CA certificate (key TLS_CA_KEY), mounted read-only
    into the worker and scheduler pods (never the broker's keys); None: plain AMQP."""
    scheduler_run: str = "1"
    """Id of the scheduler's batch (a DNS label, at most 32 characters): the Job runs once per id.
    A new id is a new Job with the current image and count (the previous one is deleted); a code
    deploy with the same id leaves the finished Job alone."""
    broker_selector: dict[str, str] | None = None
    """Labels of the broker pods: the only pods (besides DNS) the workers and the scheduler may
    connect to. None: no egress restriction (a broker outside this cluster)."""
    metrics_namespaces: tuple[str, ...] = (GMP_NAMESPACE,)
    """Namespaces whose pods may scrape the workers' metrics port; nothing else reaches a worker."""
    pod_annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Annotations of the worker pod template: checksums of what a worker reads at start from the
    broker (its user's password, the CA; RabbitMQCluster.worker_pod_annotations), so that a
    rotation rolls the workers. Not on the scheduler Job (its spec is never updated)."""
    queue: str = wire.QUEUE_NAME
    """The task queue the workers consume (and KEDA measures)."""
    name: str = "celery-worker"
    """Fixed object name, so `kubectl logs deploy/celery-worker` works in every stack."""

    def __post_init__(self) -> None:
        if not _RUN_ID.fullmatch(self.scheduler_run):
            raise ValueError(
                f"scheduler_run: got {self.scheduler_run!r}; allowed: lower-case letters, digits and '-',"
                " 1-32 characters, starting and ending alphanumeric (it is part of the Job's name)"
            )


class CeleryWorkers(pulumi.ComponentResource):
    """Workers that lose no task: late acks, warm shutdown within the grace period, spread over nodes."""

    deployment: k8s.apps.v1.Deployment
    deployment_name: pulumi.Output[str]

    def __init__(self, name: str, args: CeleryWorkersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:CeleryWorkers", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The caller's depends_on (the brokers) repeated on the objects whose pods connect, so the
        # engine records the edge there: a component's own depends_on only delays its registration.
        connects = pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts else None)

        self.deployment = _deployment(name, args, connects)
        self.pod_selector = _selector(args)
        """Labels of the worker pods (what scrapes them selects)."""
        _pdb(name, args, child)
        if args.scheduler_enabled:
            _scheduler_job(name, args, connects)
        _autoscaling(name, args, child)
        _network_policy(name, args, child)

        app = args.name
        self.deployment_name = self.deployment.metadata.apply(lambda m: m["name"] if m else app)
        self.register_outputs({"deployment_name": self.deployment_name})


def _selector(args: CeleryWorkersArgs) -> dict[str, str]:
    return {"app.kubernetes.io/name": args.name}


def _labels(app: str, component: str) -> dict[str, str]:
    """What an object is and belongs to; never the broker-client label, which opens the broker."""
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "ha-celery",
    }


def _pod_labels(app: str, component: str) -> dict[str, str]:
    """Labels of pods that connect to the broker: the one set its NetworkPolicy admits."""
    return {**_labels(app, component), CLIENT_LABEL: "true"}


def _metadata(args: CeleryWorkersArgs, component: str = "worker") -> k8s.meta.v1.ObjectMetaArgsDict:
    return {"name": args.name, "namespace": args.namespace, "labels": _labels(args.name, component)}


def _broker_env(args: CeleryWorkersArgs, credentials_secret: pulumi.Input[str]) -> list[k8s.core.v1.EnvVarArgsDict]:
    return [
        {"name": wire.ENV_BROKER_HOSTS, "value": pulumi.Output.from_input(args.broker_hosts).apply(",".join)},
        {"name": wire.ENV_BROKER_PORT, "value": str(args.broker_port)},
        {
            "name": wire.ENV_BROKER_USER,
            "value_from": {"secret_key_ref": {"name": credentials_secret, "key": "username"}},
        },
        {
            "name": wire.ENV_BROKER_PASSWORD,
            "value_from": {"secret_key_ref": {"name": credentials_secret, "key": "password"}},
        },
    ]


def _tls_env(args: CeleryWorkersArgs) -> list[k8s.core.v1.EnvVarArgsDict]:
    if args.broker_ca_secret is None:
        return []
    return [{"name": wire.ENV_BROKER_TLS_CA_FILE, "value": f"{wire.CLIENT_CA_DIR}/{wire.TLS_CA_KEY}"}]


def _tls_volumes(args: CeleryWorkersArgs) -> list[k8s.core.v1.VolumeArgsDict]:
    if args.broker_ca_secret is None:
        return []
    return [
        {
            "name": "broker-ca",
            "secret": {
                "secret_name": args.broker_ca_secret,
                "items": [{"key": wire.TLS_CA_KEY, "path": wire.TLS_CA_KEY}],
                "default_mode": 0o444,
            },
        }
    ]


def _tls_mounts(args: CeleryWorkersArgs) -> list[k8s.core.v1.VolumeMountArgsDict]:
    if args.broker_ca_secret is None:
        return []
    return [{"name": "broker-ca", "mount_path": wire.CLIENT_CA_DIR, "read_only": True}]


def _security() -> k8s.core.v1.SecurityContextArgsDict:
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security() -> k8s.core.v1.PodSecurityContextArgsDict:
    return {
        "run_as_non_root": True,
        "run_as_user": WORKER_UID,
        "run_as_group": WORKER_UID,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> k8s.core.v1.VolumeArgsDict:
    # The only writable place: heartbeat and ready files, celery's scratch space.
    # Memory-backed: charged to the pod's limit, which wire.max_memory_per_child_kib leaves room for.
    return {"name": "tmp", "empty_dir": {"medium": "Memory", "size_limit": f"{wire.WORKER_TMP_MIB}Mi"}}


def _tmp_mount() -> k8s.core.v1.VolumeMountArgsDict:
    return {"name": "tmp", "mount_path": "/tmp"}


def _probes() -> tuple[k8s.core.v1.ProbeArgsDict, k8s.core.v1.ProbeArgsDict, k8s.core.v1.ProbeArgsDict]:
    """Startup, liveness and readiness probes."""
    # A file the worker's own bootstep touches while connected: `celery inspect ping`
    # would cost seconds of CPU per probe and a broker round trip.
    startup: k8s.core.v1.ProbeArgsDict = {
        "exec_": {"command": [*HEALTH, "--max-age", str(timing.LIVENESS_MAX_AGE_S)]},
        "period_seconds": 5,
        "failure_threshold": 24,
        "timeout_seconds": 5,
    }
    liveness: k8s.core.v1.ProbeArgsDict = {
        "exec_": {"command": [*HEALTH, "--max-age", str(timing.LIVENESS_MAX_AGE_S)]},
        "period_seconds": 30,
        "timeout_seconds": 10,
        "failure_threshold": 3,
    }
    # Not ready while disconnected from every broker: a rollout then waits instead of
    # replacing working pods with ones that cannot consume.
    readiness: k8s.core.v1.ProbeArgsDict = {
        "exec_": {"command": [*HEALTH, "--ready", "--max-age", str(timing.LIVENESS_MAX_AGE_S)]},
        "period_seconds": 10,
        "timeout_seconds": 10,
        "failure_threshold": 3,
    }
    return startup, liveness, readiness


def _container(args: CeleryWorkersArgs) -> k8s.core.v1.ContainerArgsDict:
    startup, liveness, readiness = _probes()
    return {
        "name": "worker",
        "image": args.image,
        # Exec form, no shell: celery is PID 1 and gets the kubelet's SIGTERM (warm shutdown).
        "command": list(wire.WORKER_COMMAND),
        "env": [
            *_broker_env(args, args.credentials_secret),
            *_tls_env(args),
            {"name": wire.ENV_CONCURRENCY, "value": str(args.concurrency)},
            {
                "name": wire.ENV_MAX_MEMORY_PER_CHILD_KIB,
                "value": str(wire.max_memory_per_child_kib(args.memory_mib, args.concurrency)),
            },
            {"name": wire.ENV_PREFETCH_MULTIPLIER, "value": str(wire.DEFAULT_PREFETCH_MULTIPLIER)},
            # The broker policy's limit (components.rabbitmq renders the same constant): the worker
            # keeps a task's last failed delivery in the dead-letter queue with its reason (app.failures).
            {"name": wire.ENV_DELIVERY_LIMIT, "value": str(wire.DELIVERY_LIMIT)},
            {"name": wire.ENV_HEARTBEAT_FILE, "value": wire.DEFAULT_HEARTBEAT_FILE},
            {"name": wire.ENV_READY_FILE, "value": wire.DEFAULT_READY_FILE},
            {"name": metrics.ENV_METRICS_PORT, "value": str(metrics.WORKER_METRICS_PORT)},
            # Task outcomes are counted in the prefork children; the main process serves the sum (app.metrics).
            {"name": metrics.ENV_MULTIPROC_DIR, "value": metrics.DEFAULT_MULTIPROC_DIR},
        ],
        "ports": [
            {"name": metrics.WORKER_METRICS_PORT_NAME, "container_port": metrics.WORKER_METRICS_PORT, "protocol": "TCP"}
        ],
        "resources": {
            "requests": {"cpu": f"{args.cpu_millis}m", "memory": f"{args.memory_mib}Mi"},
            "limits": {"memory": f"{args.memory_mib}Mi"},
        },
        "startup_probe": startup,
        "liveness_probe": liveness,
        "readiness_probe": readiness,
        "security_context": _security(),
        "volume_mounts": [_tmp_mount(), *_tls_mounts(args)],
    }


def _pod_template(args: CeleryWorkersArgs) -> k8s.core.v1.PodTemplateSpecArgsDict:
    spread: list[k8s.core.v1.TopologySpreadConstraintArgsDict] = [
        {
            "max_skew": 1,
            "topology_key": key,
            # Anyway: stateless workers must still schedule while a zone or node is down.
            "when_unsatisfiable": "ScheduleAnyway",
            "label_selector": {"match_labels": _selector(args)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]
    return {
        "metadata": {"labels": _pod_labels(args.name, "worker"), "annotations": dict(args.pod_annotations)},
        "spec": {
            # Above the hard task time limit plus the shutdown margin: a warm shutdown
            # lets running tasks finish and ack before the kubelet's SIGKILL.
            "termination_grace_period_seconds": timing.MIN_TERMINATION_GRACE_S,
            "automount_service_account_token": False,
            "security_context": _pod_security(),
            "topology_spread_constraints": spread,
            "tolerations": _node_tolerations(),
            "containers": [_container(args)],
            "volumes": [_tmp_volume(), *_tls_volumes(args)],
        },
    }


def _node_tolerations() -> list[k8s.core.v1.TolerationArgsDict]:
    # 30 s instead of the API server's 300 s: a dead node's workers come back elsewhere ~80 s after
    # it stopped, not ~6 min (contract.timing.WORKER_NODE_TOLERATION_S says why not 0).
    return [
        {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "toleration_seconds": timing.WORKER_NODE_TOLERATION_S,
        }
        for key in (timing.NODE_UNREACHABLE_TAINT, timing.NODE_NOT_READY_TAINT)
    ]


def _deployment(name: str, args: CeleryWorkersArgs, opts: pulumi.ResourceOptions) -> k8s.apps.v1.Deployment:
    autoscaled = args.autoscaling != "none"
    return k8s.apps.v1.Deployment(
        f"{name}-deployment",
        metadata=_metadata(args),
        spec={
            "replicas": args.replicas,
            "selector": {"match_labels": _selector(args)},
            # Surge first: a rollout never lowers the number of consumers.
            "strategy": {"type": "RollingUpdate", "rolling_update": {"max_surge": 1, "max_unavailable": 0}},
            "template": _pod_template(args),
        },
        # The autoscaler owns the replica count; Pulumi would otherwise reset it on every up.
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(ignore_changes=["spec.replicas"] if autoscaled else None)
        ),
    )


def _pdb(name: str, args: CeleryWorkersArgs, child: pulumi.ResourceOptions) -> k8s.policy.v1.PodDisruptionBudget:
    return k8s.policy.v1.PodDisruptionBudget(
        f"{name}-pdb",
        metadata=_metadata(args),
        spec={"max_unavailable": 1, "selector": {"match_labels": _selector(args)}},
        opts=child,
    )


def _scheduler_job(name: str, args: CeleryWorkersArgs, opts: pulumi.ResourceOptions) -> k8s.batch.v1.Job:
    """The batch runs once per scheduler_run, not once per deploy.

    A Job's template is immutable, so Pulumi replaces (re-runs) the Job on any change to it,
    and every worker-code deploy changes its image. So: the run id is in the logical and the
    object name (a new id is a fresh resource, created from the current inputs: new image, new
    count); `ignore_changes=["spec"]` keeps a deploy from touching the finished Job; and no
    ttlSecondsAfterFinished, since a Job the cluster garbage-collects is dropped from state by
    the next refresh and created, so run, again by the up after it. `pulumi up --replace` is no
    way to re-run: ignore_changes would give the new Job the old spec; change the id.
    """
    job = f"{SCHEDULER}-{args.scheduler_run}"
    return k8s.batch.v1.Job(
        f"{name}-scheduler-{args.scheduler_run}",
        metadata={
            "name": job,
            "namespace": args.namespace,
            "labels": _labels(SCHEDULER, "scheduler"),
            # `pulumi up` need not wait for the whole batch to be published.
            "annotations": {"pulumi.com/skipAwait": "true"},
        },
        spec={
            # A failed run is retried: its confirmed tasks are published again under the same
            # task ids (the run id is the Job's UID), which idempotent tasks recognise; an
            # unconfirmed one is never lost.
            "backoff_limit": 2,
            "active_deadline_seconds": 3600,
            "template": {
                "metadata": {"labels": _pod_labels(SCHEDULER, "scheduler")},
                "spec": {
                    "restart_policy": "Never",
                    "automount_service_account_token": False,
                    "security_context": _pod_security(),
                    "containers": [
                        {
                            "name": "scheduler",
                            "image": args.image,
                            "command": ["python", "-m", "app.scheduler", "--count", str(args.scheduler_tasks)],
                            "env": [
                                *_broker_env(args, args.scheduler_credentials_secret),
                                *_tls_env(args),
                                {
                                    "name": ENV_SCHEDULER_RUN_ID,
                                    "value_from": {"field_ref": {"field_path": JOB_UID_FIELD}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "security_context": _security(),
                            "volume_mounts": [_tmp_mount(), *_tls_mounts(args)],
                        }
                    ],
                    "volumes": [_tmp_volume(), *_tls_volumes(args)],
                },
            },
        },
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=["spec"])),
    )


def _autoscaling(name: str, args: CeleryWorkersArgs, child: pulumi.ResourceOptions) -> None:
    if args.autoscaling == "hpa":
        _hpa(name, args, child)
    elif args.autoscaling == "keda":
        _keda(name, args, child)


def _hpa(name: str, args: CeleryWorkersArgs, child: pulumi.ResourceOptions) -> None:
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        f"{name}-hpa",
        metadata=_metadata(args, "autoscaler"),
        spec={
            "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": args.name},
            "min_replicas": args.replicas,
            "max_replicas": args.autoscaling_max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "average_utilization": 70}},
                }
            ],
        },
        opts=child,
    )


def _keda(name: str, args: CeleryWorkersArgs, child: pulumi.ResourceOptions) -> None:
    # The scaler's own objects: no pod of theirs talks AMQP (KEDA reads the management API from
    # its own namespace, which the broker's NetworkPolicy admits by namespace).
    app, labels = args.name, _labels(args.name, "autoscaler")
    auth_secret = k8s.core.v1.Secret(
        f"{name}-keda-rabbitmq",
        metadata={
            "name": wire.child_name(app, wire.KEDA_RABBITMQ_SECRET),
            "namespace": args.namespace,
            "labels": labels,
        },
        type="Opaque",
        string_data={"host": args.management_url},
        opts=child,
    )
    auth = k8s.apiextensions.CustomResource(
        f"{name}-keda-auth",
        api_version="keda.sh/v1alpha1",
        kind="TriggerAuthentication",
        metadata={"name": app, "namespace": args.namespace, "labels": labels},
        spec={"secretTargetRef": [{"parameter": "host", "name": auth_secret.metadata["name"], "key": "host"}]},
        opts=child,
    )
    k8s.apiextensions.CustomResource(
        f"{name}-keda",
        api_version="keda.sh/v1alpha1",
        kind="ScaledObject",
        metadata={"name": app, "namespace": args.namespace, "labels": labels},
        spec={
            "scaleTargetRef": {"name": app},
            "minReplicaCount": args.replicas,
            "maxReplicaCount": args.autoscaling_max_replicas,
            "triggers": [
                {
                    "type": "rabbitmq",
                    # http: the management API counts unacked (running) tasks too, so a busy
                    # cluster is not scaled down under its own running work.
                    "metadata": {"protocol": "http", "mode": "QueueLength", "value": "20", "queueName": args.queue},
                    "authenticationRef": {"name": app},
                }
            ],
        },
        opts=pulumi.ResourceOptions(parent=child.parent, depends_on=[auth]),
    )


DNS_PEER: k8s.networking.v1.NetworkPolicyPeerArgsDict = {
    "namespace_selector": {"match_labels": {NAMESPACE_NAME_LABEL: "kube-system"}},
    "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}},
}
"""The cluster DNS (GKE's kube-dns pods)."""


def _network_policy(
    name: str, args: CeleryWorkersArgs, child: pulumi.ResourceOptions
) -> k8s.networking.v1.NetworkPolicy:
    """Every broker client's pod (workers, scheduler): in, only metrics scrapes; out, only the broker and DNS.

    A compromised task then cannot reach other services, the internet or the broker's management API.
    """
    spec: k8s.networking.v1.NetworkPolicySpecArgsDict = {
        "pod_selector": {"match_labels": {CLIENT_LABEL: "true"}},
        "policy_types": ["Ingress"],
        "ingress": [
            {
                "from_": [namespaces_peer(args.metrics_namespaces)],
                "ports": [{"protocol": "TCP", "port": metrics.WORKER_METRICS_PORT}],
            }
        ],
    }
    if args.broker_selector is not None:
        spec["policy_types"] = ["Ingress", "Egress"]
        spec["egress"] = [
            {
                "to": [{"pod_selector": {"match_labels": args.broker_selector}}],
                "ports": [{"protocol": "TCP", "port": args.broker_port}],
            },
            {"to": [DNS_PEER], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
    return k8s.networking.v1.NetworkPolicy(
        f"{name}-netpol",
        metadata={"name": "broker-clients", "namespace": args.namespace, "labels": _labels(args.name, "worker")},
        spec=spec,
        opts=child,
    )
