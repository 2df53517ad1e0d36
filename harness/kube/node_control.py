"""The node lifecycle in the pod runner: the kubelets' status reports, then the decisions of
:func:`harness.kube.nodes.node_lifecycle` applied to the store's records (one pass per reconcile,
under the store's lock, before the workload controllers).

* A node reports while its machine runs, its link is up and its Node object exists; a pod on a node
  that stops reporting is *lost*: the API keeps the status it last heard (``Pod.lose``).
* A node that reports again: each of its pods the API deleted meanwhile is killed by its kubelet
  (graceful, what is left of its grace), and each pod force-deleted meanwhile (an orphan) is killed
  at once: old pods never keep running beside their replacements once the node is back.
* Taint manager evictions are graceful deletions: carried out by the kubelet if it hears them,
  else the pod stays Terminating; pod GC force-deletions drop the pod's record at once (its
  processes, if any still run cut off, become orphans, reaped by the controllers once they end).
"""

from __future__ import annotations

import time

from harness.kube.nodes import NodeActions, PodOnNode, admitted, describe, node_lifecycle
from harness.kube.store import Pod, Store


def reconcile_nodes(store: Store, now: float | None = None) -> NodeActions:
    """One pass (the caller holds ``store.lock``); returns what it decided."""
    now = time.time() if now is None else now
    for record in store.node_records.values():
        if record.reporting:
            record.heard_at = now
            _kubelet_back(store, record.name)
        else:
            store.lose_pods_on(record.name)
    pods = [
        PodOnNode(p.name, p.node, admitted(p.template.spec.tolerations), p.terminating, p.ready)
        for p in store.pods.values()
        if p.node is not None
    ]
    views = [r.view() for r in store.node_records.values()]
    actions = node_lifecycle(views, pods, now, store.node_timing)
    for view in actions.nodes:
        record = store.node_records[view.name]
        changes = describe(record.view(), view)
        record.condition, record.taints = view.condition, view.taints
        for change in changes:
            record.history.append((now, change))
        store.event(view.name, "NodeStatus", "; ".join(changes))
    for name in actions.not_ready:
        pod = store.pods[name]
        if pod.lost and pod.lost_ready:
            pod.lost_ready = False
            store.event(name, "NodeNotReady", f"marked not Ready: node {pod.node} is not Ready")
    for name, why in actions.evict:
        _evict(store, store.pods[name], why)
    for name, why in actions.force_delete:
        force_delete(store, store.pods[name], why)
    return actions


def _kubelet_back(store: Store, node: str) -> None:
    for pod in store.pods.values():
        if pod.node != node or not pod.lost:
            continue
        pod.lost = False
        worker = pod.worker
        if pod.deletion_requested and worker is not None and not worker.finished and not worker.terminating:
            store.event(pod.name, "Killing", f"deleted while {node} was unreachable; its kubelet stops it now")
            worker.delete()
    for orphan in store.orphans:
        worker = orphan.worker
        if orphan.node == node and worker is not None and not worker.finished and not worker.terminating:
            store.event(orphan.name, "Killing", f"force-deleted while {node} was unreachable; its kubelet kills it")
            worker.delete(0)


def _evict(store: Store, pod: Pod, why: str) -> None:
    pod.deletion_requested = True
    store.event(pod.name, "TaintManagerEviction", f"deleting on {pod.node}: {why}")
    if not pod.lost and pod.worker is not None and not pod.worker.terminating:
        pod.worker.delete()


def force_delete(store: Store, pod: Pod, why: str) -> None:
    """The pod's object goes at once (grace 0). Processes still running become an orphan: killed by
    the kubelet if it hears (at once if it reports, else when its node is back)."""
    del store.pods[pod.name]
    store.event(pod.name, "ForceDeleted", why)
    if pod.worker is None:
        return
    store.orphans.append(pod)
    if not pod.lost and not pod.worker.finished:
        pod.worker.delete(0)
