"""What the world does to a cluster: a container or a machine dies, a machine loses power or its
disk, a link is cut, a process stops answering. The drills inject these; the controllers and the
kubelet then react as they would on GKE.

Kubernetes has no module for this: it is what the node lifecycle controller
(``pkg/controller/nodelifecycle``) and the kubelet observe, and what chaos tools inject
(Chaos Mesh's PodChaos, NetworkChaos and IOChaos; a GCE instance stopped or its disk deleted).
"""

from __future__ import annotations

import signal

from harness.kube import kubectl
from harness.kube.store import KubeError, Store
from harness.runtime import netns
from harness.runtime.poll import poll


def kill_container(store: Store, name: str) -> None:
    """SIGKILL a pod's container: the kubelet restarts it (restartPolicy Always)."""
    store.running(name).kill_container()


def kill_node(store: Store, node: str) -> list[str]:
    """The machine vanishes: its link goes, every pod on it dies at the same instant (no preStop,
    no grace), and it takes no pod until :func:`restore_node`. Its pods' controllers replace them
    where the pods' scheduling rules allow. Returns the pods that died."""
    kubectl.cordon(store, node)
    set_node_link(store, node, up=False)
    victims = [p for p in store.pods_on(node) if p.worker is not None]
    for pod in victims:
        assert pod.worker is not None
        pod.worker.kill_hard()
    store.event(node, "NodeDown", f"killed {', '.join(p.name for p in victims) or 'no pod'}")
    return [p.name for p in victims]


def restore_node(store: Store, node: str) -> None:
    """The machine is back (empty): its link returns and it takes pods again."""
    set_node_link(store, node, up=True)
    kubectl.cordon(store, node, cordoned=False)
    store.event(node, "NodeUp", "back and schedulable")


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
    store.event(node, "NodeLink", "link up" if up else "link cut")
