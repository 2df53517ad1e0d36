"""What an operator does to a running cluster with ``kubectl``: delete a pod (or force-delete it),
scale, exec, cordon, evict and drain, delete a node or taint it out-of-service; each writes the
store's records (or runs in a pod) and leaves the rest to the controllers, as the API server does.

Kubernetes' own: ``kubectl/pkg/cmd`` (delete, scale, exec, cordon), ``kubectl/pkg/drain``
(cordon, then evict every pod through the eviction API, retrying what a PDB refuses) and the
eviction subresource's PDB check (``pkg/registry/core/pod/storage/eviction.go``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from harness.kube.node_control import force_delete
from harness.kube.nodes import NO_EXECUTE, OUT_OF_SERVICE, Taint
from harness.kube.store import KubeError, Store
from harness.kube.workloads import eviction_allowed


@dataclass
class DrainReport:
    """What a drain did: which pods it evicted, which a PDB held back (and why), how long it took."""

    node: str
    evicted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    """Pod -> the PDB's refusal the first time it was refused (the drain waited and retried)."""
    seconds: float = 0.0


def delete_pod(store: Store, name: str, grace: float | None = None, wait: float | None = None) -> None:
    """``kubectl delete pod``: preStop, SIGTERM, SIGKILL after the grace; its controller recreates it."""
    worker = store.running(name)
    store.event(name, "Deleting", f"grace {'spec' if grace is None else f'{grace:.0f}s'}")
    worker.delete(grace)
    if wait is not None and not worker.wait(wait):
        raise KubeError(f"pod {name!r} still terminating after {wait:.0f}s")


def scale(store: Store, owner: str, replicas: int) -> None:
    """``kubectl scale deployment/<name> --replicas=N``: its controller creates the missing pods,
    or deletes the surplus ones (unscheduled, then not Ready, then by name), each with its preStop
    hook and grace period. Allowed before the cluster starts (the pods then start at that count)."""
    kind, _, name = owner.partition("/")
    if kind != "Deployment" or not any(d.name == name for d in store.plan.deployments):
        raise KubeError(f"cannot scale {owner!r}: the pod runner scales the plan's Deployments only")
    if replicas < 0:
        raise KubeError(f"cannot scale {owner} to {replicas} replicas")
    with store.lock:
        store.scaled[owner] = replicas
    store.events_log.parent.mkdir(parents=True, exist_ok=True)  # the events log's, before start() too
    store.event(owner, "Scaled", f"replicas {replicas}")


def exec_in(store: Store, name: str, *command: str, timeout: float = 60) -> str:
    """``kubectl exec``; stdout, or KubeError with the output on a non-zero exit."""
    done = store.running(name).exec(command, timeout)
    if done.returncode != 0:
        raise KubeError(f"`{' '.join(command)}` in {name} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done.stdout


def cordon(store: Store, node: str, cordoned: bool = True) -> None:
    """``kubectl cordon`` (or uncordon): no new pod is placed on ``node``; running pods stay."""
    with store.lock:
        i = store.node_index(node)
        store.nodes[i] = replace(store.nodes[i], cordoned=cordoned)
    store.event(node, "Cordon" if cordoned else "Uncordon", "unschedulable" if cordoned else "schedulable")


def eviction(store: Store, name: str) -> tuple[bool, str]:
    """Would the eviction API let pod ``name`` go now? Checked against every PDB that covers it."""
    with store.lock:
        pod = store.pods.get(name)
        if pod is None:
            return False, f"pod {name} not found"
        states = [store.pod_state(p) for p in store.pods.values()]
        for pdb in store.plan.pdbs:
            if not pdb.selector.matches(pod.template.labels):
                continue
            allowed, why = eviction_allowed(pdb, states, name, store.replicas(pod.owner))
            if not allowed:
                return False, why
    return True, "no PDB blocks it"


def drain(store: Store, node: str, timeout: float) -> DrainReport:
    """``kubectl drain``: cordon, then evict every pod on ``node`` through the PDBs (an eviction a
    PDB refuses is retried every second), each deleted with its preStop hook and grace period."""
    started = time.monotonic()
    cordon(store, node)
    report = DrainReport(node)
    while time.monotonic() - started < timeout:
        left = [p for p in store.pods_on(node) if p.worker is not None]
        if not left:
            break
        for pod in left:
            if pod.terminating:
                continue
            allowed, why = eviction(store, pod.name)
            if allowed and pod.worker is not None:
                store.event(pod.name, "Evicted", f"drain of {node}: {why}")
                report.evicted.append(pod.name)
                pod.worker.delete()
            elif pod.name not in report.blocked:
                store.event(pod.name, "EvictionBlocked", why)
                report.blocked[pod.name] = why
        time.sleep(1.0)
    else:
        raise KubeError(f"drain of {node} not done after {timeout:.0f}s: {[p.name for p in store.pods_on(node)]}")
    report.seconds = time.monotonic() - started
    return report


def force_delete_pod(store: Store, name: str) -> None:
    """``kubectl delete pod --force --grace-period=0``: the object goes at once; the StatefulSet may then
    recreate it elsewhere. Its processes, if its node is cut off and they still run, are killed by the
    kubelet only when the node is back (until then its claims stay attached there)."""
    with store.lock:
        pod = store.pods.get(name)
        if pod is None:
            raise KubeError(f"no pod {name!r}")
        force_delete(store, pod, "kubectl delete pod --force --grace-period=0")


def delete_node(store: Store, node: str) -> list[str]:
    """``kubectl delete node`` (what GKE auto-repair does before recreating the VM): the Node object
    goes; the pod GC force-deletes every pod bound to it on its next pass (their controllers then
    recreate them elsewhere). Returns the pods bound to it."""
    with store.lock:
        record = store.node_record(node)
        if not record.registered:
            raise KubeError(f"node {node!r} is already deleted")
        record.registered = False
        bound = [p.name for p in store.pods_on(node)]
    store.event(node, "NodeDeleted", f"Node object deleted; bound pods: {', '.join(bound) or 'none'}")
    return bound


def taint_out_of_service(store: Store, node: str) -> None:
    """``kubectl taint node <node> node.kubernetes.io/out-of-service=nodeshutdown:NoExecute``: every pod
    on it is evicted (none tolerates it), and the pod GC force-deletes the Terminating ones while the
    node is not Ready; their disks detach at once (no 6-minute wait)."""
    with store.lock:
        record = store.node_record(node)
        if not record.has_taint(OUT_OF_SERVICE):
            record.taints = (*record.taints, Taint(OUT_OF_SERVICE, NO_EXECUTE, time.time()))
            record.history.append((time.time(), f"taint {OUT_OF_SERVICE}:{NO_EXECUTE} added"))
    store.event(node, "Taint", f"{OUT_OF_SERVICE}=nodeshutdown:{NO_EXECUTE}")
