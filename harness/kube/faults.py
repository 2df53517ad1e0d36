"""What the world does to a cluster: a container or a machine dies, a machine loses power or its
disk, a link is cut, a process stops answering. The drills inject these; the controllers and the
kubelet then react as they would on GKE.

Kubernetes has no module for this: it is what the node lifecycle controller
(``pkg/controller/nodelifecycle``) and the kubelet observe, and what chaos tools inject
(Chaos Mesh's PodChaos, NetworkChaos and IOChaos; a GCE instance stopped or its disk deleted).
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace

from harness.kube.nodes import Condition
from harness.kube.store import KubeError, Store
from harness.runtime import netns
from harness.runtime.poll import poll


def kill_container(store: Store, name: str) -> None:
    """SIGKILL a pod's container: the kubelet restarts it (restartPolicy Always)."""
    store.running(name).kill_container()


def kill_node(store: Store, node: str) -> list[str]:
    """The machine dies (a VM stopped, a host failure): its link goes and every process on it dies at
    the same instant (no preStop, no grace), its kubelet with them. The API server still holds the Node
    and its pods as they were: what happens next is the node lifecycle's (``harness.kube.nodes``):
    NotReady after the grace period, evictions by toleration, a StatefulSet pod held until the Node is
    deleted (:func:`harness.kube.kubectl.delete_node`) or tainted out-of-service. Returns the pods that died."""
    with store.lock:
        record = store.node_record(node)
        record.vm_up = False
        store.lose_pods_on(node)
        victims = [p for p in store.pods_on(node) if p.worker is not None]
    set_node_link(store, node, up=False)
    for pod in victims:
        assert pod.worker is not None
        pod.worker.kill_hard()
    store.event(node, "NodeDown", f"the machine stopped with {', '.join(p.name for p in victims) or 'no pod'}")
    return [p.name for p in victims]


def restore_node(store: Store, node: str) -> None:
    """The machine boots again under the same Node object (its kubelet reports again): pods the API
    deleted meanwhile are cleaned up, the others are replaced (a kubelet would restart their containers
    in place; here their controllers recreate them: a reported difference)."""
    with store.lock:
        store.node_record(node).vm_up = True
    set_node_link(store, node, up=True)
    store.event(node, "NodeUp", "the machine runs again; its kubelet reports")


def register_node(store: Store, node: str) -> None:
    """A new machine of that name registers (GKE auto-repair's recreated VM): an empty, Ready node."""
    with store.lock:
        record = store.node_record(node)
        if record.registered:
            raise KubeError(f"node {node!r} is registered: delete it first (kubectl delete node)")
        if any(p.node == node for p in store.pods.values()):
            raise KubeError(f"node {node!r} still has pods bound to it")
        record.registered, record.vm_up, record.kubelet_ready = True, True, True
        record.heard_at, record.taints = time.time(), ()
        record.condition = Condition.TRUE
        i = store.node_index(node)
        store.nodes[i] = replace(store.nodes[i], cordoned=False)
    set_node_link(store, node, up=True)
    store.event(node, "RegisteredNode", "a new machine registered under this name: empty and Ready")


def lose_disk(store: Store, name: str, timeout: float = 120) -> None:
    """The pod's disk is gone: kill it, empty its claims while no pod uses them, let the
    StatefulSet recreate it on the blank volume (a deleted PVC, a lost persistent disk)."""
    pod = store.pod(name)
    sts = store.statefulset_of(pod)
    if sts is None or pod.ordinal is None:
        raise KubeError(f"pod {name!r} has no claims: it is not a StatefulSet pod")
    try:
        # Down (and kept down) first: a claim is emptied only while no pod uses it.
        power_off(store, name, timeout)
        for claim in sts.claims:
            store.volumes.wipe_claim(sts.name, claim.name, pod.ordinal)
        store.event(name, "DiskLost", f"claims {[c.name for c in sts.claims]} emptied")
    finally:
        power_on(store, name)


def freeze(store: Store, name: str, frozen: bool = True) -> None:
    """Stop (SIGSTOP) or resume (SIGCONT) every process of a pod's container: it keeps its
    sockets open and answers nothing, as a paused VM or a stalled disk does."""
    store.running(name).signal_container(signal.SIGSTOP if frozen else signal.SIGCONT)


def power_off(store: Store, name: str, timeout: float = 60) -> None:
    """Kill a StatefulSet pod outright (no hook, no grace) and keep it down until :func:`power_on`,
    its disks kept: a machine that lost power."""
    if store.statefulset_of(store.pod(name)) is None:
        raise KubeError(f"pod {name!r} is not a StatefulSet pod: nothing would keep it down")
    with store.lock:
        store.held.add(name)
    store.running(name).kill_hard()
    poll(lambda: name not in store.pods, timeout, f"{name} to be gone", interval=0.2)
    store.event(name, "PowerOff", "down until powered on")


def power_on(store: Store, name: str) -> None:
    """Let the StatefulSet recreate a pod taken down by :func:`power_off`, on its own disks."""
    with store.lock:
        store.held.discard(name)
    store.event(name, "PowerOn", "recreated by its StatefulSet")


def set_node_link(store: Store, node: str, up: bool) -> None:
    """Cut (or restore) a node's network link: its pods reach each other, nothing else reaches them."""
    if store.layout is None:
        raise KubeError("the cluster is not started")
    netns.set_node_link(store.layout, store.node_index(node), up)
    with store.lock:
        store.node_record(node).link_up = up
    store.event(node, "NodeLink", "link up" if up else "link cut")
