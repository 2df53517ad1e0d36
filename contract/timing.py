"""The timing contract between the Celery workers, Kubernetes and RabbitMQ.

Pure constants (no imports beyond the standard library), in ``contract`` so that the Kubernetes
component and the broker config renderer can import them without pulling in
Celery. Each value says why it is what it is; the inequalities that tie them
together are checked in ``tests/unit/app/test_config.py`` and restated here:

    TASK_SOFT_TIME_LIMIT_S < TASK_TIME_LIMIT_S < MIN_TERMINATION_GRACE_S
    worst_unacked_s(MAX_PREFETCH_MULTIPLIER) < MIN_CONSUMER_TIMEOUT_MS / 1000
        <= CONSUMER_TIMEOUT_MS / 1000
    FAILOVER_WINDOW_S <= publish_retry_total_s() and FAILOVER_WINDOW_S < LIVENESS_MAX_AGE_S

Who must respect what:

- the worker Deployment: ``terminationGracePeriodSeconds >= MIN_TERMINATION_GRACE_S``
  and a liveness probe ``python -m app.health --max-age LIVENESS_MAX_AGE_S``;
- the broker (``rabbitmq.conf``): ``consumer_timeout >= MIN_CONSUMER_TIMEOUT_MS``
  (``CONSUMER_TIMEOUT_MS`` is the value we recommend rendering);
- the Celery app itself (``app.config``) uses the rest.
"""

from __future__ import annotations

from typing import Final

TASK_SOFT_TIME_LIMIT_S: Final = 50
"""Seconds after which a running task gets ``SoftTimeLimitExceeded`` raised inside it.

Gives the task a chance to clean up before the hard limit. The longest task in
this project (``count``) takes ~10 s, so 50 s only catches tasks that are stuck.
(``SoftTimeLimitExceeded`` then fails the task, which is dead-lettered.)
"""

TASK_TIME_LIMIT_S: Final = 60
"""Seconds after which the pool process running a task is killed (hard limit).

Bounds every execution, which in turn bounds how long a message stays unacked
(see ``MIN_CONSUMER_TIMEOUT_MS``) and how long a SIGTERM'd worker needs to
finish (see ``MIN_TERMINATION_GRACE_S``). A killed task is requeued.
"""

SHUTDOWN_MARGIN_S: Final = 15
"""Seconds after the last task finishes for the worker to requeue unstarted
messages, close its broker connection and flush logs (measured: ~2 s)."""

MIN_TERMINATION_GRACE_S: Final = TASK_TIME_LIMIT_S + SHUTDOWN_MARGIN_S
"""Smallest ``terminationGracePeriodSeconds`` for worker pods (75 s).

On SIGTERM a worker does a *warm* shutdown: it stops consuming and waits for
its running tasks, which the hard time limit bounds, while its event loop keeps
acking and heartbeating (measured: 45 s tasks finished and acked, exit 0).
A shorter grace lets the kubelet SIGKILL it mid-task: nothing is lost (the
messages are unacked, so they are redelivered) but those tasks run again.
"""

SOFT_SHUTDOWN_TIMEOUT_S: Final = 0
"""``worker_soft_shutdown_timeout``: 0, Celery's soft shutdown stays off.

Celery 5.7's soft shutdown (only on a cold shutdown, i.e. SIGQUIT, or SIGTERM
with ``REMAP_SIGTERM=SIGQUIT``) sleeps the whole timeout *inside the signal
handler*, even after the tasks are done, so the event loop stops: no acks and
no AMQP heartbeats. Measured with 75 s and 10 s tasks: the broker closed the
connection after 28 s ("missed heartbeats from client") and the two tasks that
had finished were cancelled and redelivered, i.e. ran twice. A value under
``2 * BROKER_HEARTBEAT_S`` would keep the connection, but the finished tasks are
still cancelled after the sleep. Warm shutdown (above) does the job without
either problem, so the worker image does *not* set ``REMAP_SIGTERM``.
"""

MAX_PREFETCH_MULTIPLIER: Final = 16
"""Upper bound accepted for ``WORKER_PREFETCH_MULTIPLIER``.

A reserved (prefetched) message is unacked while it waits for a free pool
process; with multiplier ``m`` it can wait ``m`` task durations and then run for
one more. Capping ``m`` keeps that under the broker's consumer timeout.
"""


def worst_unacked_s(prefetch_multiplier: int, task_time_limit_s: float = TASK_TIME_LIMIT_S) -> float:
    """Longest a delivery can stay unacked with ``task_acks_late`` (s).

    A prefetched message waits for a pool process up to ``prefetch_multiplier`` task
    durations, then runs for one more: ``(prefetch_multiplier + 1) x task_time_limit``.
    The broker's ``consumer_timeout`` must outlast it (the one place this rule lives).
    """
    if prefetch_multiplier < 1:
        raise ValueError(f"prefetch_multiplier must be >= 1, got {prefetch_multiplier}")
    return (prefetch_multiplier + 1) * task_time_limit_s


MIN_CONSUMER_TIMEOUT_MS: Final = int((worst_unacked_s(MAX_PREFETCH_MULTIPLIER) + 60) * 1000)
"""Smallest RabbitMQ ``consumer_timeout`` (ms) the workers can live with (1,080,000 = 18 min).

If a delivery stays unacked longer than ``consumer_timeout`` the broker closes
the worker's channel and redelivers everything it had: duplicate executions and
a reconnect storm. Worst case unacked time is ``(m + 1) * TASK_TIME_LIMIT_S``
with the largest multiplier, plus a minute of slack for ack latency.
"""

CONSUMER_TIMEOUT_MS: Final = 1_800_000
"""The ``consumer_timeout`` we recommend rendering into ``rabbitmq.conf`` (30 min).

It is RabbitMQ's own default; rendering it explicitly keeps an image upgrade
from silently changing the contract.
"""

BROKER_HEARTBEAT_S: Final = 10
"""AMQP heartbeat (s). A broker machine that vanishes gives timeouts, not refused
connections; with heartbeats the worker notices within ~2 intervals (20 s)
instead of waiting for TCP keepalive (minutes)."""

BROKER_HEARTBEAT_CHECK_S: Final = 1
"""How often the worker's consumer looks at its heartbeats (Celery's ``broker_heartbeat_checkrate``
is ``BROKER_HEARTBEAT_S / BROKER_HEARTBEAT_CHECK_S`` checks per interval). py-amqp asks to be ticked
"on the order of once per second": it notes a received frame only when it looks, and declares the
broker dead at the first look after two silent intervals, so each look's spacing is added to the
detection twice. Celery's default (3 per interval, 3.3 s apart) let a frozen broker hold a worker
for up to ~27 s; a look costs two integer comparisons."""

FROZEN_BROKER_HOLD_MAX_S: Final = 2 * BROKER_HEARTBEAT_S + 2 * BROKER_HEARTBEAT_CHECK_S + 2
"""Longest a worker may stay on a frozen broker node (24 s), from the freeze until it consumes
from a healthy node: two silent heartbeat intervals, the two check spacings above, and 2 s to
connect to the next node (never the frozen one first, see ``app.failover``) and consume there.
The freeze drill asserts it per worker (``drill.held``)."""

TCP_USER_TIMEOUT_MS: Final = BROKER_HEARTBEAT_S * 1000
"""Every client socket's ``TCP_USER_TIMEOUT`` (workers, the scheduler, ``.delay()``). py-amqp's
default (1 s) aborts the socket when the broker's flow control keeps its TCP window closed for a
second, which a busy quorum queue does; heartbeats and the confirm timeout detect a dead peer."""

BROKER_CONNECT_TIMEOUT_S: Final = 4
"""Seconds to wait for a TCP connect before trying the next broker URL; a dead
node costs this much per attempt, so it stays short."""

FAILOVER_WINDOW_S: Final = 60
"""How long a broker failover may take end to end: heartbeat detection (~20 s),
connect timeouts on dead nodes and a quorum queue leader election. Publishing
retries and the liveness probe are sized to outlast it."""

PUBLISH_CONFIRM_TIMEOUT_S: Final = 30
"""Seconds a publisher waits for the broker's confirm before treating the
connection as dead and republishing (at-least-once: the retry may duplicate)."""

PUBLISH_RETRY_MAX_RETRIES: Final = 20
"""Publish attempts after the first, before the publisher gives up and raises."""

PUBLISH_RETRY_INTERVAL_START_S: Final = 0.0
"""First retry is immediate: the next broker URL is usually alive."""

PUBLISH_RETRY_INTERVAL_STEP_S: Final = 1.0
"""Each further retry waits one second longer ..."""

PUBLISH_RETRY_INTERVAL_MAX_S: Final = 5.0
"""... up to this many seconds between retries."""


def publish_retry_total_s() -> float:
    """Total time the publish retry policy sleeps before giving up (85 s).

    Must be at least ``FAILOVER_WINDOW_S`` so a publisher rides out a failover
    instead of failing the whole scheduling run.
    """
    total = 0.0
    interval = PUBLISH_RETRY_INTERVAL_START_S
    for _ in range(PUBLISH_RETRY_MAX_RETRIES):
        total += min(interval, PUBLISH_RETRY_INTERVAL_MAX_S)
        interval += PUBLISH_RETRY_INTERVAL_STEP_S
    return total


OUTAGE_BUDGET_S: Final = 900
"""How long a whole-broker outage may last before clients give up (15 min): the scheduler keeps
reconnecting (with backoff, saying so) for this long without a new confirm, and a worker that
lost its broker stays live (not restarted by its liveness probe) for this long. Longer than a
whole-cluster restart (Khepri waits up to 10 x 30 s for its peers, plus pod start), short enough
that a worker wedged in its reconnect loop is eventually restarted."""

HEALTH_HEARTBEAT_INTERVAL_S: Final = 5
"""How often a connected worker touches its heartbeat file."""

LIVENESS_MAX_AGE_S: Final = 90
"""Default ``--max-age`` of ``python -m app.health``: a connected worker whose heartbeat is
older than this has a stuck event loop, so Kubernetes may restart it. Longer than
``FAILOVER_WINDOW_S`` so an ordinary broker failover never restarts workers. A worker that
lost its broker is judged by ``OUTAGE_BUDGET_S`` instead (see ``app.health``)."""

NODE_CERT_VALIDITY_S: Final = 365 * 24 * 3600
"""A broker node certificate's life (pulumi-tls ``validity_period_hours``): one year."""
NODE_CERT_EARLY_RENEWAL_S: Final = 30 * 24 * 3600
"""pulumi-tls ``early_renewal_hours``: any ``pulumi up`` in a certificate's last 30 days renews it
(a new certificate in the TLS Secret, updated in place, and a rolling restart of the brokers)."""

# --- A node that stops answering: Kubernetes' defaults and the plan's answer to them ----------------

NODE_UNREACHABLE_TAINT: Final = "node.kubernetes.io/unreachable"
"""The NoExecute taint on a node whose kubelet has not reported for ``NODE_MONITOR_GRACE_S`` (Ready=Unknown)."""
NODE_NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"
"""The NoExecute taint on a node whose kubelet reports Ready=False (it runs, but says it cannot run pods)."""
NODE_OUT_OF_SERVICE_TAINT: Final = "node.kubernetes.io/out-of-service"
"""Set by an operator on a node known to be shut down: its pods are force-deleted and their disks
detached at once, so a StatefulSet pod comes back elsewhere (docs/operate-broker.md)."""

NODE_MONITOR_GRACE_S: Final = 50
"""kube-controller-manager ``--node-monitor-grace-period``: a node whose kubelet renewed no status for
this long is marked ``Ready=Unknown`` and tainted ``node.kubernetes.io/unreachable``. 40 s up to
Kubernetes 1.31, 50 s from 1.32 (kubernetes/kubernetes#121793: 40 s left the kubelet's 10 s status
updates too few retries); GKE runs the upstream default of its version, so 50 s on every GKE release
channel today."""

DEFAULT_TOLERATION_S: Final = 300
"""The API server's ``DefaultTolerationSeconds`` admission plugin (``--default-not-ready-toleration-seconds``
and ``--default-unreachable-toleration-seconds``, both 300): a pod that sets no toleration for the
``not-ready`` or ``unreachable`` NoExecute taint gets one of 300 s, so it is evicted five minutes after
its node went NotReady."""

GKE_AUTO_REPAIR_S: Final = 600
"""GKE node auto-repair: a node NotReady on consecutive checks for about 10 minutes is repaired (drained,
its VM recreated, its Node object replaced). Only then does a StatefulSet pod left on a dead node
come back elsewhere by itself (https://cloud.google.com/kubernetes-engine/docs/how-to/node-auto-repair)."""

WORKER_NODE_TOLERATION_S: Final = 30
"""The worker pods' ``tolerationSeconds`` for ``unreachable`` and ``not-ready`` (instead of 300): a dead
machine's workers are replaced ``NODE_MONITOR_GRACE_S + 30`` s (~80 s) after it stopped, not ~6 min.
Not 0: a node that misses its status updates for a moment (a kubelet restart, an API server hiccup)
would have every worker on it evicted, their running tasks interrupted and run again. A worker is
stateless and its unacked tasks are redelivered, so an early eviction costs nothing else; the old pod
on a node that comes back is killed by its kubelet (a worker never runs twice *on a claim*: it has none)."""

CONSUMER_DISCONNECTED_TIMEOUT_MS: Final = 10_000
"""RabbitMQ 4.x ``consumer_disconnected_timeout`` (default 60,000): how long a quorum queue keeps the
deliveries of a consumer whose node it lost before it returns them to the queue. It starts only once
that node was declared down, so it was already silent for Erlang's ``net_ticktime`` (60 s by default,
which the plan keeps: declared down after 45-75 s):
at the default, a dead VM's worker that consumed through the broker on the same VM had its in-flight
tasks held ~2 min (the kill-node drill: 2 tasks of 1,000 back after more than 110 s). A consumer
silent that long is gone; if it was only cut off and still runs the task, the task runs twice,
which late acks already allow."""

RETRY_DELAY_MIN_MS: Final = 2_000
"""RabbitMQ 4.3's delayed retry (``delayed-retry-type: failed`` on every lane's queue): a delivery that
failed (Celery's ``basic.reject`` with requeue: a pool process killed or past its hard limit; or a
channel closed with it unacked: a worker or its node gone) waits ``min(this x delivery count,
RETRY_DELAY_MAX_MS)`` before it is delivered again, instead of coming straight back. A poison task that
kills every process it reaches then spends ~7 minutes on its 20 deliveries, not seconds, before it is
dead-lettered; a task orphaned once by a killed worker waits 2 s. Returns that are not failures (a
consumer timeout, a partitioned consumer's node) are not delayed."""
RETRY_DELAY_MAX_MS: Final = 60_000
"""The longest wait between two deliveries of a failing task (its 30th and later failures)."""
