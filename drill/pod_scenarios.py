"""The failure drills on the plan booted by the pod runner, each undone the way Kubernetes undoes it.

* kill-broker: SIGKILL the container of the broker pod that leads the task queue; its kubelet
  restarts it (restartPolicy Always) and the node rejoins.
* kill-worker: SIGKILL a worker pod's container (the worker and its pool at once); its kubelet
  restarts it.
* partition-broker: cut the link of the Kubernetes node that runs the queue leader's pod (its
  co-located worker pods go with it); heal once the majority dropped it and ``RECOVER_AFTER_S``
  passed; the node rejoins by itself (4.3: no pause_minority).
* restart-cluster: delete every broker pod at once (``kubectl delete pod -l ...``), each through
  its preStop hook and grace period; the StatefulSet recreates them on their claims.
* rolling-restart: delete the broker pods one by one, highest ordinal first, each waiting for
  its replacement to be Ready and back in the cluster (a StatefulSet rollout).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

from drill.scenarios import QUEUE, RECOVER_AFTER_S, Scenario
from harness.kube.cluster import KubeCluster, KubeError
from harness.poll import NOT_YET, poll

BROKERS = "StatefulSet/rabbitmq"
WORKERS = "Deployment/celery-worker"
REJOIN_TIMEOUT_S = 240.0

Mark = Callable[[str], float]


def _broker_exec(cluster: KubeCluster, *command: str, avoid: str = "") -> str:
    for pod in cluster.pods_of(BROKERS):
        if pod.ready and pod.name != avoid:
            return cluster.exec(pod.name, *command, timeout=60)
    raise KubeError(f"no ready broker pod to run {command[0]} in")


def running_members(cluster: KubeCluster, avoid: str = "") -> set[str]:
    """Pod names of the nodes a ready broker (other than ``avoid``) sees running in its cluster."""
    status = json.loads(
        _broker_exec(cluster, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json", avoid=avoid)
    )
    return {str(node).split("@", 1)[1].split(".", 1)[0] for node in status.get("running_nodes", [])}


def queue_leader(cluster: KubeCluster, queue: str = QUEUE) -> str:
    """The broker pod leading the quorum queue ``queue``."""
    out = _broker_exec(cluster, "rabbitmqctl", "-q", "list_queues", "name", "leader", "--formatter", "json")
    for row in json.loads(out or "[]"):
        if row.get("name") == queue and row.get("leader"):
            return str(row["leader"]).split("@", 1)[1].split(".", 1)[0]
    raise KubeError(f"queue {queue!r} has no leader yet")


def _wait_member(cluster: KubeCluster, pod: str, what: str) -> None:
    def back() -> bool:
        return cluster.pod(pod).ready and pod in running_members(cluster)

    poll(back, REJOIN_TIMEOUT_S, what, interval=1.0, not_yet=(KubeError, *NOT_YET))


def _restarted(cluster: KubeCluster, pod: str, before: int) -> bool:
    # The restart count moves only once the kubelet has seen the old container exit: readiness
    # read before that would still be the dead container's.
    return cluster.running(pod).restarts > before and cluster.pod(pod).ready


def kill_broker(cluster: KubeCluster, mark: Mark) -> None:
    victim = queue_leader(cluster)
    before = cluster.running(victim).restarts
    cluster.kill_container(victim)
    mark(f"SIGKILL broker pod {victim}'s container (queue leader); its kubelet restarts it")
    poll(lambda: _restarted(cluster, victim, before), REJOIN_TIMEOUT_S, f"{victim} to restart", not_yet=(KubeError,))
    _wait_member(cluster, victim, f"{victim} to be back in the cluster")
    mark(f"{victim} restarted by its kubelet and rejoined")


def kill_worker(cluster: KubeCluster, mark: Mark) -> None:
    victim = next(p.name for p in cluster.pods_of(WORKERS) if p.ready)
    before = cluster.running(victim).restarts
    cluster.kill_container(victim)
    mark(f"SIGKILL worker pod {victim}'s container and its pool; its kubelet restarts it")
    poll(lambda: _restarted(cluster, victim, before), REJOIN_TIMEOUT_S, f"{victim} to restart", not_yet=(KubeError,))
    mark(f"worker {victim} restarted and ready")


def partition_broker(cluster: KubeCluster, mark: Mark) -> None:
    victim = queue_leader(cluster)
    node = cluster.node_of(victim)
    cluster.set_node_link(node, up=False)
    mark(f"cut {node}'s link (runs {victim}, the queue leader, and its co-located workers)")
    try:
        poll(
            lambda: victim not in running_members(cluster, avoid=victim),
            REJOIN_TIMEOUT_S,
            f"the majority to drop {victim}",
            interval=1.0,
            not_yet=(KubeError, *NOT_YET),
        )
        mark(f"majority sees {victim} gone")
        time.sleep(RECOVER_AFTER_S)
    finally:
        cluster.set_node_link(node, up=True)
    mark(f"{node}'s link restored")
    _wait_member(cluster, victim, f"{victim} to rejoin after the heal")
    mark(f"{victim} back in the cluster")


def _recreated(cluster: KubeCluster, name: str) -> bool:
    pod = cluster.pod(name)
    return pod.worker is not None and not pod.terminating


def restart_cluster(cluster: KubeCluster, mark: Mark) -> None:
    pods = [p.name for p in cluster.pods_of(BROKERS)]
    mark(f"deleting every broker pod: {', '.join(pods)} (preStop, then SIGTERM)")
    for name in pods:
        cluster.delete_pod(name)
    for name in pods:
        poll(partial(_recreated, cluster, name), REJOIN_TIMEOUT_S, f"{name} to be recreated", not_yet=(KubeError,))
    mark("all broker pods recreated by the StatefulSet")
    for name in pods:
        _wait_member(cluster, name, f"{name} to be Ready and in the cluster")
    mark("all broker pods Ready and clustered")


def rolling_restart(cluster: KubeCluster, mark: Mark) -> None:
    for pod in reversed(cluster.pods_of(BROKERS)):
        mark(f"deleting {pod.name} (preStop: await_online_quorum_plus_one, drain)")
        cluster.delete_pod(pod.name, wait=float(pod.template.spec.termination_grace_period_seconds) + 30)
        _wait_member(cluster, pod.name, f"{pod.name} to be Ready and back in the cluster")
        mark(f"{pod.name} back")


FAULTS: dict[Scenario, Callable[[KubeCluster, Mark], None]] = {
    Scenario.KILL_BROKER: kill_broker,
    Scenario.KILL_WORKER: kill_worker,
    Scenario.PARTITION_BROKER: partition_broker,
    Scenario.RESTART_CLUSTER: restart_cluster,
    Scenario.ROLLING_RESTART: rolling_restart,
}
