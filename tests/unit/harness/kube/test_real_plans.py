"""The real ha-celery plans (dev and prod) load with zero refused fields, and run end to end in the model."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography import x509

from drill.plan_secrets import ha_celery_rules
from harness.kube.cluster import plan_nodes
from harness.kube.env import PodFacts, expand_command, resolve_env
from harness.kube.fields import audit, format_deltas
from harness.kube.objects import load_objects, load_plan
from harness.kube.schedule import Node, PlacedPod, schedule
from harness.kube.secretfill import fill_secrets, rules_generator
from harness.kube.volumes import VolumeStore, container_mounts
from harness.kube.workloads import PodState, eviction_allowed, statefulset_pod_fqdn, statefulset_pod_names
from tests.conftest import Plan

EXPECTED_DELTA_KINDS = {
    "image",
    "requests.cpu",
    "requests.memory",
    "seccompProfile.type",
    "emptyDir.sizeLimit",
    "accessModes[0]",
    "requests.storage",
    "storageClassName",
    "ttlSecondsAfterFinished",
    "spec.*",
    "spec.type",
    "provisioner",
    "parameters.*",
    "reclaimPolicy",
    "volumeBindingMode",
    "allowVolumeExpansion",
    "priorityClassName",
    "value",
    "preemptionPolicy",
}


def test_zero_refused_fields_and_deltas_listed(plan_dir: Path) -> None:
    refused = [r for obj in load_objects(plan_dir) for r in audit(obj)[1]]
    assert refused == []
    plan = load_plan(plan_dir)
    assert [s.name for s in plan.statefulsets] == ["rabbitmq"]
    assert sorted(d.name for d in plan.deployments) == ["celery-worker", "celery-worker-long"], "one per lane"
    assert plan.network_policies
    assert plan.storage_classes
    assert plan.namespaces
    seen = {k for d in plan.deltas for k in EXPECTED_DELTA_KINDS if d.path.endswith(k)}
    unexpected = [d.path for d in plan.deltas if not any(d.path.endswith(k) for k in EXPECTED_DELTA_KINDS)]
    assert unexpected == []
    assert {"image", "seccompProfile.type", "storageClassName", "emptyDir.sizeLimit", "spec.*"} <= seen
    # Enforced (harness.kube.limits): none may come back as a delta.
    assert not [d.path for d in plan.deltas if d.path.endswith(("limits.memory", "limits.cpu", "emptyDir.medium"))]
    table = format_deltas(plan.deltas).splitlines()
    assert table[0] == f"{len(plan.deltas)} delta(s) between the plan and the local run:"
    assert len(table) == 1 + 3 * len(plan.deltas), "each delta: its path, the local behaviour and why"


def test_broker_pod_end_to_end(plan_dir: Path, tmp_path: Path) -> None:
    plan = fill_secrets(load_plan(plan_dir), rules_generator(ha_celery_rules(random.Random(3))))
    sts = plan.statefulsets[0]
    assert statefulset_pod_names(sts) == ["rabbitmq-0", "rabbitmq-1", "rabbitmq-2"]
    spec = sts.template.spec
    c = spec.containers[0]
    env = resolve_env(c, PodFacts("rabbitmq-1", sts.namespace), secrets=plan.secrets, configmaps=plan.configmaps)
    assert env["RABBITMQ_NODENAME"] == "rabbit@" + statefulset_pod_fqdn(sts, 1)
    assert env["K8S_HOSTNAME_SUFFIX"] == ".rabbitmq-nodes.ha-celery.svc.cluster.local"
    assert c.readiness_probe is not None
    tls = plan.secret("rabbitmq-tls") is not None
    assert tls == (plan_dir.name == "prod"), "brokerTls: on in prod, off in dev"
    # The node's own Prometheus listener, plain HTTP whether AMQP is TLS or not: a frozen broker never answers it.
    probe = c.readiness_probe
    assert (probe.kind, probe.port, probe.path, probe.initial_delay_seconds) == (
        "httpGet",
        15692,
        "/metrics/detailed",
        0,
    )
    assert c.post_start is not None
    assert c.pre_stop is not None
    assert spec.termination_grace_period_seconds == 600
    calls: list[Path] = []
    store = VolumeStore(tmp_path, chown=lambda p, _u, _g: calls.append(p))
    paths = store.materialise(
        spec, "uid", secrets=plan.secrets, configmaps=plan.configmaps, claims=store.claims_for(sts, 1)
    )
    conf = (paths["rabbitmq-confd-source"] / "30-default-user.conf").read_text()
    user = plan.secret("rabbitmq-default-user")
    assert user is not None
    assert conf == f"default_user = celery\ndefault_pass = {user.data['password'].decode()}\n"
    assert len((paths["erlang-cookie-secret"] / ".erlang.cookie").read_text()) == 64
    mounts = container_mounts(c, spec, paths)
    order = [m.container_path for m in mounts]
    assert order.index("/var/lib/rabbitmq") < order.index("/var/lib/rabbitmq/mnesia")
    assert mounts[-1].container_path == "/var/lib/rabbitmq/mnesia"
    assert mounts[-1].host_path == tmp_path / "claims" / "persistence-rabbitmq-1"
    init = spec.init_containers[0]
    init_mounts = {m.container_path: m.read_only for m in container_mounts(init, spec, paths)}
    assert init_mounts == {
        "/tmp/erlang-cookie-secret": True,
        "/var/lib/rabbitmq": False,
        "/var/lib/rabbitmq/mnesia": False,
        "/etc/ha-celery/conf.d": True,
        "/etc/rabbitmq/conf.d": False,
        **({"/etc/ha-celery/tls": True, "/etc/rabbitmq/tls": False} if tls else {}),
    }
    if tls:
        # The init container finds this pod's pair, made by the local CA for this pod's name.
        files = paths["tls-secret"]
        ca = x509.load_pem_x509_certificate((files / "ca.crt").read_bytes())
        cert = x509.load_pem_x509_certificate((files / "rabbitmq-1.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert names[:2] == [statefulset_pod_fqdn(sts, 1), "rabbitmq.ha-celery.svc.cluster.local"]
        assert "PRIVATE KEY" in (files / "rabbitmq-1.key").read_text()


def test_worker_env_and_command(plan_dir: Path) -> None:
    plan = fill_secrets(load_plan(plan_dir), rules_generator(ha_celery_rules()))
    w = plan.deployments[0].template.spec.containers[0]
    env = resolve_env(w, PodFacts("celery-worker-x-y", "ha-celery"), secrets=plan.secrets)
    assert env["BROKER_USER"] == "celery-worker"
    assert env["BROKER_HOSTS"].split(",")[0] == "rabbitmq-0.rabbitmq-nodes.ha-celery.svc.cluster.local"
    assert expand_command(w, env)[0][:3] == ["celery", "-A", "app.celery_app"]
    assert w.startup_probe is not None
    assert (w.startup_probe.period_seconds, w.startup_probe.failure_threshold) == (5, 24)


def test_broker_placement_on_three_local_nodes(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    sts = plan.statefulsets[0]
    nodes = [Node.make("node-a", "zone-a"), Node.make("node-b", "zone-b"), Node.make("node-c", "zone-c")]
    placed: list[PlacedPod] = []
    for name in statefulset_pod_names(sts):
        p = schedule(sts.namespace, sts.template.labels, sts.template.spec, nodes, placed)
        assert p.node is not None, p.reason
        placed.append(
            PlacedPod(name, sts.namespace, sts.template.labels, p.node, sts.template.spec.anti_affinity_required)
        )
    assert sorted(p.node for p in placed) == ["node-a", "node-b", "node-c"]
    # A fourth broker: prod refuses to double up (required anti-affinity), dev doubles up.
    p = schedule(sts.namespace, sts.template.labels, sts.template.spec, nodes, placed)
    assert (p.node is None) == (plan_dir.name == "prod")


def test_broker_pdb_allows_one_drain_at_a_time(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    pdb = next(p for p in plan.pdbs if p.name == "rabbitmq")
    labels = dict(plan.statefulsets[0].template.labels)
    all_ready = [PodState(f"rabbitmq-{i}", labels) for i in range(3)]
    assert eviction_allowed(pdb, all_ready, "rabbitmq-0", expected=3)[0]
    one_down = [PodState("rabbitmq-0", labels, ready=False), *all_ready[1:]]
    assert not eviction_allowed(pdb, one_down, "rabbitmq-1", expected=3)[0]


def test_the_stack_nodes_come_from_the_plan_settings(plans: dict[str, Plan]) -> None:
    dev = plan_nodes(plans["dev"].directory)
    prod = plan_nodes(plans["prod"].directory)
    assert len(dev) == 3
    assert len({n.labels["topology.kubernetes.io/zone"] for n in dev}) == 1, "dev is a zonal cluster"
    assert len(prod) == 3
    assert len({n.labels["topology.kubernetes.io/zone"] for n in prod}) == 3, "prod has one node per zone"
