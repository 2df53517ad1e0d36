"""The broker pod: the container, its cookie/config setup init container, volumes, lifecycle, probes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi_kubernetes as k8s

from broker.render import post_start_script, setup_script
from broker.users import role_users, users_script
from components.rabbitmq import meta, priority
from components.rabbitmq.tls import BROKER_TLS, TLS_DIR, TLS_SOURCE
from contract.metrics import BROKER_DETAILED_METRICS_PATH, BROKER_METRICS_PORT_NAME
from contract.wire import (
    CONFIG_MAP,
    DEFAULT_USER_SECRET,
    DEFINITIONS_PATH,
    DIST_PORT,
    EPMD_PORT,
    ERLANG_COOKIE_SECRET,
    MANAGEMENT_PORT,
    NODES_SERVICE,
    PROMETHEUS_PORT,
    RABBITMQ_UID,
    ROLE_PASSWORDS_DIR,
    TLS_SECRET,
    child_name,
    role_secret_name,
)

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

GRACE_SECONDS = 600
"""Finite, unlike the operator's 7 days: a drain that cannot finish in 10 min will not finish, and
a node update must not hang forever. The preStop waits use most of it."""

CONF_SOURCE = "/etc/ha-celery/conf.d"
"""Where the init container reads the rendered conf.d files and enabled_plugins (ConfigMap +
Secret, read-only)."""
PLUGINS_FILE = "/var/lib/rabbitmq/enabled_plugins"
"""The node's enabled_plugins: copied by the init container onto the writable rabbitmq-home
emptyDir, so `rabbitmq-plugins enable` works (until the pod restarts: plugins to keep belong in
broker.render.enabled_plugins)."""


def _tls_mounts(args: RabbitMQClusterArgs, *, init: bool) -> list[k8s.core.v1.VolumeMountArgsDict]:
    if not args.tls:
        return []
    if init:
        return [{"name": "tls-secret", "mount_path": TLS_SOURCE}, {"name": "tls", "mount_path": TLS_DIR}]
    return [{"name": "tls", "mount_path": TLS_DIR, "read_only": True}]


def _cookie_setup_container(args: RabbitMQClusterArgs) -> k8s.core.v1.ContainerArgsDict:
    # The cookie must be a 0600 file owned by rabbitmq; a Secret volume cannot be both (fsGroup
    # makes it group-readable), so it is copied as the operator does; conf.d and enabled_plugins
    # too, onto writable volumes, see setup_script.
    script = setup_script(
        statefulset=args.name,
        replicas=args.replicas,
        amqp_port=meta.amqp_port(args),
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
        "security_context": _container_security(),
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


def volumes(args: RabbitMQClusterArgs) -> list[k8s.core.v1.VolumeArgsDict]:
    # Names as plain strings (contract.wire.child_name), not the objects' Outputs: an Output would
    # make the pod template depend on the ConfigMap or Secret resource, and any replacement of it
    # would replace the StatefulSet too (the engine's dependent replacement). The StatefulSet
    # waits for them through depends_on instead; the checksum annotations roll the pods.
    config_map = child_name(args.name, CONFIG_MAP)
    user_secret = child_name(args.name, DEFAULT_USER_SECRET)
    tls_volumes: list[k8s.core.v1.VolumeArgsDict] = []
    if args.tls:
        tls_volumes = [
            # Only the init container mounts every node's pair; the broker sees its own, copied.
            {"name": "tls-secret", "secret": {"secret_name": child_name(args.name, TLS_SECRET), "default_mode": 0o400}},
            {"name": "tls", "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
        ]
    return [
        *tls_volumes,
        {"name": "rabbitmq-home", "empty_dir": {}},
        {"name": "rabbitmq-confd", "empty_dir": {}},
        {
            "name": "erlang-cookie-secret",
            "secret": {"secret_name": child_name(args.name, ERLANG_COOKIE_SECRET), "default_mode": 0o400},
        },
        {
            "name": "rabbitmq-confd-source",
            "projected": {
                "sources": [
                    {
                        "config_map": {
                            "name": config_map,
                            "items": [
                                {"key": "20-ha-celery.conf", "path": "20-ha-celery.conf"},
                                {"key": "enabled_plugins", "path": "enabled_plugins"},
                            ],
                        }
                    },
                    {
                        "secret": {
                            "name": user_secret,
                            "items": [{"key": "default_user.conf", "path": "30-default-user.conf"}],
                        }
                    },
                ]
            },
        },
        {
            "name": "ha-celery-files",
            "config_map": {
                "name": config_map,
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
                            "name": role_secret_name(args.name, user.role),
                            "items": [{"key": "password", "path": user.username}],
                        }
                    }
                    for user in role_users()
                ],
            },
        },
    ]


def pod_spec(args: RabbitMQClusterArgs, volumes: list[k8s.core.v1.VolumeArgsDict]) -> k8s.core.v1.PodSpecArgsDict:
    selector = meta.selector(args)
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
        "priority_class_name": priority.priority_class_name(args),
        "tolerations": priority.tolerations(),
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


def _env(args: RabbitMQClusterArgs) -> list[k8s.core.v1.EnvVarArgsDict]:
    return [
        {"name": "MY_POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
        {"name": "MY_POD_NAMESPACE", "value_from": {"field_ref": {"field_path": "metadata.namespace"}}},
        {"name": "K8S_SERVICE_NAME", "value": child_name(args.name, NODES_SERVICE)},
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


READINESS_PATH = BROKER_DETAILED_METRICS_PATH
"""The readiness probe's request: rabbitmq_prometheus's detailed endpoint with no ``family`` asked
for, which renders only the node's identity (no metric family, no peer asked, the same with and
without TLS: the Prometheus listener is plain HTTP). It answers once the node has booted and its
plugins run, and only while the node's processes run."""

AWAIT_QUORUM_S = 300
"""preStop: how long to wait for every quorum queue to keep a majority without this node."""
DRAIN_S = GRACE_SECONDS - AWAIT_QUORUM_S - 60
"""preStop: how long the drain may take; both waits and a minute to stop fit in the grace period
(the kubelet counts the grace from the start of the hook and SIGKILLs when it runs out)."""


def _lifecycle(args: RabbitMQClusterArgs) -> k8s.core.v1.LifecycleArgsDict:
    return {
        # Definitions (DLX, dead-letter queue, policy) after boot: importing them
        # at boot would skip creating the default user (see broker.render).
        # Then the role users from their Secrets, in one import (see broker.users for why there).
        "post_start": {
            "exec_": {
                "command": [
                    "sh",
                    "-c",
                    post_start_script(DEFINITIONS_PATH, then=users_script(tuple(q.name for q in args.task_queues))),
                ]
            }
        },
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
            {"name": meta.amqp_port_name(args), "container_port": meta.amqp_port(args)},
            {"name": "management", "container_port": MANAGEMENT_PORT},
            {"name": BROKER_METRICS_PORT_NAME, "container_port": PROMETHEUS_PORT},
            {"name": "epmd", "container_port": EPMD_PORT},
            {"name": "cluster-links", "container_port": DIST_PORT},
        ],
        "resources": {
            "requests": {"cpu": f"{args.cpu_millis}m", "memory": f"{args.memory_mib}Mi"},
            "limits": {"cpu": f"{args.cpu_millis}m", "memory": f"{args.memory_mib}Mi"},
        },
        # Not a full health check: readiness gates the client Service only, and a check that
        # needs the peers would keep a restarting cluster unready forever.
        "readiness_probe": {
            # The node's own HTTP answer, not a TCP connect: a frozen node (a paused VM, a stalled
            # disk) has its kernel complete the handshake and answers nothing, and must leave
            # the Service. See READINESS_PATH for why this path.
            "http_get": {"port": BROKER_METRICS_PORT_NAME, "path": READINESS_PATH},
            # No initial delay: no probe runs before the postStart hook returns, and the hook has
            # already waited for the boot; a delay would only hold a restarted broker out longer.
            "period_seconds": 10,
            "timeout_seconds": 5,
            "failure_threshold": 3,
        },
        # No liveness probe, as the operator: a node replaying a large quorum log or
        # waiting for its peers looks dead to any cheap check, and a restart then
        # throws that work away: a slow boot becomes a crash loop. A hung BEAM is
        # rare; a restart loop under load is not.
        "lifecycle": _lifecycle(args),
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


def _anti_affinity(selector: dict[str, str], required: bool) -> k8s.core.v1.PodAntiAffinityArgsDict:
    term: k8s.core.v1.PodAffinityTermArgsDict = {
        "label_selector": {"match_labels": selector},
        "topology_key": "kubernetes.io/hostname",
    }
    if required:
        # One broker per machine: losing a machine must never take two of the three votes.
        return {"required_during_scheduling_ignored_during_execution": [term]}
    return {"preferred_during_scheduling_ignored_during_execution": [{"weight": 100, "pod_affinity_term": term}]}


def _container_security() -> k8s.core.v1.SecurityContextArgsDict:
    # A read-only root: the broker writes only to its volumes (HOME with the cookie and
    # enabled_plugins, conf.d, the data disk). The local pod runner enforces it, so a write
    # anywhere else fails in the drills before it fails on GKE.
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
