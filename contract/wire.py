"""Names and numbers on the wire between the cloud program, the broker, the app and the harness.

Each is defined here once, because each is read on two sides of a boundary that no type checker
crosses: a Kubernetes object written by ``components`` and a process started from the worker
image (env var names, the argv, the file paths its probes read), a label that one component puts
on pods and another admits in a NetworkPolicy, a port a Service names and the broker listens on.
Change one side alone and the cluster breaks at run time, not at review time.

Standard library only: the broker renderer, the Pulumi components and the health probe import
this without pulling in Celery or Pulumi.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- the worker's environment (read by app.config.from_env; set by components.workers) ----------
ENV_BROKER_URLS: Final = "BROKER_URLS"
ENV_BROKER_HOSTS: Final = "BROKER_HOSTS"
ENV_BROKER_PORT: Final = "BROKER_PORT"
ENV_BROKER_VHOST: Final = "BROKER_VHOST"
ENV_BROKER_USER: Final = "BROKER_USER"
ENV_BROKER_PASSWORD: Final = "BROKER_PASSWORD"
ENV_BROKER_TLS_CA_FILE: Final = "BROKER_TLS_CA_FILE"
"""Set: AMQP over TLS (amqps://, port AMQPS_PORT), the broker verified against this CA file."""
ENV_BROKER_TLS_SERVER_NAME: Final = "BROKER_TLS_SERVER_NAME"
"""Optional: the name every broker certificate is checked against instead of each URL's host (a
client that reaches the pods by address: the client Service's name is in every node's certificate)."""
ENV_PREFETCH_MULTIPLIER: Final = "WORKER_PREFETCH_MULTIPLIER"
ENV_CONCURRENCY: Final = "WORKER_CONCURRENCY"
ENV_TASK_SOFT_TIME_LIMIT_S: Final = "TASK_SOFT_TIME_LIMIT_S"
"""The worker's lane's soft time limit (contract.lanes); unset: contract.timing's."""
ENV_TASK_TIME_LIMIT_S: Final = "TASK_TIME_LIMIT_S"
"""The worker's lane's hard time limit; unset: contract.timing's."""
ENV_TASK_QUEUES: Final = "TASK_QUEUES"
"""Every lane's queue, comma-separated, ``celery`` first: what each client declares and may route to."""
ENV_TASK_ROUTES: Final = "TASK_ROUTES"
"""The lanes' task routes: a JSON object of task name or *-glob -> queue (Celery's ``task_routes``)."""
ENV_HEARTBEAT_FILE: Final = "HEALTH_HEARTBEAT_FILE"
ENV_READY_FILE: Final = "HEALTH_READY_FILE"
ENV_SCHEDULER_RUN_ID: Final = "SCHEDULER_RUN_ID"
"""Names a scheduling run (``python -m app.scheduler --run-id``): its retries publish the same task ids."""
SCHEDULER_RUN_PATTERN: Final = r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?"
"""A scheduler run's id (stack setting ``schedulerRun``): part of its Job's name, so a DNS label piece."""
JOB_UID_FIELD: Final = "metadata.labels['batch.kubernetes.io/controller-uid']"
"""The downward-API path of the owning Job's UID on its pods: one per Job, shared by its retries."""
ENV_REMAP_SIGTERM: Final = "REMAP_SIGTERM"
"""Read by billiard; must stay unset (see app.config)."""

DEFAULT_BROKER_VHOST: Final = "/"
DEFAULT_PREFETCH_MULTIPLIER: Final = 1
DEFAULT_CONCURRENCY: Final = 2
MAX_CONCURRENCY: Final = 64
"""Upper bound of ``WORKER_CONCURRENCY``; the stack setting ``workerConcurrency`` uses the same."""
ENV_MAX_MEMORY_PER_CHILD_KIB: Final = "WORKER_MAX_MEMORY_PER_CHILD_KIB"
"""Celery's ``worker_max_memory_per_child`` (KiB): a pool process whose resident memory passed it
after a task is replaced. Set from the pod's memory limit (:func:`max_memory_per_child_kib`)."""
WORKER_MAIN_PROCESS_MIB: Final = 48
"""The worker's main process, and the resident size every pool process starts from (the imports
it shares with the main process since the fork). Measured on the dev plan's worker under the pod
runner's cgroups (2 pool processes, idle after a drill): main 47 MiB resident, each pool process
39 MiB of which 8 MiB its own, 64 MiB charged to the container in all."""
WORKER_TMP_MIB: Final = 64
"""The worker pod's ``/tmp``: a memory-backed emptyDir, charged to the pod's memory as it fills."""
WORKER_CHILD_MIN_MIB: Final = 20
"""What each pool process adds to the container's charged memory when it starts, at least: the pages
it copies from the main process after the fork (reference counts touch them), its page tables and
its own. Measured on the dev plan's workers under the pod runner's cgroups (v1, 2026-12-07): 67 MiB
for a pod of 2 pool processes, 327 MiB (peak 335) for one of 16, so ~18.6 MiB a process; a pod of
32 in 512 MiB was OOM-killed at start (peak 512 MiB) though the old floor of 8 MiB a process let
the settings accept it."""
MEMORY_PER_CHILD_SHARE: Final = 0.8
"""The part of each pool process's share of the limit it may reach before it is recycled: the
check runs after a task, so a task may overshoot it by what it allocates."""


def max_memory_per_child_kib(memory_mib: int, concurrency: int) -> int:
    """``worker_max_memory_per_child`` for a pod of ``memory_mib`` MiB running ``concurrency`` pool processes.

    A pool process's resident size counts the pages it shares with the main process, which the
    cgroup charges once: it may reach the shared part plus its share of what the main process and
    ``/tmp`` leave of the limit. ValueError when nothing is left: the pod cannot hold the pool.
    """
    left = memory_mib - WORKER_MAIN_PROCESS_MIB - WORKER_TMP_MIB
    if left < WORKER_CHILD_MIN_MIB * concurrency:
        raise ValueError(
            f"{memory_mib} MiB leaves {left} MiB for {concurrency} pool process(es) after the main process "
            f"({WORKER_MAIN_PROCESS_MIB} MiB) and /tmp ({WORKER_TMP_MIB} MiB); allowed: at least "
            f"{WORKER_MAIN_PROCESS_MIB + WORKER_TMP_MIB + WORKER_CHILD_MIN_MIB * concurrency} MiB"
        )
    return int((WORKER_MAIN_PROCESS_MIB + MEMORY_PER_CHILD_SHARE * left / concurrency) * 1024)


DEFAULT_HEARTBEAT_FILE: Final = "/tmp/worker-heartbeat"
DEFAULT_READY_FILE: Final = "/tmp/worker-ready"

# --- the queue ------------------------------------------------------------------------------------
QUEUE_NAME: Final = "celery"
"""The one task queue (a quorum queue) and its topic exchange's name."""
DEAD_LETTER_EXCHANGE: Final = "celery.dlx"
"""Fanout exchange that receives tasks rejected past the delivery limit."""
DEAD_LETTER_QUEUE: Final = "celery.dlq"
"""Quorum queue bound to the dead-letter exchange: poison tasks are kept, not dropped."""
DELIVERY_LIMIT: Final = 20
"""Failed deliveries a task message may have before it is dead-lettered: the broker policy's
``delivery-limit`` (``broker.config.BrokerConfig``; RabbitMQ 4.x's default) and the number the
worker compares a delivery's ``x-delivery-count`` with, to know that a crashed or timed-out task's
requeue would be its last and to keep it in the dead-letter queue with its reason instead
(``app.failures``). RabbitMQ 4.3 counts only failed returns (``basic.reject`` with requeue, a
closed channel); the delivery whose return takes the count past the limit is dead-lettered, so a
task that always crashes runs ``DELIVERY_LIMIT + 1`` times and its last delivery carries
``x-delivery-count: DELIVERY_LIMIT``."""
ENV_DELIVERY_LIMIT: Final = "WORKER_DELIVERY_LIMIT"
"""The broker's delivery limit as the worker Deployment tells the worker (``app.config``)."""
MAX_DELIVERY_LIMIT: Final = 1000
"""Largest ``WORKER_DELIVERY_LIMIT`` accepted: far past any sensible limit, so a typo fails the pod."""
AMQP_FRAME_MAX: Final = 131_072
"""The largest AMQP frame the broker accepts (``frame_max``, bytes): RabbitMQ's default (4.3.6 and
3.10, ``rabbit.app``), which ``broker/`` leaves unset and py-amqp takes in ``connection.tune``. A
message's properties and headers travel in one frame, so the publisher keeps them well under it
(``app.intake.MAX_HEADER_BYTES``); its body is split across frames and is limited elsewhere."""
DELAYED_LEVELS: Final = 28
"""Celery's native delayed delivery (countdown/eta on quorum queues, kombu
``native_delayed_delivery``): one topic exchange and one quorum queue per bit of the delay in
seconds, ``celery_delayed_27`` (2^27 s) down to ``celery_delayed_0`` (1 s)."""
DELAYED_DELIVERY_EXCHANGE: Final = "celery_delayed_delivery"
"""Where a delayed message leaves the levels, bound onward to the task queue's exchange."""


def delayed_level(level: int) -> str:
    """The exchange and queue name of one delayed-delivery level (kombu's naming)."""
    return f"celery_delayed_{level}"


# --- commands the images run ------------------------------------------------------------------------
WORKER_COMMAND: Final[tuple[str, ...]] = (
    "celery",
    "-A",
    "app.celery_app",
    "worker",
    "--loglevel=INFO",
    # Gossip and mingle make every worker talk to every other at start and on
    # each event; nothing here needs it and it is broker load that grows as n^2.
    "--without-gossip",
    "--without-mingle",
    # No worker-heartbeat events: nothing here consumes them (no Flower, task events off), and
    # each one is a confirmed publish without a timeout on the worker's main loop: a frozen
    # broker node (SIGSTOP, 60 s) blocked the whole worker - no consuming, no AMQP heartbeat
    # check - for the whole freeze. The AMQP heartbeat is separate and stays on.
    "--without-heartbeat",
)
"""The worker's argv: the image's CMD (exec form, so celery is PID 1), the Deployment's command and
what the local harness runs. ``tests/unit/app/test_config.py`` checks the Dockerfile matches."""

HEALTH_COMMAND: Final[tuple[str, ...]] = ("python", "-m", "app.health")
"""The worker's probe command (``--ready`` for readiness, ``--max-age`` for the heartbeat age)."""

DEFINITIONS_PATH: Final = "/etc/ha-celery/definitions.json"
"""Where the broker pods mount the rendered definitions (dead-letter topology and policy)."""


# --- child object names (the cluster operator's Instance.ChildResourceName) ------------------------
# The component names every object it makes from its own fixed name and one of these kinds; the
# harness's Secret rules and the drills find the objects by the same function.
NODES_SERVICE: Final = "nodes"
"""The headless Service (``<statefulset>-nodes``) that gives each broker pod its DNS name."""
CONFIG_MAP: Final = "config"
"""The broker's rendered conf.d files, enabled_plugins and definitions."""
DEFAULT_USER_SECRET: Final = "default-user"
"""The administrator's credentials and its conf.d file."""
ERLANG_COOKIE_SECRET: Final = "erlang-cookie"
"""The Erlang cookie the broker nodes share."""
TLS_SECRET: Final = "tls"
"""The CA certificate and every node's certificate and key (the broker's only)."""
CA_SECRET: Final = "ca"
"""The CA certificate alone, what clients mount."""
KEDA_RABBITMQ_SECRET: Final = "keda-rabbitmq"
"""Child of the worker Deployment: the management URL KEDA's rabbitmq trigger reads."""


def child_name(app: str, kind: str) -> str:
    """The name of ``app``'s child object of ``kind`` (one of the constants above, a role's user
    Secret or a disk type's StorageClass), e.g. ``rabbitmq-erlang-cookie``."""
    return f"{app}-{kind}"


BROKER_TLS_SECRET_SUFFIX: Final = f"-{TLS_SECRET}"
"""``<statefulset>-tls``: ``child_name(statefulset, TLS_SECRET)``."""
BROKER_CA_SECRET_SUFFIX: Final = f"-{CA_SECRET}"
"""``<statefulset>-ca``: ``child_name(statefulset, CA_SECRET)``."""
TLS_CA_KEY: Final = "ca.crt"
"""Key of the CA certificate in both Secrets."""
CLIENT_CA_DIR: Final = "/etc/ha-celery/broker-ca"
"""Where worker and scheduler pods mount the CA Secret; BROKER_TLS_CA_FILE points into it."""


def tls_cert_key(pod: str) -> str:
    """Key of a broker node's certificate (PEM) in the TLS Secret, e.g. ``rabbitmq-0.crt``."""
    return f"{pod}.crt"


def tls_private_key_key(pod: str) -> str:
    """Key of a broker node's private key (PEM) in the TLS Secret, e.g. ``rabbitmq-0.key``."""
    return f"{pod}.key"


def broker_tls_names(statefulset: str, headless: str, namespace: str, ordinal: int) -> list[str]:
    """The DNS names a broker node's certificate carries: its own pod name (what the workers'
    failover list uses) first, then the client Service's names (any node may answer there)."""
    return [
        f"{statefulset}-{ordinal}.{headless}.{namespace}.svc.cluster.local",
        f"{statefulset}.{namespace}.svc.cluster.local",
        f"{statefulset}.{namespace}.svc",
        f"{statefulset}.{namespace}",
        statefulset,
    ]


def import_definitions_command(path: str = DEFINITIONS_PATH) -> list[str]:
    """The argv that applies a rendered definitions file to a running cluster (idempotent)."""
    return ["rabbitmqctl", "import_definitions", path]


# --- ports --------------------------------------------------------------------------------------------
AMQP_PORT: Final = 5672
AMQPS_PORT: Final = 5671
"""AMQP over TLS (stack setting ``brokerTls``): the only AMQP listener then, the plain one is off."""
MANAGEMENT_PORT: Final = 15672
PROMETHEUS_PORT: Final = 15692
EPMD_PORT: Final = 4369
DIST_PORT: Final = 25672
CLI_DIST_PORTS: Final = (35672, 35682)
"""First and last port (inclusive) RabbitMQ's CLI tools listen on for a node's distribution link."""
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label Kubernetes sets on every namespace to its name (a NetworkPolicy namespaceSelector key)."""
KEDA_NAMESPACE: Final = "keda"
"""Where KEDA's operator runs (its Helm chart's default): it reads the broker's management API."""
GMP_NAMESPACE: Final = "gmp-system"
"""Where GKE managed Prometheus's collectors run: they scrape the broker and the workers."""


# --- the broker cluster ------------------------------------------------------------------------------
def quorum_safe(replicas: int) -> bool:
    """Whether a cluster of ``replicas`` brokers is a size quorum queues are safe with: odd and at
    least one. An even cluster survives no more node losses than the odd one below it (a majority of
    4 is 3), so it only adds a node that can break a tie badly. Settings, the broker config and the
    policy pack all ask this; settings and the policy pack ask for at least 3 on top."""
    return replicas >= 1 and replicas % 2 == 1


# --- users and labels -----------------------------------------------------------------------------------
BROKER_USERNAME: Final = "celery"
"""The broker's default user: the operators' administrator (its password is generated into a
Secret that no workload mounts). Kept under its old name: ``default_user`` acts on a blank node
only, so a running cluster keeps this user whatever the name here says."""


class BrokerRole(StrEnum):
    """A broker user per kind of client, each with only the permissions it needs (broker.users)."""

    WORKER = "worker"
    """The worker Deployment (and ``python -m app.dlq``, which runs in a worker pod)."""
    SCHEDULER = "scheduler"
    """The scheduler Job: publishes tasks."""
    MONITORING = "monitoring"
    """KEDA's rabbitmq trigger and other readers of the management API."""


def role_username(role: BrokerRole) -> str:
    """The broker user name of ``role``."""
    return f"{BROKER_USERNAME}-{role.value}"


def role_secret_name(broker: str, role: BrokerRole) -> str:
    """The Secret (``username``, ``password``) of ``role``'s user, next to ``<broker>-default-user``."""
    return child_name(broker, f"{role.value}-user")


ROLE_PASSWORDS_DIR: Final = "/etc/ha-celery-users"
"""Where the broker pods mount each role's password as a file named after the user; their
postStart hook creates the users from there."""
RABBITMQ_UID: Final = 999
"""The rabbitmq user of the official image."""
WORKER_UID: Final = 10001
"""The non-root user baked into app/Dockerfile."""
CLIENT_LABEL: Final = "ha-celery/broker-client"
"""Pods carrying this label (value "true") may open AMQP connections: the broker's NetworkPolicy
admits them, and the worker Deployment and scheduler Job put it on their pods."""
OPS_LABEL: Final = "ha-celery/ops"
"""Pods labelled with this may reach AMQP and the management UI: operators' tools."""


def management_url(username: str, password: str, service: str, namespace: str) -> str:
    """The management API's URL through the broker's client Service (what KEDA's trigger reads)."""
    return f"http://{username}:{password}@{service}.{namespace}.svc.cluster.local:{MANAGEMENT_PORT}/"


class Autoscaling(StrEnum):
    """How the worker Deployment scales (stack setting ``autoscaling``)."""

    NONE = "none"
    HPA = "hpa"
    """CPU-based HorizontalPodAutoscaler."""
    KEDA = "keda"
    """KEDA's rabbitmq trigger on queue length (KEDA must be installed in the cluster)."""
