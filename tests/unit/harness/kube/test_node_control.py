"""The node lifecycle applied to the pod runner's records (harness.kube.node_control), with stand-in
kubelets: what the API keeps of a lost node's pods, evictions, the pod GC, a node that comes back."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from harness.kube import kubectl
from harness.kube.kubelet import PodWorker
from harness.kube.node_control import reconcile_nodes
from harness.kube.nodes import UNREACHABLE, Condition, NodeTiming
from harness.kube.objects import Plan, add_object
from harness.kube.rollout import deployment_sync, statefulset_sync
from harness.kube.schedule import Node
from harness.kube.store import Pod, Store
from harness.kube.volumes import VolumeStore
from tests.unit.harness.kube.conftest import DEPLOY, STS

T0 = 1000.0
GRACE = 50.0


@dataclass
class FakeWorker:
    """A kubelet's pod worker as the records see it."""

    ready: bool = True
    terminating: bool = False
    finished: bool = False
    grace: float | None = None

    def delete(self, grace: float | None = None) -> None:
        self.terminating, self.grace = True, grace


def _store(tmp_path: Path) -> Store:
    plan = Plan()
    sts = copy.deepcopy(STS)
    deploy: dict[str, Any] = copy.deepcopy(DEPLOY)
    deploy["spec"]["template"]["spec"]["tolerations"] = [
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
    ]
    sts["spec"]["template"]["spec"]["tolerations"] = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    add_object(plan, sts)
    add_object(plan, deploy)
    nodes = [Node.make(f"node-{i}", "z") for i in range(3)]
    store = Store(plan, nodes, VolumeStore(tmp_path / "v"), tmp_path / "events.log")
    for record in store.node_records.values():
        record.heard_at = T0
    broker = Pod("rabbitmq-0", "ns", "StatefulSet/rabbitmq", plan.statefulsets[0].template, 0, "rabbitmq-0")
    worker = Pod("worker-a", "ns", "Deployment/worker", plan.deployments[0].template)
    for pod in (broker, worker):
        pod.node, pod.worker = "node-0", cast(PodWorker, FakeWorker())
        store.pods[pod.name] = pod
    return store


def _fake(pod: Pod) -> FakeWorker:
    return cast(FakeWorker, pod.worker)


def test_a_dead_node_keeps_its_pods_in_the_api_evicts_the_worker_and_holds_the_broker(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record = store.node_records["node-0"]
    record.vm_up = False
    store.lose_pods_on("node-0")  # as faults.kill_node does, before the processes die
    for pod in store.pods.values():
        _fake(pod).ready, _fake(pod).finished = False, True  # the processes died with the VM
    reconcile_nodes(store, T0 + 1)
    broker, worker = store.pods["rabbitmq-0"], store.pods["worker-a"]
    # The API still sees them Ready and running: nobody told it otherwise.
    assert (broker.lost, broker.ready, worker.ready, worker.terminating) == (True, True, True, False)
    reconcile_nodes(store, T0 + GRACE + 1)
    assert record.condition is Condition.UNKNOWN
    assert record.has_taint(UNREACHABLE)
    assert (broker.ready, worker.ready) == (False, False), "MarkPodsNotReady"
    reconcile_nodes(store, T0 + GRACE + 31)
    assert worker.terminating, "evicted at its 30 s toleration"
    assert not broker.terminating, "tolerates unreachable for ever"
    sts, deploy = store.plan.statefulsets[0], store.plan.deployments[0]
    # The Deployment replaces the Terminating worker; the StatefulSet waits for its pod object.
    assert deployment_sync(deploy, [worker.view(deploy.template)], 1).create == 1
    assert 0 not in statefulset_sync(sts, [broker.view(sts.template)]).create_ordinals
    kubectl.delete_node(store, "node-0")
    reconcile_nodes(store, T0 + GRACE + 40)
    assert store.pods == {}, "the pod GC force-deleted both"
    assert [p.name for p in store.orphans] == ["rabbitmq-0", "worker-a"]


def test_a_cut_node_that_comes_back_has_its_kubelet_stop_the_pods_deleted_meanwhile(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.node_timing = NodeTiming(factor=10)
    store.node_records["node-0"].link_up = False
    reconcile_nodes(store, T0 + 1)
    reconcile_nodes(store, T0 + GRACE / 10 + 0.1)  # tainted
    reconcile_nodes(store, T0 + (GRACE + 31) / 10)
    worker, broker = store.pods["worker-a"], store.pods["rabbitmq-0"]
    assert worker.deletion_requested
    assert not _fake(worker).terminating, "its kubelet has not heard yet: it runs on, cut off"
    store.node_records["node-0"].link_up = True
    reconcile_nodes(store, T0 + 10)
    assert _fake(worker).terminating, "back: the kubelet carries out the deletion"
    assert _fake(worker).grace is None, "with the pod's own grace period"
    assert not _fake(broker).terminating
    assert store.node_records["node-0"].condition is Condition.TRUE
    assert store.node_records["node-0"].taints == ()


def test_a_force_deleted_pod_on_a_cut_node_is_an_orphan_killed_when_its_node_is_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.node_records["node-0"].link_up = False
    reconcile_nodes(store, T0 + 1)
    kubectl.force_delete_pod(store, "rabbitmq-0")
    assert "rabbitmq-0" not in store.pods
    (orphan,) = store.orphans
    assert not _fake(orphan).terminating
    store.node_records["node-0"].link_up = True
    reconcile_nodes(store, T0 + 2)
    assert (_fake(orphan).terminating, _fake(orphan).grace) == (True, 0)


def test_out_of_service_evicts_and_force_deletes_the_held_broker(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.node_records["node-0"].vm_up = False
    reconcile_nodes(store, T0 + 1)
    reconcile_nodes(store, T0 + GRACE + 1)
    kubectl.taint_out_of_service(store, "node-0")
    reconcile_nodes(store, T0 + GRACE + 2)
    assert store.pods["rabbitmq-0"].terminating, "no pod tolerates out-of-service"
    reconcile_nodes(store, T0 + GRACE + 3)
    assert "rabbitmq-0" not in store.pods, "the pod GC force-deletes it: the StatefulSet may recreate it"
