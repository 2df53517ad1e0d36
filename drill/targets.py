"""What a drill runs against: the plan booted on the pod runner (ha), or the 2018 setup on 3.10 (seed).

``PlanTarget`` boots ``build/plan/<stack>``'s StatefulSet and Deployment on the local pod runner
(``harness.kube``): RabbitMQ 4.3 from the plan's own objects, the workers from the plan's own
Deployment (the image's command, env from its Secrets, its probes and grace period). The drill
adds to the worker pods only its counting tasks and where they write (reported as deltas).

``LocalTarget`` keeps the seed's comparison where classic mirroring still exists: Debian's
RabbitMQ 3.10 (``harness.seed.cluster``) with the seed's policy, and worker processes started with
the seed's configuration (``harness.seed.workers``).

Both offer what the runner needs: start the workers, a publisher, a queue statistic, and the
fault of a scenario.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import quote

from celery import Celery

from app.batch import ProgressCallback, Publisher, PublishPlan, PublishResult
from app.config import from_env
from app.factory import make_app
from app.publish import publish_pipelined
from contract import wire
from contract.lanes import DEFAULT_LANE, LONG_LANE, deployment_name, queue_name
from contract.plan_dir import check_complete
from drill import node_scenarios, pod_scenarios, scenarios
from drill import tasks as drill_tasks
from drill.held import FreezeReport
from drill.node_scenarios import NodeReport
from drill.observe import Observed, Observer, observing
from drill.plan_secrets import plan_secret_rules
from drill.pod_scenarios import BROKERS, WORKERS, Mark
from drill.profiles import SEED_POLICY, Profile, ProfileRuntime
from drill.scale import ScaleReport, scale_in
from drill.scenario import QUEUE, Scenario
from drill.scenarios import FaultContext
from drill.update import UpdateReport, UpdateSpec
from harness.kube.cluster import HostPeer, KubeCluster, PodAdditions
from harness.kube.dns import resolv_conf
from harness.kube.fields import Delta
from harness.kube.objects import Secret
from harness.kube.workloads import named_for, statefulset_ordinals, statefulset_pod_fqdn
from harness.runtime import rootfs
from harness.runtime.images import ensure_images
from harness.runtime.poll import poll
from harness.runtime.resolver import call_resolving_through
from harness.seed.cluster import LocalCluster
from harness.seed.workers import WorkerPool

T = TypeVar("T")

BOOT_TIMEOUT_S = 300.0
WORKERS_TIMEOUT_S = 180.0
"""For the worker Deployment's pods to be Ready after a scale-up, or gone after a scale-down
(a warm shutdown waits for running tasks, bounded by the plan's grace period)."""
CONTAINER_RESULTS = "/drill-results"
"""Where the worker pods see the drill's results directory."""


class Target(Protocol):
    """What the drill runner needs from the cluster under test."""

    @property
    def versions(self) -> dict[str, str]: ...

    @property
    def deltas(self) -> list[Delta]: ...

    @property
    def queue(self) -> str:
        """The task queue the drill loads: its lane's (:meth:`use_lane`)."""
        ...

    def use_lane(self, lane: str) -> None:
        """Load and fault the lane ``lane`` (contract.lanes): its worker Deployment and its queue."""
        ...

    def start_workers(self) -> int:
        """Start (or confirm) the workers; return how many consumers the task queue should get."""
        ...

    def stop_workers(self) -> None:
        """Stop every worker and wait until none is left; ``start_workers`` brings them back."""
        ...

    def workers_present(self) -> int:
        """Worker pods (or processes) that exist now, Ready or not, terminating included."""
        ...

    def workers_ever(self) -> int:
        """Distinct worker pods (or processes) the cluster under test has had so far."""
        ...

    def delayed_messages(self) -> int | None:
        """Messages waiting in Celery's native delayed-delivery queues, None if no node answers."""
        ...

    def publisher(self) -> tuple[Celery, Publisher]:
        """A Celery app and the publisher the drill uses; the app's broker names resolve only
        within :meth:`in_cluster` (the publisher calls it itself)."""
        ...

    def in_cluster(self, fn: Callable[[], T]) -> T:
        """``fn()`` as a client inside the cluster runs it: names resolve through the cluster DNS."""
        ...

    def queue_stat(self, item: str) -> int | None:
        """One ``list_queues`` column of the task queue (0 when not declared), None if no node answers."""
        ...

    def inject(self, scenario: Scenario, mark: Mark) -> None: ...

    def reset(self) -> None:
        """Make the cluster ready for the next scenario: everything healthy, no task left anywhere."""
        ...

    def pod_events(self, since: float) -> list[PodEvent]:
        """What the pods went through since ``since`` (empty where there are no pods)."""
        ...

    def observe(self, since: float) -> Observed | None:
        """What the cluster's Prometheus saw since ``since`` (None where none runs)."""
        ...

    def update_result(self) -> UpdateReport | None:
        """What the ``update`` scenario applied (None for every other scenario)."""
        ...

    def node_result(self) -> NodeReport | None:
        """What a node drill saw (``drill.node_scenarios``; None for every other scenario)."""
        ...

    def freeze_result(self) -> FreezeReport | None:
        """How long the ``freeze-broker`` scenario's frozen node held each worker (None for every other)."""
        ...

    def scale_result(self) -> ScaleReport | None:
        """Which pod the ``scale-in`` scenario's scale-in deleted and how long it took (None for every other)."""
        ...


PodEvent = tuple[float, str, str, str]
"""(epoch seconds, pod or node, reason, message)."""
RESET_TIMEOUT_S = 300.0


def parse_queue_stat(out: str, queue: str = QUEUE) -> int:
    """The value of ``queue``'s row in ``rabbitmqctl -q list_queues name <item> --no-table-headers``."""
    for line in out.splitlines():
        name, _, value = line.partition("\t")
        if name == queue:
            return int(value)
    return 0


DELAYED_QUEUE_PREFIX = "celery_delayed_"
"""kombu's native delayed delivery: queues ``celery_delayed_0`` .. ``celery_delayed_27``."""


def parse_delayed(out: str) -> int:
    """The sum over the delayed-delivery queues' rows of ``list_queues name <item>``."""
    total = 0
    for line in out.splitlines():
        name, _, value = line.partition("\t")
        if name.startswith(DELAYED_QUEUE_PREFIX):
            total += int(value)
    return total


# ------------------------------------------------------------------------- the plan (ha) ----


class PlanTarget:
    """The plan's objects on the local pod runner; see the module docstring."""

    def __init__(
        self,
        cluster: KubeCluster,
        versions: dict[str, str],
        *,
        workers_stopped: bool = False,
        observer: Observer | None = None,
        update: UpdateSpec | None = None,
    ) -> None:
        self.cluster = cluster
        self.update = update
        """The second plan and its steps (the ``update`` scenario)."""
        self.update_report: UpdateReport | None = None
        self.node_report: NodeReport | None = None
        """The node drill's report (emptied as each fault is injected: each drill reports only its own)."""
        self.freeze_report: FreezeReport | None = None
        self.versions = versions
        self.observer = observer
        self.deltas = cluster.deltas
        self.workers_stopped = workers_stopped
        """The worker Deployment is scaled to 0 (``stop_workers``, or booted so)."""
        self.workers = WORKERS
        """The Deployment of the lane the drill loads (:meth:`use_lane`; the default lane's until told)."""
        self.queue = QUEUE
        """That lane's queue."""
        self.scale_report: ScaleReport | None = None

    def use_lane(self, lane: str) -> None:
        owner = f"Deployment/{deployment_name(lane)}"
        if not any(f"Deployment/{d.name}" == owner for d in self.cluster.plan.deployments):
            raise ValueError(f"the plan has no lane {lane!r} (no {owner}): its workerLanes setting names none")
        self.workers, self.queue = owner, queue_name(lane)

    def start_workers(self) -> int:
        # Booted and ready with the plan, unless scaled to 0: then back to the plan's replicas.
        if self.workers_stopped:
            self.cluster.scale(self.workers, self.planned_workers)
            self.cluster.wait_ready(WORKERS_TIMEOUT_S, self.workers)
            self.workers_stopped = False
        return len(self.cluster.pods_of(self.workers))

    def stop_workers(self) -> None:
        self.cluster.scale(self.workers, 0)
        self.workers_stopped = True
        # Warm shutdown: running tasks finish, held (ETA) ones are requeued, then the pods go.
        poll(
            lambda: not self.cluster.pods_of(self.workers),
            WORKERS_TIMEOUT_S,
            f"{self.workers} to have no pod",
            interval=0.5,
        )

    @property
    def planned_workers(self) -> int:
        """The worker Deployment's replicas in the plan."""
        return next(d.replicas for d in self.cluster.plan.deployments if f"Deployment/{d.name}" == self.workers)

    def workers_present(self) -> int:
        return len(self.cluster.pods_of(self.workers))

    def workers_ever(self) -> int:
        return len({e.pod for e in self.cluster.events_of() if named_for(self.workers, e.pod)})

    def publisher(self) -> tuple[Celery, Publisher]:
        # The scheduler's default publisher, to every broker pod by its DNS name, as in the cluster.
        def publish(app: Celery, plan: PublishPlan, progress: ProgressCallback) -> PublishResult:
            return self.in_cluster(lambda: publish_pipelined(app, plan, progress))

        return make_app(from_env(broker_env(self.cluster, by_name=True))), publish

    def in_cluster(self, fn: Callable[[], T]) -> T:
        # On a thread of its own whose resolv.conf is a pod's of the brokers' namespace.
        return call_resolving_through(self.client_resolv_conf(), fn)

    def client_resolv_conf(self) -> Path:
        """A pod's ``/etc/resolv.conf`` in the brokers' namespace: the cluster DNS, its search path."""
        namespace = next(s.namespace for s in self.cluster.plan.statefulsets if f"StatefulSet/{s.name}" == BROKERS)
        resolv = self.cluster.workdir / "client-resolv.conf"
        resolv.write_text(resolv_conf(namespace, self.cluster.dns.address))
        return resolv

    def in_cluster_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run as a client inside the cluster: in a mount namespace of its own whose
        ``/etc/resolv.conf`` is :meth:`client_resolv_conf` (names resolve through the cluster DNS,
        so a broker pod recreated at a new address is found again, as by the plan's own clients)."""
        bind = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            bind,
            str(self.client_resolv_conf()),
            *argv,
        ]

    def _list_queues(self, item: str) -> str | None:
        for pod in self.cluster.pods_of(BROKERS):
            if not pod.ready:
                continue
            with contextlib.suppress(Exception):
                return self.cluster.exec(
                    pod.name, "rabbitmqctl", "-q", "list_queues", "name", item, "--no-table-headers", timeout=30
                )
        return None

    def queue_stat(self, item: str) -> int | None:
        out = self._list_queues(item)
        return None if out is None else parse_queue_stat(out, self.queue)

    def delayed_messages(self) -> int | None:
        out = self._list_queues("messages")
        return None if out is None else parse_delayed(out)

    def inject(self, scenario: Scenario, mark: Mark) -> None:
        self.node_report = None
        self.freeze_report = None
        self.scale_report = None
        if scenario is Scenario.SCALE_IN:
            self.scale_report = scale_in(self.cluster, mark, self.workers)
            return
        if scenario is Scenario.UPDATE:
            if self.update is None:
                raise ValueError("scenario update needs a second plan and its steps (UPDATE=..., --update-plan)")
            self.update_report = pod_scenarios.new_update(self.cluster, self.update)
            pod_scenarios.update(self.cluster, mark, self.update_report)
            return
        if scenario.is_node_fault:
            self.node_report = NodeReport(scenario.value)
            node_scenarios.NODE_FAULTS[scenario](self.cluster, mark, self.node_report)
            return
        outcome = pod_scenarios.FAULTS[scenario](self.cluster, mark)
        if isinstance(outcome, FreezeReport):
            self.freeze_report = outcome

    def update_result(self) -> UpdateReport | None:
        return self.update_report

    def node_result(self) -> NodeReport | None:
        return self.node_report

    def freeze_result(self) -> FreezeReport | None:
        return self.freeze_report

    def scale_result(self) -> ScaleReport | None:
        return self.scale_report

    def reset(self) -> None:
        # Every pod Ready, and no message queued or in flight: a redelivery from the previous
        # scenario could otherwise be counted as a completion of this one.
        self.cluster.wait_ready(RESET_TIMEOUT_S)
        poll(
            lambda: self.queue_stat("messages") == 0 and self.queue_stat("messages_unacknowledged") == 0,
            RESET_TIMEOUT_S,
            f"queue {self.queue!r} to be empty between scenarios",
            interval=1.0,
        )
        if self.observer is not None:
            self.observer.quiet()

    def pod_events(self, since: float) -> list[PodEvent]:
        return [(e.at, e.pod, e.reason, e.message) for e in self.cluster.events_of() if e.at >= since]

    def observe(self, since: float) -> Observed | None:
        return None if self.observer is None else self.observer.observe(since)


def worker_additions(results: Path) -> dict[str, PodAdditions]:
    """The drill's additions to the worker pods: its task module, and its results directory mounted."""
    # Written by the pods' own user (the image's 10001), not by the host's.
    os.chmod(results, 0o777)
    additions = PodAdditions(
        env=drill_tasks.worker_env(Path(CONTAINER_RESULTS)),
        binds=(rootfs.Bind(results, CONTAINER_RESULTS),),
        why="the drill counts executions: its task module and its results directory",
    )
    # Every lane's workers (contract.lanes: the dev plan's default and long lanes).
    return {deployment_name(lane): additions for lane in (DEFAULT_LANE, LONG_LANE)}


def host_peers(plan_dir: Path, workers_namespace: str, scheduler_labels: dict[str, str] | None) -> list[HostPeer]:
    """Who the host's address stands for in the plan's NetworkPolicies: the drill's publisher, and
    the clients it runs there (the DLQ reader), connect as the scheduler's pods would (a broker client
    of the workers' namespace, labelled as the scheduler's Job template labels its pods); the drill's
    Prometheus scrapes as the plan's collector, from the last namespace the policies admit scrapes
    from (gmp-system, or the operator's prometheusNamespace)."""
    metrics = json.loads((plan_dir / "settings.json").read_text())["network"]["metrics_namespaces"]
    return [
        HostPeer(
            workers_namespace,
            scheduler_labels or {wire.CLIENT_LABEL: "true"},
            "the drill's publisher runs on the host (names through the cluster DNS), admitted as the scheduler's pods",
        ),
        HostPeer(metrics[-1], {}, "the drill's Prometheus runs on the host and scrapes as the plan's collector"),
    ]


@contextlib.contextmanager
def boot_plan(
    plan_dir: Path,
    workdir: Path,
    results: Path,
    *,
    workers: bool = True,
    observe: bool = True,
    update: UpdateSpec | None = None,
) -> Iterator[PlanTarget]:
    """Boot the plan on the pod runner; yield once the brokers and the workers are Ready.

    ``workers=False``: the worker Deployment starts scaled to 0, so no worker has ever run on
    this cluster until ``start_workers`` (what a fresh install publishing first looks like).
    ``observe``: a Prometheus scrapes the pods with the alert rules loaded (``drill.observe``),
    its files in ``<workdir>/prometheus``; yielded once every target answers and no alert is on.
    """
    # The generic pod runner boots any directory of objects; a drill judges the project's plan, so
    # half a plan (a write cut short by an older plan tool, a hand-made directory) is refused first.
    check_complete(plan_dir)
    images = ensure_images()
    cluster = KubeCluster(
        plan_dir, workdir, images, secret_rules=plan_secret_rules, additions=worker_additions(results)
    )
    workers_ns = next(d.namespace for d in cluster.plan.deployments if f"Deployment/{d.name}" == WORKERS)
    scheduler = next((dict(j.template.labels) for j in cluster.plan.jobs), None)
    cluster.host_peers.extend(host_peers(plan_dir, workers_ns, scheduler))
    if not workers:
        cluster.scale(WORKERS, 0)
    with cluster, contextlib.ExitStack() as stack:
        cluster.wait_ready(BOOT_TIMEOUT_S)
        broker = cluster.pods_of(BROKERS)[0].name
        versions = {
            "rabbitmq": cluster.exec(broker, "rabbitmqctl", "-q", "version").strip(),
            "worker image": images["worker"].version,
            "celery (publisher)": version("celery"),
        }
        observer = stack.enter_context(observing(cluster, workdir / "prometheus")) if observe else None
        if observer is not None:
            versions["prometheus"] = observer.prometheus.version()
        yield PlanTarget(cluster, versions, workers_stopped=not workers, observer=observer, update=update)


def broker_urls(
    cluster: KubeCluster, role: wire.BrokerRole = wire.BrokerRole.SCHEDULER, *, by_name: bool = False
) -> list[str]:
    """AMQP URLs of the broker pods with the credentials of ``role``'s Secret in the plan (amqps:// on
    AMQPS_PORT when the plan has broker TLS; see :func:`broker_env`).

    By address (what a tool on the host can dial), or ``by_name``: every planned node's DNS name, as
    the plan gives its scheduler and workers (``BROKER_HOSTS``), for a client that resolves through
    the cluster DNS (:meth:`PlanTarget.in_cluster`). The drill's publisher is the scheduler's (so it
    runs with the scheduler user's permissions); what runs in a worker pod (``app.dlq``) uses the worker's.
    """
    name = wire.role_secret_name(BROKER_APP, role)
    secret = next(s for s in cluster.plan.secrets if s.name == name)
    user, password = secret.data["username"].decode(), secret.data["password"].decode()
    scheme, port = ("amqps", wire.AMQPS_PORT) if broker_ca(cluster) is not None else ("amqp", wire.AMQP_PORT)
    if by_name:
        sts = next(s for s in cluster.plan.statefulsets if f"StatefulSet/{s.name}" == BROKERS)
        hosts = [statefulset_pod_fqdn(sts, i) for i in statefulset_ordinals(sts)]
    else:
        hosts = [pod.ip for pod in cluster.pods_of(BROKERS) if pod.ip is not None]
    return [f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/%2F" for host in hosts]


BROKER_APP = BROKERS.split("/", 1)[1]
"""The broker StatefulSet's name: its CA Secret and client Service are named after it."""


def broker_ca(cluster: KubeCluster) -> Secret | None:
    """The Secret with the CA certificate the plan gives its clients (brokerTls), None for plain AMQP."""
    name = f"{BROKER_APP}{wire.BROKER_CA_SECRET_SUFFIX}"
    return next((s for s in cluster.plan.secrets if s.name == name), None)


def broker_env(
    cluster: KubeCluster, role: wire.BrokerRole = wire.BrokerRole.SCHEDULER, *, by_name: bool = False
) -> dict[str, str]:
    """The app's environment for a client as ``role`` (see :func:`broker_urls`): every broker pod by
    address or ``by_name``, and with TLS the plan's CA (written beside the cluster's files). By
    address, also the client Service's name, which every node's certificate carries (an address is
    in none); by name, each node's certificate is checked against its own name, as in the cluster."""
    env = {wire.ENV_BROKER_URLS: ",".join(broker_urls(cluster, role, by_name=by_name))}
    ca = broker_ca(cluster)
    if ca is not None:
        ca_file = cluster.workdir / "broker-ca.crt"
        ca_file.write_bytes(ca.data[wire.TLS_CA_KEY])
        env[wire.ENV_BROKER_TLS_CA_FILE] = str(ca_file)
        if not by_name:
            env[wire.ENV_BROKER_TLS_SERVER_NAME] = f"{BROKER_APP}.{ca.namespace}.svc.cluster.local"
    return env


# ------------------------------------------------------------------- the seed (3.10) ----


class LocalTarget:
    """The seed's 2018 setup on Debian's RabbitMQ 3.10; see the module docstring."""

    def __init__(self, cluster: LocalCluster, runtime: ProfileRuntime, pool: WorkerPool, workers: int) -> None:
        self.cluster = cluster
        self.runtime = runtime
        self.pool = pool
        self.workers = workers
        self.versions = {
            "rabbitmq": cluster.rabbitmqctl(0, "-q", "version").strip(),
            "celery": version("celery"),
            "kombu": version("kombu"),
        }
        self.deltas: list[Delta] = []
        self.queue = QUEUE

    def use_lane(self, lane: str) -> None:
        if lane != DEFAULT_LANE:
            raise ValueError(f"lane {lane!r}: the seed's 2018 setup has one queue (CONFIG=ha has lanes)")

    def start_workers(self) -> int:
        self.pool.start(self.workers)
        return self.workers

    def stop_workers(self) -> None:
        raise NotImplementedError("the eta workload runs on the plan-booted cluster (CONFIG=ha) only")

    def workers_present(self) -> int:
        return len(self.pool.alive())

    def workers_ever(self) -> int:
        raise NotImplementedError("the eta workload runs on the plan-booted cluster (CONFIG=ha) only")

    def delayed_messages(self) -> int | None:
        # The seed publishes no ETA task (and its classic queues have no native delayed delivery).
        return 0

    def publisher(self) -> tuple[Celery, Publisher]:
        return self.runtime.publisher()

    def in_cluster(self, fn: Callable[[], T]) -> T:
        return fn()  # the seed's nodes are dialled by address: nothing to resolve

    def queue_stat(self, item: str) -> int | None:
        for via in range(self.cluster.nodes):
            with contextlib.suppress(Exception):
                return parse_queue_stat(
                    self.cluster.rabbitmqctl(via, "-q", "list_queues", "name", item, "--no-table-headers")
                )
        return None

    def reset(self) -> None:
        raise NotImplementedError("the seed's drills boot a fresh 3.10 cluster per scenario")

    def pod_events(self, since: float) -> list[PodEvent]:
        del since
        return []

    def observe(self, since: float) -> Observed | None:
        del since  # the seed's 2018 setup had no metrics pipeline
        return None

    def update_result(self) -> UpdateReport | None:
        return None  # the seed runs no plan to update

    def node_result(self) -> NodeReport | None:
        return None  # the seed's nodes are processes, not Kubernetes nodes

    def freeze_result(self) -> FreezeReport | None:
        return None  # freeze-broker needs the pod runner

    def scale_result(self) -> ScaleReport | None:
        return None  # scale-in needs the pod runner

    def inject(self, scenario: Scenario, mark: Mark) -> None:
        if scenario not in scenarios.FAULTS:
            raise ValueError(
                f"scenario {scenario} needs the plan-booted cluster (CONFIG=ha), not the seed's 3.10 nodes"
            )
        scenarios.FAULTS[scenario](FaultContext(self.cluster, self.pool, mark))


@contextlib.contextmanager
def boot_local(
    workdir: Path, results: Path, profile: Profile, *, workers: int, concurrency: int, netns: bool
) -> Iterator[LocalTarget]:
    """Boot Debian's 3.10 on three local nodes with the profile's policy; yield before any worker starts."""
    with LocalCluster(workdir / "cluster", nodes=3, netns=netns) as cluster:
        if profile is Profile.SEED:
            name, pattern, definition = SEED_POLICY
            cluster.rabbitmqctl(0, "set_policy", "-p", cluster.vhost, "--priority", "1", name, pattern, definition)
        runtime = ProfileRuntime(profile, tuple(cluster.urls()), results, concurrency)
        pool = WorkerPool(runtime, workdir / "workers")
        try:
            yield LocalTarget(cluster, runtime, pool, workers)
        finally:
            pool.stop()
