"""The node lifecycle's decisions (harness.kube.nodes): pure functions of the nodes, the pods and the time."""

from __future__ import annotations

import pytest

from contract.timing import DEFAULT_TOLERATION_S, NODE_MONITOR_GRACE_S, WORKER_NODE_TOLERATION_S
from harness.kube.nodes import (
    NO_EXECUTE,
    NO_SCHEDULE,
    NOT_READY,
    OUT_OF_SERVICE,
    UNREACHABLE,
    Condition,
    NodeTiming,
    NodeView,
    PodOnNode,
    Taint,
    admitted,
    node_lifecycle,
)
from harness.kube.objects import PodSpec, Toleration
from harness.kube.schedule import Node, schedule

K8S = NodeTiming()
DIED = 1000.0
"""The node's last status report."""
WORKER = (
    Toleration(UNREACHABLE, "Exists", "", NO_EXECUTE, WORKER_NODE_TOLERATION_S),
    Toleration(NOT_READY, "Exists", "", NO_EXECUTE, WORKER_NODE_TOLERATION_S),
)
BROKER = (Toleration(UNREACHABLE, "Exists", "", NO_EXECUTE, None),)


def _pod(name: str, tolerations: tuple[Toleration, ...] = (), **kw: bool) -> PodOnNode:
    return PodOnNode(name, "node-0", admitted(tolerations), **kw)


def _run(now: float, pods: list[PodOnNode], node: NodeView | None = None, timing: NodeTiming = K8S) -> NodeView:
    """Every pass from DIED to ``now`` (one per second) on node-0; the node as the last pass left it."""
    node = node or NodeView("node-0", DIED)
    t = DIED
    while t <= now:
        actions = node_lifecycle([node], pods, t, timing)
        node = next((v for v in actions.nodes if v.name == node.name), node)
        t += 1
    return node


def test_the_admission_adds_300s_for_both_taints_unless_the_pod_tolerates_one_itself() -> None:
    plain = admitted(())
    assert {(t.key, t.effect, t.seconds) for t in plain} == {
        (UNREACHABLE, NO_EXECUTE, DEFAULT_TOLERATION_S),
        (NOT_READY, NO_EXECUTE, DEFAULT_TOLERATION_S),
    }
    broker = admitted(BROKER)
    assert [t.seconds for t in broker if t.key == UNREACHABLE] == [None]
    assert [t.seconds for t in broker if t.key == NOT_READY] == [DEFAULT_TOLERATION_S]
    everything = (Toleration("", "Exists"),)
    assert admitted(everything) == everything


def test_a_silent_node_is_unknown_and_tainted_only_after_the_grace_period() -> None:
    before = _run(DIED + NODE_MONITOR_GRACE_S, [])
    assert (before.condition, before.taints) == (Condition.TRUE, ())
    after = _run(DIED + NODE_MONITOR_GRACE_S + 1, [])
    assert after.condition is Condition.UNKNOWN
    assert {(t.key, t.effect) for t in after.taints} == {(UNREACHABLE, NO_EXECUTE), (UNREACHABLE, NO_SCHEDULE)}


def test_a_kubelet_that_says_not_ready_gets_the_not_ready_taint_at_once() -> None:
    actions = node_lifecycle([NodeView("node-0", DIED, kubelet_ready=False)], [], DIED, K8S)
    (node,) = actions.nodes
    assert node.condition is Condition.FALSE
    assert node.has(NOT_READY)
    assert not node.has(UNREACHABLE)


def test_pods_are_evicted_at_their_toleration_counted_from_the_taint() -> None:
    tainted = DIED + NODE_MONITOR_GRACE_S + 1
    pods = [_pod("worker", WORKER), _pod("default"), _pod("broker", BROKER)]
    node = _run(tainted, pods)
    assert node.has(UNREACHABLE)

    def evicted(now: float) -> set[str]:
        return {name for name, _ in node_lifecycle([node], pods, now, K8S).evict}

    assert evicted(tainted + WORKER_NODE_TOLERATION_S - 1) == set()
    assert evicted(tainted + WORKER_NODE_TOLERATION_S) == {"worker"}
    assert evicted(tainted + DEFAULT_TOLERATION_S) == {"worker", "default"}
    # Tolerated for ever: never evicted, however long the node stays away.
    assert "broker" not in evicted(tainted + 10 * DEFAULT_TOLERATION_S)


def test_a_pod_that_does_not_tolerate_a_no_execute_taint_goes_at_once() -> None:
    node = NodeView("node-0", DIED, taints=(Taint(OUT_OF_SERVICE, NO_EXECUTE, DIED),))
    actions = node_lifecycle([node], [_pod("broker", BROKER)], DIED, K8S)
    assert [name for name, _ in actions.evict] == ["broker"]


def test_the_node_is_not_ready_and_its_pods_marked_so_and_a_terminating_pod_is_not_evicted_again() -> None:
    node = _run(DIED + NODE_MONITOR_GRACE_S + 1, [])
    pods = [_pod("ready"), _pod("going", terminating=True, ready=False)]
    actions = node_lifecycle([node], pods, DIED + 10_000, K8S)
    assert actions.not_ready == ("ready",)
    assert [name for name, _ in actions.evict] == ["ready"]
    assert actions.force_delete == ()


def test_the_pod_gc_force_deletes_pods_of_a_deleted_node_and_terminating_pods_on_an_out_of_service_one() -> None:
    gone = NodeView("node-0", DIED, registered=False)
    actions = node_lifecycle([gone], [_pod("broker", BROKER)], DIED, K8S)
    assert [name for name, _ in actions.force_delete] == ["broker"]
    down = _run(DIED + NODE_MONITOR_GRACE_S + 1, [])
    out = NodeView(
        "node-0", DIED, condition=down.condition, taints=(*down.taints, Taint(OUT_OF_SERVICE, NO_EXECUTE, DIED))
    )
    actions = node_lifecycle([out], [_pod("broker", BROKER, terminating=True)], DIED + 100, K8S)
    assert [name for name, _ in actions.force_delete] == ["broker"]
    # While the node is Ready the pod GC leaves a Terminating pod to its kubelet.
    ready = NodeView("node-0", DIED + 100, taints=(Taint(OUT_OF_SERVICE, NO_EXECUTE, DIED),))
    assert node_lifecycle([ready], [_pod("broker", BROKER, terminating=True)], DIED + 100, K8S).force_delete == ()


def test_a_node_heard_again_loses_its_condition_taints_and_keeps_the_others() -> None:
    down = _run(DIED + NODE_MONITOR_GRACE_S + 1, [])
    back = NodeView("node-0", DIED + 100, condition=down.condition, taints=(*down.taints, Taint("x", NO_SCHEDULE, 0)))
    (node,) = node_lifecycle([back], [], DIED + 100, K8S).nodes
    assert node.condition is Condition.TRUE
    assert [t.key for t in node.taints] == ["x"]


def test_compression_divides_the_grace_and_the_tolerations_alike() -> None:
    fast = NodeTiming(factor=10)
    tainted = DIED + NODE_MONITOR_GRACE_S / 10 + 1
    node = _run(tainted, [], timing=fast)
    assert node.condition is Condition.UNKNOWN
    pods = [_pod("worker", WORKER)]
    due = tainted + WORKER_NODE_TOLERATION_S / 10
    assert node_lifecycle([node], pods, due - 0.5, fast).evict == ()
    assert [n for n, _ in node_lifecycle([node], pods, due, fast).evict] == ["worker"]
    with pytest.raises(ValueError, match="compression"):
        NodeTiming(factor=0.5)


def test_the_scheduler_keeps_pods_off_a_node_tainted_unreachable() -> None:
    tainted = Node("node-0", Node.make("node-0", "z").labels, taints=((UNREACHABLE, NO_SCHEDULE),))
    nodes = [tainted, Node.make("node-1", "z")]
    spec = PodSpec(containers=(), tolerations=admitted(WORKER))
    placed = schedule("ns", {"app": "w"}, spec, nodes[:1], [])
    assert placed.node is None
    assert UNREACHABLE in placed.reason
    assert schedule("ns", {"app": "w"}, spec, nodes, []).node == "node-1"
