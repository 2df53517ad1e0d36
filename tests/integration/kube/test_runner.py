"""The pod runner for real: the dev plan's StatefulSet and Deployment booted on three local nodes.

One cluster per module (booting takes ~20-40 s); each test reads or disturbs it the way a
Kubernetes user would, and the last one checks that stopping it leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.wire import WORKER_UID, BrokerRole, role_username
from drill.plan_secrets import plan_secret_rules
from drill.targets import broker_urls
from harness.kube.cluster import KubeCluster, KubeError
from harness.kube.dns_server import query
from harness.runtime import netns
from harness.runtime.images import ensure_images
from harness.runtime.poll import poll
from tests.conftest import Plan
from tests.requires import requires

pytestmark = pytest.mark.integration

BROKERS = "StatefulSet/rabbitmq"
WORKERS = "Deployment/celery-worker"


@pytest.fixture(scope="module")
def cluster(plans: dict[str, Plan]) -> Iterator[KubeCluster]:
    requires("root")
    work = Path(tempfile.mkdtemp(prefix="ha-celery-kube-test-"))
    try:
        with KubeCluster(plans["dev"].directory, work, ensure_images(), secret_rules=plan_secret_rules) as running:
            running.wait_ready(300)
            yield running
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_brokers_form_one_rabbitmq_43_cluster_from_the_plan(cluster: KubeCluster) -> None:
    status = json.loads(cluster.exec("rabbitmq-0", "rabbitmqctl", "-q", "cluster_status", "--formatter", "json"))
    assert len(status["running_nodes"]) == 3, status["running_nodes"]
    assert all(n.endswith(".rabbitmq-nodes.ha-celery.svc.cluster.local") for n in status["running_nodes"])
    assert cluster.exec("rabbitmq-1", "rabbitmqctl", "-q", "version").startswith("4.3.")
    # The postStart hook imported the definitions: the dead-letter queue exists.
    queues = cluster.exec("rabbitmq-2", "rabbitmqctl", "-q", "list_queues", "name", "type", "--no-table-headers")
    assert "celery.dlq\tquorum" in queues.splitlines(), queues
    hooks = [e for e in cluster.events_of() if e.reason == "FailedPostStartHook"]
    assert hooks == [], f"a postStart hook failed on a plain boot: {hooks}"


def test_pods_spread_over_the_nodes(cluster: KubeCluster) -> None:
    nodes = {pod.node for pod in cluster.pods_of(BROKERS)}
    assert len(nodes) == 3, "preferred anti-affinity puts one broker per node when three nodes are free"


def test_workers_run_the_plans_deployment_and_consume(cluster: KubeCluster) -> None:
    workers = cluster.pods_of(WORKERS)
    assert len(workers) == 3
    assert all(pod.ready for pod in workers), "readiness is the image's own probe (python -m app.health --ready)"
    consumers = cluster.exec("rabbitmq-0", "rabbitmqctl", "-q", "list_queues", "name", "consumers")
    assert "celery\t3" in consumers.splitlines(), consumers
    # The container runs as the image's user with the Deployment's env from the worker user's Secret.
    who = cluster.exec(workers[0].name, "python", "-c", "import os; print(os.getuid(), os.environ['BROKER_USER'])")
    assert who.split() == [str(WORKER_UID), role_username(BrokerRole.WORKER)]


def proc_status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


UNSHARE_USERNS = (
    "import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
    " print(libc.syscall(272, 0x10000000), ctypes.get_errno())"  # unshare(CLONE_NEWUSER) on x86_64
)


@pytest.mark.parametrize(("pod", "writable"), [("rabbitmq-0", "/var/lib/rabbitmq"), ("worker", "/tmp")])
def test_containers_run_confined_as_their_security_context_says(cluster: KubeCluster, pod: str, writable: str) -> None:
    if pod == "worker":
        pod = cluster.pods_of(WORKERS)[0].name
    assert cluster.pod(pod).ready
    # readOnlyRootFilesystem: the root refuses writes, the volumes take them.
    touch = "touch {0}/.probe 2>&1; echo rc=$?; rm -f {0}/.probe"
    assert "Read-only file system" in cluster.exec(pod, "sh", "-c", touch.format(""))
    assert cluster.exec(pod, "sh", "-c", touch.format(writable)).strip() == "rc=0"
    # drop ALL, allowPrivilegeEscalation: false, seccomp RuntimeDefault: in the main process (read from the
    # host) and in an exec'd one, as runc gives both.
    main_pid = cluster.running(pod).main_pid
    assert main_pid
    for status in (Path(f"/proc/{main_pid}/status").read_text(), cluster.exec(pod, "cat", "/proc/self/status")):
        fields = proc_status(status)
        caps = {k: int(fields[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        assert caps == dict.fromkeys(caps, 0), fields
        assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2"), fields


def test_the_seccomp_filter_refuses_what_runtime_default_refuses(cluster: KubeCluster) -> None:
    worker = cluster.pods_of(WORKERS)[0].name
    # A user namespace needs no capability, so only the filter can refuse it: EPERM (1).
    assert cluster.exec(worker, "python", "-c", UNSHARE_USERNS).split() == ["-1", "1"]


def test_secrets_get_fresh_local_values(cluster: KubeCluster) -> None:
    secret = next(s for s in cluster.plan.secrets if s.name == "rabbitmq-default-user")
    assert b"[secret]" not in b"".join(secret.data.values())
    assert len(secret.data["password"]) == 32


def running_nodes(cluster: KubeCluster, via: str) -> int:
    status = json.loads(cluster.exec(via, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json"))
    return len(status["running_nodes"])


def test_killed_broker_container_is_restarted_by_its_kubelet(cluster: KubeCluster) -> None:
    before = cluster.running("rabbitmq-1").restarts
    cluster.kill_container("rabbitmq-1")
    poll(lambda: cluster.running("rabbitmq-1").restarts > before and cluster.pod("rabbitmq-1").ready, 120, "restart")
    poll(lambda: running_nodes(cluster, "rabbitmq-0") == 3, 120, "rabbitmq-1 to rejoin")


def test_deleted_broker_pod_comes_back_on_its_claim_at_a_new_address_and_rejoins_by_name(cluster: KubeCluster) -> None:
    old = cluster.pod("rabbitmq-2")
    old_uid, old_ip = old.uid, old.ip
    marker = cluster.exec("rabbitmq-2", "sh", "-c", "ls /var/lib/rabbitmq/mnesia")
    cluster.delete_pod("rabbitmq-2", wait=120)
    poll(lambda: cluster.pod("rabbitmq-2").uid != old_uid and cluster.pod("rabbitmq-2").ready, 180, "rabbitmq-2 back")
    hooks = [e for e in cluster.events_of("rabbitmq-2") if e.reason == "PreStopHook"]
    assert any("exit 0" in e.message for e in hooks), f"preStop did not succeed: {hooks}"
    assert cluster.exec("rabbitmq-2", "sh", "-c", "ls /var/lib/rabbitmq/mnesia") == marker, "the claim was not kept"
    # A new pod, a new address: its peers and its clients find it again through the cluster DNS only.
    new_ip = cluster.pod("rabbitmq-2").ip
    assert new_ip is not None
    assert new_ip != old_ip
    assert query(cluster.dns.address, NODE_2) == [new_ip]
    poll(lambda: running_nodes(cluster, "rabbitmq-0") == 3, 120, "rabbitmq-2 to rejoin by its name")
    # The worker pods reconnected (through their own resolv.conf), and a client in a worker pod (the
    # NetworkPolicy admits no other here) reaches the new pod by its name.
    poll(lambda: "celery\t3" in consumers(cluster), 120, "the three workers to consume again")
    [url] = [u for u in broker_urls(cluster, BrokerRole.WORKER, by_name=True) if "@rabbitmq-2." in u]
    assert peer_from_a_worker_pod(cluster, url) == new_ip


NODE_2 = "rabbitmq-2.rabbitmq-nodes.ha-celery.svc.cluster.local"


def consumers(cluster: KubeCluster) -> list[str]:
    out = cluster.exec("rabbitmq-0", "rabbitmqctl", "-q", "list_queues", "name", "consumers", "--no-table-headers")
    return out.splitlines()


PEER = (
    "import sys; from kombu import Connection; c = Connection(sys.argv[1], connect_timeout=10); "
    "c.connect(); print(c.connection.transport.sock.getpeername()[0]); c.release()"
)


def peer_from_a_worker_pod(cluster: KubeCluster, url: str) -> str:
    """The address an AMQP connection to ``url`` reached from a worker pod (its host resolved there)."""
    worker = cluster.pods_of(WORKERS)[0].name
    return cluster.exec(worker, "python", "-c", PEER, url, timeout=60).strip()


def test_scaling_the_deployment_to_zero_stops_its_pods_gracefully_and_back_restarts_them(cluster: KubeCluster) -> None:
    before = {pod.name for pod in cluster.pods_of(WORKERS)}
    cluster.scale(WORKERS, 0)
    poll(lambda: not cluster.pods_of(WORKERS), 180, "every worker pod to be gone")
    deleted = {e.pod for e in cluster.events_of() if e.reason == "Deleting" and "scaled to 0" in e.message}
    assert deleted == before, "each pod is deleted with its grace period, not killed"
    cluster.wait_ready(1, WORKERS)  # 0 replicas: ready with none

    def consumers() -> list[str]:
        out = cluster.exec("rabbitmq-0", "rabbitmqctl", "-q", "list_queues", "name", "consumers", "--no-table-headers")
        return [line for line in out.splitlines() if line.startswith("celery\t")]

    # The broker lets go of a closed channel's quorum-queue consumer a moment after the pod is gone.
    poll(lambda: consumers() == ["celery\t0"], 30, "no consumer left on the task queue", interval=0.5)
    cluster.scale(WORKERS, 3)
    cluster.wait_ready(180, WORKERS)
    after = cluster.pods_of(WORKERS)
    assert len(after) == 3
    assert not before & {pod.name for pod in after}, "scaled back up: new pods"


def test_only_the_plans_deployments_scale(cluster: KubeCluster) -> None:
    with pytest.raises(KubeError, match="Deployments only"):
        cluster.scale(BROKERS, 1)
    with pytest.raises(KubeError, match="Deployments only"):
        cluster.scale("Deployment/nope", 1)
    with pytest.raises(KubeError, match="-1 replicas"):
        cluster.scale(WORKERS, -1)
    assert len(cluster.pods_of(BROKERS)) == 3


def test_stopping_leaves_nothing_behind(cluster: KubeCluster) -> None:
    """Last in the module, on the module's own cluster (booting a second one cost ~50 s of every
    ``make test``); ``stop`` is idempotent, so the fixture's own stop afterwards is a no-op."""
    cluster.wait_ready(300, BROKERS)
    pids = [p.worker.main_pid for p in cluster.pods_of(BROKERS) if p.worker is not None]
    cluster.stop()
    assert cluster.namespace_prefix
    left = [ns for ns in netns.existing_namespaces() if ns.startswith(cluster.namespace_prefix)]
    assert left == [], f"namespaces left behind: {left}"
    assert len(pids) == 3
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists(), f"container process {pid} outlived the cluster"
