"""Issue 28's settings cases: each refused naming the setting and the allowed values, or accepted
for a stated reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import settings
from contract import machines
from plan.__main__ import stack_config
from settings import PROJECT, SettingsError

ROOT = Path(__file__).resolve().parents[3]
DEV: dict[str, str] = {"location": "us-east1-c"}
PROD: dict[str, str] = {
    "environment": "prod",
    "location": "us-east1",
    "nodeZones": '["us-east1-b", "us-east1-c", "us-east1-d"]',
}


def parse(base: dict[str, str], **values: str) -> settings.Settings:
    return settings.parse("test", {**base, **values}, "my-project-1")


def refused(base: dict[str, str], **values: str) -> list[str]:
    with pytest.raises(SettingsError) as error:
        parse(base, **values)
    return error.value.problems


# --- values as `pulumi config set` stores them ----------------------------------------------------


def test_set_values_are_strings_with_the_schemas_type() -> None:
    config = stack_config("dev", ["kubernetesVersion=1.30", "maintenanceWindow=13:00", "schedulerRun=007"])
    assert config[f"{PROJECT}:kubernetesVersion"] == "1.30"
    assert config[f"{PROJECT}:maintenanceWindow"] == "13:00"
    s = settings.parse("dev", {k: v for k, v in config.items() if k.startswith(PROJECT)}, "my-project-1")
    assert (s.cluster.kubernetes_version, s.cluster.maintenance_window) == ("1.30", "13:00")
    assert s.workers.scheduler_run == "007"


@pytest.mark.parametrize("value", ["yes", "no", "on", "True", "1", "y", ""])
def test_a_boolean_is_true_or_false_only(value: str) -> None:
    if value == "":
        # Empty means unset: the default applies (documented in docs/deploy.md).
        config = stack_config("dev", [f"spotNodes={value}"])
        assert f"{PROJECT}:spotNodes" not in config
        return
    assert refused(DEV, spotNodes=value)[0].startswith(f"{PROJECT}:spotNodes: got {value!r}; allowed: true | false")


@pytest.mark.parametrize("value", ["1e3", "3.0", " 3", "+3", "٣", "0x3", "\uff13", "3\n", "1" * 19, "NaN", "Infinity"])
def test_an_integer_is_ascii_digits(value: str) -> None:
    problem = refused(DEV, nodeCount=value)[0]
    assert problem.startswith(f"{PROJECT}:nodeCount: got {value!r}; allowed: a whole number >= 1"), problem


def test_empty_means_unset_not_the_string_null() -> None:
    config = stack_config("dev", ["prometheusNamespace=", "brokerStorage="])
    assert f"{PROJECT}:prometheusNamespace" not in config
    assert f"{PROJECT}:brokerStorage" not in config  # the stack file's "standard" is unset: Pulumi.yaml's default
    s = settings.parse("dev", {k: v for k, v in config.items() if k.startswith(PROJECT)}, "my-project-1")
    assert s.network.metrics_namespaces == ("gmp-system",)


@pytest.mark.parametrize("value", ["[", "*a", "&a [1]", "{a: [", "- a\n- b", "!!python/object:os.system x"])
def test_broken_yaml_through_set_never_reaches_a_yaml_parser(value: str) -> None:
    config = stack_config("dev", [f"brokerReplicas={value}", f"opsNamespace={value}", f"nodeZones={value}"])
    assert config[f"{PROJECT}:brokerReplicas"] == value
    problems = refused(DEV, brokerReplicas=value, opsNamespace=value, nodeZones=value)
    assert [p.split(": got ")[0] for p in problems] == [
        f"{PROJECT}:nodeZones",
        f"{PROJECT}:brokerReplicas",
        f"{PROJECT}:opsNamespace",
    ], problems


def test_an_alias_bomb_through_set_is_a_string() -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"a{i}: &a{i} [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n" for i in range(9))
    config = stack_config("dev", [f"opsNamespace={bomb}"])
    assert config[f"{PROJECT}:opsNamespace"] == bomb
    problem = refused(DEV, opsNamespace=bomb)[0]
    assert problem.startswith(f"{PROJECT}:opsNamespace: got 'a: &a [x,x,x,"), problem
    assert len(problem) < 400


# --- anchored patterns, length limits, bounded output -------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("brokerImage", "rabbitmq:4.3.6-management\n"),
        ("kubernetesVersion", "1.35\n"),
        ("maintenanceWindow", "03:00\n"),
        ("location", "us-east1-c\n"),
        ("machineType", "e2-standard-2\n"),
        ("opsNamespace", "ha-celery\n"),
        ("schedulerRun", "1\n"),
    ],
)
def test_a_trailing_newline_is_refused(key: str, value: str) -> None:
    assert refused(DEV, **{key: value})[0].startswith(f"{PROJECT}:{key}: got {value!r}")


def test_a_long_value_is_refused_and_never_echoed_whole() -> None:
    machine = "e2-" + "x" * 5000
    problem = refused(DEV, machineType=machine)[0]
    assert problem.startswith(f"{PROJECT}:machineType: got 'e2-xxx"), problem
    assert problem.endswith("... (4925 more characters); allowed: at most 4096 characters"), problem
    assert "a predefined machine type" in refused(DEV, machineType="e2-" + "x" * 300)[0]
    huge = "x" * (1 << 20)
    with pytest.raises(SettingsError) as error:
        parse(DEV, opsNamespace=huge)
    message = str(error.value)
    assert f"at most {settings.MAX_VALUE_CHARS} characters" in message
    assert len(message) < 1000
    image = "gcr.io/" + "a/" * 130 + "rabbitmq:4.3.6"
    assert refused(DEV, brokerImage=image)[0].endswith(f"at most {settings.MAX_IMAGE_CHARS} characters")


def test_many_problems_are_listed_up_to_a_bound() -> None:
    raw = {**DEV, **{f"unknownKey{i}": "x" * 10_000 for i in range(500)}}
    with pytest.raises(SettingsError) as error:
        settings.parse("test", raw, "my-project-1")
    assert len(error.value.problems) == 500
    assert str(error.value).endswith(f"... and {500 - settings.MAX_PROBLEMS_SHOWN} more problems")
    assert len(str(error.value)) < 100_000


# --- maxima that mean something ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "key", "value", "allowed"),
    [
        (DEV, "nodeCount", "1001", "<= 1000 (GKE's limit of 1000 nodes per node pool and zone)"),
        (PROD, "nodeCount", "3003", "<= 3000"),
        (DEV, "nodeDiskSizeGb", "1000000000", "<= 65536 (64 TiB, the largest disk)"),
        (DEV, "brokerStorageGi", "1000000000", "<= 65536 (64 TiB, the largest persistent disk)"),
        (DEV, "schedulerTasks", "1000000001", "<= 1000000 (the scheduler Job's 3600 s deadline"),
        (DEV, "brokerReplicas", "1000001", "fewer pods, or more or bigger nodes"),
        (DEV, "workerReplicas", "1000000000", "fewer pods, or more or bigger nodes"),
        (DEV, "brokerMemoryMiB", "16384", "<= 6249: one e2-standard-2 node leaves 1930m CPU and 6249 MiB"),
        (DEV, "brokerCpuMillis", "2000", "<= 1930: one e2-standard-2 node"),
        (DEV, "workerMemoryMiB", "8192", "<= 6249"),
        (DEV, "workerCpuMillis", "4000", "<= 1930"),
    ],
)
def test_every_number_has_a_maximum(base: dict[str, str], key: str, value: str, allowed: str) -> None:
    problem = next(p for p in refused(base, **{key: value}) if p.startswith(f"{PROJECT}:{key}: "))
    assert allowed in problem, problem


def test_all_pods_together_must_fit_the_nodes() -> None:
    # 7 brokers of 1 GiB and 10 workers of 1.5 GiB: each fits an e2-standard-2, not all on three.
    problem = refused(DEV, brokerReplicas="7", workerMemoryMiB="1536", workerReplicas="10")[0]
    assert problem.startswith(f"{PROJECT}:workerReplicas: got 10; allowed: fewer pods"), problem
    assert "3 x e2-standard-2 leave 5790m, 18747 MiB" in problem
    # With autoscaling, the maximum is what must fit.
    problem = refused(DEV, autoscaling="hpa", autoscalingMaxReplicas="40")[0]
    assert problem.startswith(f"{PROJECT}:autoscalingMaxReplicas: got 40"), problem
    assert parse(DEV, autoscaling="hpa", autoscalingMaxReplicas="12").workers.autoscaling_max_replicas == 12


def test_gke_allocatable_matches_the_documented_examples() -> None:
    # plan-node-sizes' worked examples: e2-standard-2 (2 vCPU, 8 GiB) keeps 1930m CPU; memory
    # reserves 25% of 4 GiB + 20% of 4 GiB, plus the 100 MiB eviction threshold.
    e2 = machines.machine_type("e2-standard-2")
    assert e2 is not None
    assert (e2.allocatable_cpu_millis, e2.allocatable_memory_mib) == (1930, 8192 - 1024 - 819 - 100)
    n2 = machines.machine_type("n2-standard-32")
    assert n2 is not None
    assert n2.allocatable_cpu_millis == 32000 - 60 - 10 - 10 - 70  # 0.25% of 28 cores
    assert machines.machine_type("e2-standard-3") is None
    assert machines.machine_type("e2-medium") is None


@pytest.mark.parametrize("machine", ["e2-standard-3", "e2-medium", "n1-standard-4", "E2-STANDARD-2", "e2-standard"])
def test_machine_types_come_from_the_table(machine: str) -> None:
    problem = refused(DEV, machineType=machine)[0]
    allowed = "allowed: a predefined machine type: e2-"
    assert problem.startswith(f"{PROJECT}:machineType: got {machine!r}; {allowed}"), problem


# --- settings agree with the policy pack --------------------------------------------------------


@pytest.mark.parametrize("replicas", ["1", "2"])
def test_what_the_pack_refuses_settings_refuse_first(replicas: str) -> None:
    # broker-replicas-odd refuses fewer than 3 on every stack, dev included.
    assert refused(DEV, brokerReplicas=replicas)[0].startswith(
        f"{PROJECT}:brokerReplicas: got {replicas}; allowed: an odd number >= 3"
    )


def test_prod_deletion_protection_off_is_accepted_for_a_planned_destroy() -> None:
    """The one thing the pack refuses that settings accept, on purpose: docs/deploy.md's destroy
    runs `pulumi up` with deletionProtection false (without --policy-pack) before `pulumi destroy`."""
    assert not parse(PROD, deletionProtection="false").cluster.deletion_protection


# --- misspelt namespaces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("hacelery:brokerReplicas", "(did you mean ha-celery:brokerReplicas?)"),
        ("ha_celery:brokerReplicas", "(did you mean ha-celery:brokerReplicas?)"),
        ("ha-celeri:brokerReplica", "(did you mean ha-celery:brokerReplicas?)"),
        ("gpc:project", "(did you mean gcp:project?)"),
        ("zzz:thing", ": ha-celery, gcp,"),
    ],
)
def test_a_misspelt_namespace_is_refused_with_did_you_mean(key: str, hint: str) -> None:
    problem = refused(DEV, **{key: "5"})[0]
    assert problem.startswith(f"{key}: got '5'; allowed: a key of the namespaces the program reads"), problem
    assert hint in problem, problem


def test_other_namespaces_pass() -> None:
    assert parse(DEV, **{"gcp:region": "us-east1", "kubernetes:context": "x", "pulumi:tags": "{}"})


# --- the plan CLI ---------------------------------------------------------------------------------


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plan", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_plan_cli_refuses_by_name_without_a_traceback(tmp_path: Path) -> None:
    done = _plan("--stack", "dev", "--out", str(tmp_path), "--set", "spotNodes=yes", "--set", "hacelery:x=1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{PROJECT}:spotNodes: got 'yes'; allowed: true | false" in done.stderr
    assert "hacelery:x: got '1'; allowed: a key of the namespaces the program reads (did you mean" in done.stderr
    assert not any(tmp_path.iterdir()), "a refused plan writes nothing"


def test_plan_cli_names_a_missing_stack_and_a_bad_set() -> None:
    done = _plan("--stack", "../etc/passwd")
    assert done.returncode == 1
    assert "plan: no stack file Pulumi.../etc/passwd.yaml; stacks: dev, prod" in done.stderr
    done = _plan("--stack", "dev", "--set", "=3")
    assert done.returncode == 1
    assert "plan: --set takes key=value, got '=3'" in done.stderr, done.stderr


def test_every_value_is_json_safe_for_the_settings_file() -> None:
    # settings.json is written from the parsed settings: a value that passes is plain data.
    s = parse(DEV, maintenanceWindow="13:00", kubernetesVersion="1.34")
    assert json.loads(json.dumps(settings_dict(s)))["cluster"]["maintenance_window"] == "13:00"


def settings_dict(s: settings.Settings) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(s)
