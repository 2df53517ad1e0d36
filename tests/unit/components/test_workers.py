"""CeleryWorkers in each stack's plan: probes, pinned image, secrets, grace, spread, PDB, Job, autoscaling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

from contract import lanes, metrics, timing, wire
from contract.wire import CLIENT_LABEL, Autoscaling
from tests.conftest import Plan
from tests.unit.components.test_cloud import one, registered

STATEFULSET = "kubernetes:apps/v1:StatefulSet"


def deployment(plan: Plan, lane: str = lanes.DEFAULT_LANE) -> dict[str, Any]:
    """The lane's worker Deployment (one per lane, by its fixed name)."""
    found = [d for d in plan.objects("Deployment") if d["metadata"]["name"] == lanes.deployment_name(lane)]
    assert len(found) == 1, f"{plan.stack}: one worker Deployment for lane {lane}"
    return found[0]


def worker(plan: Plan, lane: str = lanes.DEFAULT_LANE) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment(plan, lane)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_command_is_celery_worker_in_exec_form(plan: Plan) -> None:
    command = worker(plan)["command"]
    assert command[0] == "celery", "celery must be PID 1 to receive SIGTERM"
    assert "worker" in command
    assert "sh" not in command
    assert "-c" not in command


def test_image_by_digest(plan: Plan) -> None:
    image = worker(plan)["image"]
    assert "@sha256:" in image, image
    assert ":latest" not in image
    assert image.startswith("us-east1-docker.pkg.dev/")


def test_credentials_only_from_the_secret(plan: Plan) -> None:
    env = {e["name"]: e for e in worker(plan)["env"]}
    secret_name = "rabbitmq-worker-user"
    assert secret_name in {s["metadata"]["name"] for s in plan.objects("Secret")}
    for key in ("BROKER_USER", "BROKER_PASSWORD"):
        assert "value" not in env[key], f"{key} must not be a literal"
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    hosts = env["BROKER_HOSTS"]["value"].split(",")
    assert len(hosts) == 3
    assert all(h.startswith("rabbitmq-") and ".rabbitmq-nodes." in h for h in hosts), "one URL per broker pod"


def test_probes_use_the_heartbeat_file(plan: Plan) -> None:
    container = worker(plan)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "app.health"], probe
        assert "inspect" not in command


def test_grace_period_covers_the_longest_task(plan: Plan) -> None:
    grace = deployment(plan)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 60
    assert grace > timing.TASK_TIME_LIMIT_S > timing.TASK_SOFT_TIME_LIMIT_S


def test_non_root_read_only_with_writable_tmp(plan: Plan) -> None:
    spec = deployment(plan)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    container = worker(plan)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_metrics_port_is_named_and_counted_across_the_pool(plan: Plan) -> None:
    """The scrape objects select the port by name; the prefork children write where the main process serves."""
    container = worker(plan)
    assert {
        "name": metrics.WORKER_METRICS_PORT_NAME,
        "containerPort": metrics.WORKER_METRICS_PORT,
        "protocol": "TCP",
    } in (container["ports"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[metrics.ENV_METRICS_PORT] == str(metrics.WORKER_METRICS_PORT)
    multiproc = env[metrics.ENV_MULTIPROC_DIR]
    assert multiproc is not None
    assert multiproc.startswith("/tmp/"), f"{multiproc}: the only writable place is the /tmp emptyDir"


def test_spread_over_nodes_and_zones(plan: Plan) -> None:
    keys = {c["topologyKey"] for c in deployment(plan)["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_replicas_and_resources_per_stack(plans: dict[str, Plan]) -> None:
    assert deployment(plans["prod"])["spec"]["replicas"] >= 3
    assert worker(plans["prod"])["resources"]["limits"]["memory"] == "512Mi"
    env = {e["name"]: e.get("value") for e in worker(plans["prod"])["env"]}
    assert env["WORKER_CONCURRENCY"] == "4"


@pytest.mark.parametrize(("stack", "memory_mib", "concurrency"), [("dev", 256, 2), ("prod", 512, 4)])
def test_pool_recycling_follows_the_memory_limit(
    plans: dict[str, Plan], stack: str, memory_mib: int, concurrency: int
) -> None:
    container = worker(plans[stack])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["resources"]["limits"]["memory"] == f"{memory_mib}Mi"
    per_child = int(env["WORKER_MAX_MEMORY_PER_CHILD_KIB"])
    assert per_child == wire.max_memory_per_child_kib(memory_mib, concurrency)
    # What the pool may reach before recycling, plus the main process and a full /tmp, fits the limit
    # (each pool process's resident size counts the pages it shares with the main process).
    shared = wire.WORKER_MAIN_PROCESS_MIB * 1024
    assert shared + concurrency * (per_child - shared) + wire.WORKER_TMP_MIB * 1024 < memory_mib * 1024
    volume = deployment(plans[stack])["spec"]["template"]["spec"]["volumes"][0]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{wire.WORKER_TMP_MIB}Mi"}


def test_workers_may_reach_the_broker(plan: Plan) -> None:
    labels = deployment(plan)["spec"]["template"]["metadata"]["labels"]
    assert labels["ha-celery/broker-client"] == "true", "the broker NetworkPolicy admits only labelled pods"


def test_worker_pdb(plan: Plan) -> None:
    pdbs = [p for p in plan.objects("PodDisruptionBudget") if p["metadata"]["name"] == "celery-worker"]
    assert len(pdbs) == 1
    assert pdbs[0]["spec"]["selector"] == deployment(plan)["spec"]["selector"]


def test_scheduler_job_in_dev_only(plans: dict[str, Plan]) -> None:
    [job] = plans["dev"].objects("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "app.scheduler"]
    assert container["command"][-1] == "10000"
    assert job["spec"]["template"]["metadata"]["labels"]["ha-celery/broker-client"] == "true"
    assert not plans["prod"].objects("Job")


def test_scheduler_job_runs_once_per_run_id_not_per_deploy(plans: dict[str, Plan]) -> None:
    """A deploy changes the Job's image, and a Job's template is force-new: that must not re-run it."""
    [job] = plans["dev"].objects("Job")
    assert job["metadata"]["name"] == "celery-scheduler-1", "the run id names the Job: a new id, a new run"
    assert "ttlSecondsAfterFinished" not in job["spec"], "a garbage-collected Job is re-created after a refresh"
    [registration] = [r for r in registered().values() if r.type == "kubernetes:batch/v1:Job"]
    assert registration.name.endswith("-scheduler-1"), "a new id must be a new resource, built from current inputs"
    assert registration.ignore_changes == ("spec",), "a new image must not replace (re-run) the finished Job"


@pytest.mark.parametrize("run", ["", "Run_2", "-2", "x" * 33])
def test_scheduler_run_id_must_fit_the_job_name(run: str) -> None:
    from components.workers import CeleryWorkersArgs
    from contract.lanes import Lane, default_timing

    with pytest.raises(ValueError, match="scheduler_run"):
        CeleryWorkersArgs(
            namespace="ns",
            image="img",
            broker_hosts=[],
            broker_port=5672,
            credentials_secret="s",
            scheduler_credentials_secret="s2",
            management_url="u",
            lanes=(Lane("default", 1, 1, 100, 128, 1, default_timing("default")),),
            scheduler_enabled=True,
            scheduler_tasks=1,
            autoscaling=Autoscaling.NONE,
            scheduler_run=run,
        )


def test_workers_and_scheduler_wait_for_the_brokers() -> None:
    """Pulumi awaits the StatefulSet's readiness; whatever connects to it is created after."""
    graph = registered()
    brokers = (STATEFULSET, one(graph, STATEFULSET).name)
    for token in ("ha-celery:index:CeleryWorkers", "kubernetes:batch/v1:Job"):
        resource = one(graph, token)
        assert brokers in resource.dependencies, f"{token} {resource.name} starts before the brokers exist"
    deployments = [r for r in graph.values() if r.type == "kubernetes:apps/v1:Deployment"]
    assert len(deployments) == 2, "one per lane of the dev stack"
    for resource in deployments:
        assert brokers in resource.dependencies, f"{resource.name} starts before the brokers exist"


def _labelled(obj: dict[str, Any], path: str = "") -> list[str]:
    """Paths of every `labels` map in the object that carries the broker-client label."""
    found: list[str] = []
    for key, value in obj.items():
        here = f"{path}.{key}" if path else key
        if key == "labels" and isinstance(value, dict) and CLIENT_LABEL in value:
            found.append(here)
        elif isinstance(value, dict):
            found += _labelled(value, here)
    return found


def test_only_pods_that_reach_the_broker_carry_the_client_label(
    plans: dict[str, Plan], plan_runner: Callable[..., CompletedProcess[str]]
) -> None:
    """The label opens the broker's NetworkPolicy: on a Secret or a ScaledObject it means nothing, on
    a pod template it is a permission. Only the worker and scheduler pods need it."""
    directories = [p.directory for p in plans.values()]
    directories += [_plan_with(plan_runner, "autoscaling=keda", "autoscalingMaxReplicas=12")]
    directories += [_plan_with(plan_runner, "autoscaling=hpa")]
    for directory in directories:
        for path in sorted((directory / "kubernetes").glob("*.yaml")):
            obj = yaml.safe_load(path.read_text())
            where = _labelled(obj)
            if (obj["kind"], obj["metadata"]["name"]) in {
                ("Deployment", "celery-worker"),
                ("Deployment", "celery-worker-long"),
                ("Job", "celery-scheduler-1"),
            }:
                assert where == ["spec.template.metadata.labels"], f"{path.name}: on the pods only, got {where}"
            else:
                assert where == [], f"{directory.name}/{path.name}: {where} must not carry {CLIENT_LABEL}"


def test_a_retried_scheduler_job_publishes_the_same_task_ids(plans: dict[str, Plan]) -> None:
    """The run id is the Job's UID, which every pod (every retry) of the Job carries as a label."""
    [job] = plans["dev"].objects("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    [run_id] = [e for e in container["env"] if e["name"] == "SCHEDULER_RUN_ID"]
    assert run_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/controller-uid']"


def _plan_with(runner: Callable[..., CompletedProcess[str]], *overrides: str) -> Path:
    done = runner("dev", *overrides)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.split("-> ")[-1].strip())


def _objects(directory: Path, kind: str) -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((directory / "kubernetes").glob("*.yaml"))]
    return [d for d in docs if d["kind"] == kind]


def test_keda_autoscaling(plan_runner: Callable[..., CompletedProcess[str]]) -> None:
    out = _plan_with(plan_runner, "autoscaling=keda", "autoscalingMaxReplicas=12")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in _objects(out, "ScaledObject")}
    assert set(scaled) == {"celery-worker", "celery-worker-long"}, "one per lane"
    assert scaled["celery-worker"]["spec"]["maxReplicaCount"] == 12
    assert scaled["celery-worker-long"]["spec"]["maxReplicaCount"] == 1, "another lane grows only when told"
    for name, queue, target in (("celery-worker", "celery", "20"), ("celery-worker-long", "celery.long", "16")):
        [trigger] = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["protocol"] == "http", "http counts unacked tasks too"
        assert (trigger["metadata"]["queueName"], trigger["metadata"]["value"]) == (queue, target)
    assert len(_objects(out, "TriggerAuthentication")) == 2
    assert not _objects(out, "HorizontalPodAutoscaler")
    secrets = [s for s in _objects(out, "Secret") if "keda" in s["metadata"]["name"]]
    assert len(secrets) == 2
    for secret in secrets:
        assert secret["stringData"] == {"host": "[secret]"}, "the management URL carries the password"


def test_hpa_autoscaling(plan_runner: Callable[..., CompletedProcess[str]]) -> None:
    out = _plan_with(plan_runner, "autoscaling=hpa")
    hpas = _objects(out, "HorizontalPodAutoscaler")
    assert sorted((h["spec"]["scaleTargetRef"] for h in hpas), key=str) == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        for name in ("celery-worker", "celery-worker-long")
    ]
    assert not _objects(out, "ScaledObject")


def test_no_autoscaler_by_default(plan: Plan) -> None:
    assert not plan.objects("HorizontalPodAutoscaler")
    assert not plan.objects("ScaledObject")


def test_a_new_scheduler_run_setting_names_a_new_job(plan_runner: Callable[..., CompletedProcess[str]]) -> None:
    """`pulumi config set schedulerRun 2 && pulumi up` publishes the batch again, once."""
    [job] = _objects(_plan_with(plan_runner, "schedulerRun=2"), "Job")
    assert job["metadata"]["name"] == "celery-scheduler-2"


def test_workers_leave_a_lost_node_after_30s_not_the_default_300s(plan: Plan) -> None:
    tolerations = {t["key"]: t for t in deployment(plan)["spec"]["template"]["spec"]["tolerations"]}
    assert set(tolerations) == {timing.NODE_UNREACHABLE_TAINT, timing.NODE_NOT_READY_TAINT}
    for toleration in tolerations.values():
        assert (toleration["effect"], toleration["operator"]) == ("NoExecute", "Exists")
        assert 0 < toleration["tolerationSeconds"] == timing.WORKER_NODE_TOLERATION_S < timing.DEFAULT_TOLERATION_S
    assert "priorityClassName" not in deployment(plan)["spec"]["template"]["spec"], "workers are the ones preempted"
