"""The failure drills on the seed's local 3.10 cluster: each injects one kind of fault into a
running cluster and undoes it the way Kubernetes would (a killed pod is restarted, a cut link
comes back). The same scenarios on the plan booted by the pod runner: ``drill.pod_scenarios``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from drill.scenario import QUEUE, RECOVER_AFTER_S, Scenario
from harness.seed.cluster import ClusterError, LocalCluster
from harness.seed.workers import WorkerPool


@dataclass
class FaultContext:
    cluster: LocalCluster
    workers: WorkerPool
    mark: Callable[[str], float]
    """Records a fault event (its label) and returns its epoch time."""


def queue_home(cluster: LocalCluster, queue: str = QUEUE) -> int:
    """The node leading a quorum queue, or holding a classic queue's master (the seed's)."""
    for via in range(cluster.nodes):
        if not cluster.is_alive(via):
            continue
        try:
            return cluster.queue_leader(queue)
        except ClusterError:
            out = cluster.rabbitmqctl(via, "-q", "list_queues", "name", "pid", "--no-table-headers")
            for line in out.splitlines():
                name, _, pid = line.partition("\t")
                if name == queue and (m := re.fullmatch(r"<(.+)\.\d+\.\d+\.\d+>", pid.strip())):
                    return cluster.index_of(m.group(1))
    raise ClusterError(f"no node holds queue {queue!r}")


def baseline(ctx: FaultContext) -> None:
    ctx.mark("no fault (baseline)")


def kill_broker(ctx: FaultContext) -> None:
    victim = queue_home(ctx.cluster)
    ctx.cluster.kill(victim)
    ctx.mark(f"SIGKILL broker node {victim} (queue leader)")
    time.sleep(RECOVER_AFTER_S)
    ctx.cluster.start_node(victim, timeout=120)
    ctx.mark(f"node {victim} restarted and rejoined")


def kill_worker(ctx: FaultContext) -> None:
    [victim, *_] = ctx.workers.alive()
    ctx.workers.kill(victim)
    ctx.mark(f"SIGKILL worker {victim} and its pool")
    time.sleep(RECOVER_AFTER_S)
    replacement = ctx.workers.start_one()
    ctx.mark(f"replacement worker {replacement} started")


def partition_broker(ctx: FaultContext) -> None:
    victim = queue_home(ctx.cluster)
    ctx.cluster.partition(victim)
    ctx.mark(f"cut node {victim} (queue leader) off the network")
    majority = next(i for i in range(ctx.cluster.nodes) if i != victim)
    ctx.cluster.wait_until(
        lambda: victim not in ctx.cluster.running_nodes(via=majority),
        timeout=120,
        what=f"majority to drop node {victim}",
    )
    ctx.mark(f"majority sees node {victim} gone")
    time.sleep(RECOVER_AFTER_S)
    ctx.cluster.heal(victim)
    ctx.mark(f"link of node {victim} restored")
    everyone = set(range(ctx.cluster.nodes))
    try:
        ctx.cluster.wait_until(lambda: ctx.cluster.is_running(victim), timeout=90, what=f"node {victim} to resume")
    except ClusterError:
        # Seen on 3.10: a pause_minority node sometimes stays paused after the heal. Its pod
        # would be restarted; do the same, and say so in the report.
        ctx.mark(f"node {victim} still paused 90 s after the heal: restarting it")
        ctx.cluster.stop_node(victim, timeout=60)
        ctx.cluster.start_node(victim, timeout=120)
    ctx.cluster.wait_until(
        lambda: ctx.cluster.running_nodes(via=majority) == everyone,
        timeout=180,
        what="the cluster to see all nodes again",
    )
    ctx.mark(f"node {victim} resumed and rejoined")


def restart_cluster(ctx: FaultContext) -> None:
    # Mnesia (3.10): the last node to stop must be the first to start, or it waits for peers.
    order = list(range(ctx.cluster.nodes))
    ctx.mark("stopping every broker node")
    for i in reversed(order):
        ctx.cluster.stop_node(i, timeout=60)
    ctx.mark("all broker nodes down")
    time.sleep(2)
    for i in order:
        ctx.cluster.start_node(i, timeout=180)
    ctx.mark("all broker nodes back")


def rolling_restart(ctx: FaultContext) -> None:
    for i in reversed(range(ctx.cluster.nodes)):
        ctx.mark(f"stopping node {i}")
        ctx.cluster.stop_node(i, timeout=60)
        ctx.cluster.start_node(i, timeout=120)
        ctx.mark(f"node {i} back")


FAULTS: dict[Scenario, Callable[[FaultContext], None]] = {
    Scenario.BASELINE: baseline,
    Scenario.KILL_BROKER: kill_broker,
    Scenario.KILL_WORKER: kill_worker,
    Scenario.PARTITION_BROKER: partition_broker,
    Scenario.RESTART_CLUSTER: restart_cluster,
    Scenario.ROLLING_RESTART: rolling_restart,
}
