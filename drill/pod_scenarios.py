"""The failure drills on the plan booted by the pod runner, each undone the way Kubernetes undoes it.

* baseline: no fault, the same load (what a clean run's alerts look like).
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
* kill-node, node-unreachable, delete-node: a whole machine, with Kubernetes' node lifecycle
  (``drill.node_scenarios``).
* drain-node: the seed's ``kubectl drain`` of the leader's node: cordon, evictions through the
  PDBs (a refused one waits and retries), each with its preStop hook and grace period; uncordon.
* partition-node: ``partition-broker`` under its node-level name.
* freeze-broker: SIGSTOP every process of the queue leader's pod for ``FREEZE_S``: its sockets stay
  open and silent (a paused VM, a stalled disk); clients must leave it on their own (AMQP
  heartbeats, confirm timeouts), each worker within ``timing.FROZEN_BROKER_HOLD_MAX_S`` (with one
  put on it first if none was, ``drill.held``), and the pod must stop being Ready; then SIGCONT
  and it rejoins.
* lose-disk: the claim of the highest ordinal, then of rabbitmq-0 (the seed), is emptied while
  its pod is gone; each must come back as a blank member of the one cluster (seeing all of it,
  not a cluster of its own) and the quorum queue must have three live replicas again.
* oom: a worker pod publishes ``drill.failing.hog``, a task that allocates far past the worker's
  memory limit: the pod runner's kubelet OOM-kills the container (``OOMKilled``, exit 137, the
  whole container as on GKE's cgroup v2 nodes) and restarts it with its back-off; the task goes
  back to the queue and the next worker takes it, until the broker dead-letters it past the
  queue's delivery limit (``celery.dlq``). The good tasks of the drill's load all complete.
* update: a second plan applied step by step as the Pulumi engine would (``harness.kube.apply``,
  the steps from plan-diff), the Ready broker pods counted throughout; then every broker pod must
  be Ready and in the cluster (``drill.update``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from contract.lanes import DEFAULT_LANE, LONG_LANE, deployment_name
from contract.wire import DEAD_LETTER_QUEUE
from drill import failing
from drill.held import BrokerWatch, FreezeReport, holds
from drill.scenario import QUEUE, RECOVER_AFTER_S, Scenario
from drill.update import ReadyWatch, UpdateReport, UpdateSpec
from harness.kube.apply import SEQUENTIAL, Applier, Step, load_steps
from harness.kube.cluster import KubeCluster, KubeError
from harness.kube.kubelet import BACKOFF_MAX_S
from harness.kube.limits import OOM_REASON
from harness.kube.workloads import named_for
from harness.runtime.poll import NOT_YET, PollTimeout, poll

BROKERS = "StatefulSet/rabbitmq"
WORKERS = f"Deployment/{deployment_name(DEFAULT_LANE)}"
"""The default lane's workers (contract.lanes): the faults' workers."""
LONG_WORKERS = f"Deployment/{deployment_name(LONG_LANE)}"
"""The long lane's workers (``WORKLOAD=long``)."""
REJOIN_TIMEOUT_S = 240.0

Mark = Callable[[str], float]
"""Records a fault event (its label) and returns its epoch time."""


def broker_exec(cluster: KubeCluster, *command: str, avoid: str = "", only: str = "") -> str:
    """``command``'s output, run in a ready broker pod (``only`` that one, else any but ``avoid``)."""
    for pod in cluster.pods_of(BROKERS):
        if pod.ready and pod.name != avoid and pod.name == (only or pod.name):
            return cluster.exec(pod.name, *command, timeout=60)
    raise KubeError(f"no ready broker pod to run {command[0]} in")


def running_members(cluster: KubeCluster, avoid: str = "", only: str = "") -> set[str]:
    """Pod names of the nodes a ready broker (``only`` that one, else any but ``avoid``) sees
    running in its cluster."""
    out = broker_exec(cluster, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json", avoid=avoid, only=only)
    status = json.loads(out)
    return {str(node).split("@", 1)[1].split(".", 1)[0] for node in status.get("running_nodes", [])}


def queue_leader(cluster: KubeCluster, queue: str = QUEUE) -> str:
    """The broker pod leading the quorum queue ``queue``."""
    out = broker_exec(cluster, "rabbitmqctl", "-q", "list_queues", "name", "leader", "--formatter", "json")
    for row in json.loads(out or "[]"):
        if row.get("name") == queue and row.get("leader"):
            return str(row["leader"]).split("@", 1)[1].split(".", 1)[0]
    raise KubeError(f"queue {queue!r} has no leader yet")


def _wait_member(cluster: KubeCluster, pod: str, what: str) -> None:
    def back() -> bool:
        # Asked of another node: a node always lists itself, even alone on the minority side.
        return cluster.pod(pod).ready and pod in running_members(cluster, avoid=pod)

    poll(back, REJOIN_TIMEOUT_S, what, interval=1.0, not_yet=(KubeError, *NOT_YET))


def _restarted(cluster: KubeCluster, pod: str, before: int) -> bool:
    # The restart count moves only once the kubelet has seen the old container exit: readiness
    # read before that would still be the dead container's.
    return cluster.running(pod).restarts > before and cluster.pod(pod).ready


def baseline(cluster: KubeCluster, mark: Mark) -> None:
    del cluster  # nothing happens to it
    mark("no fault (baseline)")


def kill_broker(cluster: KubeCluster, mark: Mark) -> None:
    victim = queue_leader(cluster)
    before = cluster.running(victim).restarts
    cluster.kill_container(victim)
    mark(f"SIGKILL broker pod {victim}'s container (queue leader); its kubelet restarts it")
    poll(lambda: _restarted(cluster, victim, before), REJOIN_TIMEOUT_S, f"{victim} to restart", not_yet=(KubeError,))
    _wait_member(cluster, victim, f"{victim} to be back in the cluster")
    mark(f"{victim} restarted by its kubelet and rejoined")


FREEZE_S = 60.0
"""As long as a paused VM's live migration or a stalled persistent disk may last; 6 heartbeats."""
PLACE_TIMEOUT_S = 60.0
"""For a worker whose connection was closed to consume again (from the next broker in its list)."""


def freeze_broker(cluster: KubeCluster, mark: Mark) -> FreezeReport:
    """The queue leader frozen for ``FREEZE_S``, a worker on it (see :func:`freeze_node`)."""
    return freeze_node(cluster, mark, queue_leader(cluster), FREEZE_S)


def freeze_node(cluster: KubeCluster, mark: Mark, victim: str, seconds: float) -> FreezeReport:
    """SIGSTOP every process of broker pod ``victim`` for ``seconds``, with at least one worker on it,
    and report how long it held each worker (``drill.held``) and when it stopped being Ready; then
    SIGCONT and wait for it to be back in the cluster."""
    report = FreezeReport(victim, "leader" if queue_leader(cluster) == victim else "follower", seconds)
    with BrokerWatch(cluster, BROKERS, WORKERS) as watch:
        report.placed = place_worker(cluster, victim, watch, mark)
        time.sleep(2 * watch.interval)  # a look with every worker where it is when the node freezes
        cluster.freeze(victim)
        frozen_at = report.frozen_at = mark(
            f"SIGSTOP broker pod {victim} ({report.role} of {QUEUE!r}): sockets open, nothing answers"
        )
        try:
            time.sleep(seconds)
        finally:
            cluster.freeze(victim, frozen=False)
        thawed_at = report.thawed_at = mark(f"SIGCONT {victim} after {seconds:.0f}s")
    report.holds = holds(watch.looks, victim, frozen_at, thawed_at)
    not_ready = [e.at for e in cluster.events_of(victim) if e.reason == "NotReady" and frozen_at <= e.at <= thawed_at]
    report.not_ready_after_s = min(not_ready) - frozen_at if not_ready else None
    for hold in report.holds:
        where = "on the frozen node" if hold.on_frozen_node else "elsewhere"
        gone = f"off a healthy broker for {hold.held_s:.1f}s" if hold.left else "never back on a healthy broker"
        mark(f"worker {hold.worker} ({where} at the freeze): {gone} (limit {report.limit_s:g}s)")
    _wait_member(cluster, victim, f"{victim} to be back in the cluster after the freeze")
    mark(f"{victim} answering again, in the cluster")
    return report


def worker_connections(cluster: KubeCluster, broker: str, worker_ip: str) -> list[str]:
    """The Erlang pids of the connections from ``worker_ip`` on broker pod ``broker``."""
    out = cluster.exec(broker, "rabbitmqctl", "-q", "list_connections", "pid", "peer_host", "--no-table-headers")
    found: list[str] = []
    for line in out.splitlines():
        pid, _, peer = line.strip().partition("\t")
        if peer.strip() == worker_ip:
            found.append(pid.strip())
    return found


def place_worker(cluster: KubeCluster, victim: str, watch: BrokerWatch, mark: Mark) -> list[str]:
    """Make sure a worker consumes from ``victim``: otherwise close one worker's connection where it is,
    and again, until its next broker (``app.failover.BrokerRotation``: the one after the lost one in
    its own list) is ``victim``. Returns what was done; raises if no worker gets there."""
    done: list[str] = []
    tries = len(cluster.pods_of(BROKERS))
    for attempt in range(tries + 1):
        brokers = watch.look().brokers
        if victim in brokers.values():
            return done
        if attempt == tries:
            break
        worker, broker = next(((w, b) for w, b in sorted(brokers.items()) if b is not None), ("", None))
        ip = cluster.pod(worker).ip if worker else None
        pids = [] if broker is None or ip is None else worker_connections(cluster, broker, ip)
        if broker is None or not pids:
            break
        for pid in pids:
            cluster.exec(
                broker, "rabbitmqctl", "-q", "close_connection", pid, "drill: a worker onto the node to freeze"
            )
        done.append(f"closed {worker}'s connection on {broker}")
        mark(f"{done[-1]}: it consumes from its next broker, to put a worker on {victim}")

        def moved(w: str = worker, b: str = broker) -> bool:
            return watch.look().brokers.get(w) not in (None, b)

        poll(moved, PLACE_TIMEOUT_S, f"{worker} to consume again after its connection was closed", interval=0.5)
    raise KubeError(f"no worker could be put on {victim} before freezing it: {'; '.join(done) or 'none consumes'}")


def kill_worker(cluster: KubeCluster, mark: Mark) -> None:
    ready = [p.name for p in cluster.pods_of(WORKERS) if p.ready]
    if not ready:
        raise KubeError("no ready worker pod to kill")
    victim = ready[0]
    before = cluster.running(victim).restarts
    cluster.kill_container(victim)
    mark(f"SIGKILL worker pod {victim}'s container and its pool; its kubelet restarts it")
    poll(lambda: _restarted(cluster, victim, before), REJOIN_TIMEOUT_S, f"{victim} to restart", not_yet=(KubeError,))
    mark(f"worker {victim} restarted and ready")


@dataclass(frozen=True)
class _Restarts:
    name: str
    restarts: int


def partition_broker(cluster: KubeCluster, mark: Mark) -> None:
    victim = queue_leader(cluster)
    node = cluster.node_of(victim)
    on_node = [_Restarts(p.name, cluster.running(p.name).restarts) for p in cluster.pods_on(node)]
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
    # The brokers only: a worker pod on the cut node is evicted (and replaced) if the cut outlasts the
    # node-monitor grace and its toleration (harness.kube.nodes), as on GKE.
    brokers = {p.name for p in cluster.pods_of(BROKERS)}
    restarted = [p.name for p in on_node if p.name in brokers and cluster.running(p.name).restarts != p.restarts]
    if restarted:
        # 4.3 has no pause_minority: a healed node must rejoin as it is, with no container restart.
        raise KubeError(f"{', '.join(restarted)} restarted during the partition; expected a rejoin without one")
    mark(f"{victim} back in the cluster without a restart")


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


DRAIN_TIMEOUT_S = 900.0


def drain_node(cluster: KubeCluster, mark: Mark) -> None:
    leader = queue_leader(cluster)
    node = cluster.node_of(leader)
    on_node = [p.name for p in cluster.pods_on(node)]
    mark(f"kubectl drain {node} (runs {', '.join(on_node)})")
    report = cluster.drain(node, DRAIN_TIMEOUT_S)
    waited = "; ".join(f"{pod}: {why}" for pod, why in report.blocked.items()) or "no PDB made it wait"
    mark(f"{node} drained in {report.seconds:.1f}s, evicted {', '.join(report.evicted)}; {waited}")
    pending = [p.name for p in cluster.pods_of(BROKERS) if p.worker is None]
    if pending:
        mark(f"{', '.join(pending)} Pending: {cluster.pod(pending[0]).pending_reason}")
    time.sleep(RECOVER_AFTER_S)
    cluster.cordon(node, cordoned=False)
    mark(f"kubectl uncordon {node}")
    cluster.wait_ready(REJOIN_TIMEOUT_S)
    _wait_member(cluster, leader, f"{leader} to be back in the cluster")
    mark("every broker and worker pod Ready again")


def _sees_everyone(cluster: KubeCluster, pod: str, size: int) -> bool:
    return len(running_members(cluster, only=pod)) == size


def lose_disk(cluster: KubeCluster, mark: Mark) -> None:
    # A non-zero ordinal, then the seed: with k8s peer discovery a blank rabbitmq-0 would found a
    # cluster of its own unless the pod's setup step (broker.render.setup_script) makes it join.
    brokers = cluster.pods_of(BROKERS)
    for victim in [brokers[-1].name, brokers[0].name]:
        cluster.lose_disk(victim)
        mark(f"{victim} lost its disk; the StatefulSet recreates it on an empty volume")
        _wait_member(cluster, victim, f"{victim} to join the cluster as a blank node")
        poll(
            partial(_sees_everyone, cluster, victim, len(brokers)),
            REJOIN_TIMEOUT_S,
            f"{victim} to see the whole cluster (not a cluster of its own)",
            interval=1.0,
            not_yet=(KubeError, *NOT_YET),
        )
        poll(
            lambda: quorum_members(cluster) == len(brokers),
            REJOIN_TIMEOUT_S,
            f"every replica of {QUEUE!r} back ({victim}'s grown back in)",
            interval=2.0,
            not_yet=(KubeError, *NOT_YET),
        )
        mark(f"{victim} rejoined blank; quorum queue {QUEUE!r} has {len(brokers)} live replicas again")


def quorum_members(cluster: KubeCluster, queue: str = QUEUE) -> int:
    """Replicas of the quorum queue ``queue`` that run Raft as leader or follower (a member whose
    node lost its data shows as ``noproc`` until it is grown back)."""
    out = broker_exec(cluster, "rabbitmq-queues", "-q", "quorum_status", queue, "--formatter", "json")
    return sum(1 for row in json.loads(out or "[]") if row.get("Raft State") in ("leader", "follower"))


def ready_brokers(cluster: KubeCluster) -> int:
    return sum(1 for p in cluster.pods_of(BROKERS) if p.ready)


def new_update(cluster: KubeCluster, spec: UpdateSpec) -> UpdateReport:
    """An empty report for applying ``spec`` to ``cluster`` as it is now."""
    return UpdateReport(spec, brokers_before=len(cluster.pods_of(BROKERS)))


def update(cluster: KubeCluster, mark: Mark, report: UpdateReport) -> None:
    """Apply the report's plan by its steps under load, filling ``report``: what each step did and how
    few broker pods were Ready at the worst moment. Raises (the report filled) if a step fails."""
    spec = report.spec
    report.steps = load_steps(spec.steps)
    changing = [s for s in report.steps if s.step != "same"]
    mark(f"applying {spec.plan} ({' '.join(spec.settings) or 'no setting named'}): {len(changing)} steps change")
    watch = ReadyWatch(partial(ready_brokers, cluster))

    def on_step(step: Step) -> None:
        if step.step != "same":
            mark(step.label)

    try:
        with watch:
            applier = Applier.towards(cluster, spec.plan, report.steps)
            for step in report.steps:
                on_step(step)
                report.applied.append(applier.apply(step))
            for pod in cluster.pods_of(BROKERS):
                _wait_member(cluster, pod.name, f"{pod.name} to be Ready and in the cluster after the update")
        brokers = report.brokers_after = len(cluster.pods_of(BROKERS))
        if brokers != report.brokers_before:
            # More nodes: the broker's membership reconciliation grows the quorum queues onto them.
            with contextlib.suppress(PollTimeout):
                poll(
                    lambda: quorum_members(cluster) >= brokers,
                    REJOIN_TIMEOUT_S,
                    f"{QUEUE!r} to have a replica on each of the {brokers} brokers",
                    interval=2.0,
                    not_yet=(KubeError, *NOT_YET),
                )
        report.quorum_members_after = quorum_members(cluster)
        report.stale = applier.stale()
        for name, uses in report.stale.items():
            mark(f"{name} still runs with old data: {'; '.join(uses)}")
        mark(f"{QUEUE!r} has {report.quorum_members_after} live replicas on {report.brokers_after} brokers")
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        report.min_ready_brokers, report.min_ready_at = watch.lowest, watch.lowest_at
        report.differences = [SEQUENTIAL, *(d for a in report.applied for d in a.differences)]
        mark(f"update applied: at least {watch.lowest} of {report.brokers_before} broker pods Ready throughout")


OOM_DEAD_LETTER_TIMEOUT_S = 900.0
"""How long the poison task may take to reach the dead-letter queue: each attempt costs a worker
container, whose restarts back off (0, 10, 20, 40 s... per pod)."""
PUBLISH_HOG = (
    "from app.config import from_env; from app.factory import make_app; import os; "
    f"print(make_app(from_env(os.environ)).send_task({failing.HOG!r}, args=(0,)).id)"
)
"""Run in a worker container: its own broker settings, as an in-cluster client publishes."""


def dead_lettered(cluster: KubeCluster) -> int:
    """Messages in the dead-letter queue (its ``messages`` from ``rabbitmqctl list_queues``)."""
    out = broker_exec(cluster, "rabbitmqctl", "-q", "list_queues", "name", "messages", "--no-table-headers")
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == DEAD_LETTER_QUEUE:
            return int(count)
    raise KubeError(f"no {DEAD_LETTER_QUEUE} queue in {out!r}")


def oom_kills(cluster: KubeCluster, since: float) -> list[str]:
    """The worker pods' OOM kills since ``since`` (one pod name per kill)."""
    events = cluster.events_of()
    return [e.pod for e in events if e.at >= since and named_for(WORKERS, e.pod) and e.reason == OOM_REASON]


def oom(
    cluster: KubeCluster, mark: Mark, timeout: float = OOM_DEAD_LETTER_TIMEOUT_S, *, wait_ready: bool = True
) -> None:
    ready = [p.name for p in cluster.pods_of(WORKERS) if p.ready]
    if not ready:
        raise KubeError("no ready worker pod to publish from")
    dead_before = dead_lettered(cluster)
    since = time.time()
    task_id = cluster.exec(ready[0], "python", "-c", PUBLISH_HOG, timeout=60).strip()
    mark(f"{ready[0]} published {failing.HOG} {task_id}: it allocates past the worker's memory limit")
    poll(lambda: oom_kills(cluster, since), 120, "a worker container OOM-killed", not_yet=(KubeError,))
    mark(f"worker {oom_kills(cluster, since)[0]}'s container OOM-killed (exit 137); its kubelet restarts it")
    poll(
        lambda: dead_lettered(cluster) > dead_before,
        timeout,
        f"{failing.HOG} in {DEAD_LETTER_QUEUE} after the delivery limit",
        interval=2.0,
        not_yet=(KubeError, *NOT_YET),
    )
    mark(f"{failing.HOG} dead-lettered after {len(oom_kills(cluster, since))} OOM kill(s)")
    if not wait_ready:
        return
    # The last pods killed sit in their back-off before they run again: 21 kills over 3 pods can
    # take one to its 7th restart, the kubelet's 300 s maximum (seen: 240 s were not enough).
    poll(
        lambda: all(p.ready for p in cluster.pods_of(WORKERS)),
        BACKOFF_MAX_S + REJOIN_TIMEOUT_S,
        "every worker pod Ready again",
    )
    mark("every worker pod Ready again")


FAULTS: dict[Scenario, Callable[[KubeCluster, Mark], object]] = {
    # What a fault returns is its report (freeze-broker's FreezeReport), kept by drill.targets.
    Scenario.BASELINE: baseline,
    Scenario.KILL_BROKER: kill_broker,
    Scenario.KILL_WORKER: kill_worker,
    Scenario.PARTITION_BROKER: partition_broker,
    Scenario.RESTART_CLUSTER: restart_cluster,
    Scenario.ROLLING_RESTART: rolling_restart,
    Scenario.DRAIN_NODE: drain_node,
    Scenario.PARTITION_NODE: partition_broker,
    Scenario.LOSE_DISK: lose_disk,
    Scenario.FREEZE_BROKER: freeze_broker,
    Scenario.OOM: oom,
}
