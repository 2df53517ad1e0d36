"""The drills' vocabulary, shared by the seed's faults (``drill.scenarios``) and the plan's
(``drill.pod_scenarios``): the scenario names, the queue they watch, how long a fault lasts.
It imports no harness, so neither fault module reaches the other's cluster through it.
"""

from __future__ import annotations

from enum import StrEnum

QUEUE = "celery"
RECOVER_AFTER_S = 8.0
"""How long a fault lasts before it is undone: long enough to see the failover, short enough
for the drill to finish in a few minutes (a restarted pod takes about as long on GKE)."""


class Scenario(StrEnum):
    BASELINE = "baseline"
    """No fault: the same load on a healthy cluster (the drills' alerts must stay quiet on it)."""
    KILL_BROKER = "kill-broker"
    """SIGKILL the node that leads the task queue (and holds its clients' connections)."""
    KILL_WORKER = "kill-worker"
    """SIGKILL a worker and its pool processes in the middle of tasks, then start a new one."""
    PARTITION_BROKER = "partition-broker"
    """Cut the queue leader's node off from the other two (network namespaces), then heal."""
    RESTART_CLUSTER = "restart-cluster"
    """Stop every node, start them again: queued tasks must survive on disk."""
    ROLLING_RESTART = "rolling-restart"
    """Restart the nodes one by one, as a GKE node-pool upgrade does."""
    KILL_NODE = "kill-node"
    """The VM running the queue leader dies with its pods; its Node stays until auto-repair deletes it."""
    NODE_UNREACHABLE = "node-unreachable"
    """A node's network is cut for longer than the workers' toleration (its pods run on), then back."""
    DELETE_NODE = "delete-node"
    """The Node object is deleted (GKE auto-repair's step): its pods go, the broker comes back elsewhere."""
    DRAIN_NODE = "drain-node"
    """The seed's experiment: cordon and drain the leader's node through the PDBs, then uncordon."""
    PARTITION_NODE = "partition-node"
    """Cut the leader's node off the network (its pods still reach each other), then heal."""
    LOSE_DISK = "lose-disk"
    """A broker pod comes back with an empty volume."""
    FREEZE_BROKER = "freeze-broker"
    """The queue leader stops answering with its sockets open (SIGSTOP: a paused VM, a stalled disk), then resumes."""
    OOM = "oom"
    """A task allocates past the worker pod's memory limit: the container is OOM-killed and restarts."""
    SCALE_IN = "scale-in"
    """The workers scaled out by one under load, then in while their tasks run (an autoscaler's
    down-scale): the pod the controller deletes finishes its tasks in its grace period (``drill.scale``)."""
    UPDATE = "update"
    """A second plan (the same stack with other settings) applied to the running cluster as ``pulumi up`` would."""

    @property
    def needs_netns(self) -> bool:
        return self is Scenario.PARTITION_BROKER

    @property
    def needs_pod_runner(self) -> bool:
        """Whole-node, disk and freeze faults exist only where pods run on nodes (the plan-booted cluster)."""
        return self in {
            Scenario.KILL_NODE,
            Scenario.NODE_UNREACHABLE,
            Scenario.DELETE_NODE,
            Scenario.DRAIN_NODE,
            Scenario.PARTITION_NODE,
            Scenario.LOSE_DISK,
            Scenario.FREEZE_BROKER,
            Scenario.OOM,
            Scenario.SCALE_IN,
            Scenario.UPDATE,
        }

    @property
    def is_node_fault(self) -> bool:
        """A whole machine (``drill.node_scenarios``): its report says what the node lifecycle did."""
        return self in {Scenario.KILL_NODE, Scenario.NODE_UNREACHABLE, Scenario.DELETE_NODE}

    @property
    def needs_update(self) -> bool:
        """Runs only with a second plan and its steps (``UPDATE=``), so never as part of ``all``."""
        return self is Scenario.UPDATE
