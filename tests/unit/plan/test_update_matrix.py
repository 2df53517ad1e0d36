"""The update matrix: every routine `pulumi up` after the first, as plan-diff decides it (issue 23).

Each case plans the dev stack twice (before, after the change) under mocks and runs plan/diff.py.
A routine change must replace nothing stateful (StatefulSet, StorageClass, cluster, node pool,
registry) nor the worker Deployment; a workload's pods roll exactly when the case says, and never
keep a changed ConfigMap/Secret they mount without rolling. The disk-kind change must replace, and
plan-diff must say so.

Before the fixes of cloud review 3, finding 1, seven of these cases replaced the StatefulSet (a
fixed-name immutable ConfigMap or Secret deleted first, and the engine's cascade through the
StatefulSet's spec): brokerMemoryMiB, brokerReplicas 3->5, TLS on, TLS off, a password rotation,
a certificate renewal and a CA rotation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from plan.diff import REPLACE, REPLACING, SAME, UPDATE, Plan, Step, diff_plans, stateful_losses

ROOT = Path(__file__).resolve().parents[3]
STATEFULSET = "rabbitmq-statefulset"
DEPLOYMENT = "celery-deployment"
CLUSTER_TYPES = ("gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool")
CODE_CHANGE = "code"
"""A case option: plan the new side from a copy of the tree with one app/ file changed."""


@dataclass(frozen=True)
class Case:
    name: str
    base: tuple[str, ...] = ()
    """--set of the deployed plan (dev's stack file otherwise)."""
    new: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    """As `pulumi up --replace`: type::name, or a name only one resource has."""
    broker_rolls: bool = False
    workers_roll: bool = False
    code: bool = False

    @property
    def base_job(self) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        return (self.base, (), False)

    @property
    def new_job(self) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        return (self.new or self.base, self.replace, self.code)


TLS = ("brokerTls=true",)
ROUTINE = [
    pytest.param(Case("brokerMemoryMiB", new=("brokerMemoryMiB=1536",), broker_rolls=True)),
    pytest.param(Case("brokerCpuMillis", new=("brokerCpuMillis=750",), broker_rolls=True)),
    # The workers' broker list names every node: they roll to learn the two new ones.
    pytest.param(Case("brokerReplicas 3->5", new=("brokerReplicas=5",), broker_rolls=True, workers_roll=True)),
    pytest.param(Case("brokerImage patch", new=("brokerImage=rabbitmq:4.3.7-management",), broker_rolls=True)),
    pytest.param(Case("brokerTls on", new=TLS, broker_rolls=True, workers_roll=True)),
    pytest.param(
        Case("brokerTls off", base=TLS, new=("brokerTls=false",), broker_rolls=True, workers_roll=True),
    ),
    pytest.param(
        Case("role-password rotation", replace=("rabbitmq-worker-password",), broker_rolls=True, workers_roll=True),
    ),
    pytest.param(Case("node-certificate renewal", base=TLS, replace=("rabbitmq-0-cert",), broker_rolls=True)),
    pytest.param(
        Case("CA rotation", base=TLS, replace=("rabbitmq-ca-key",), broker_rolls=True, workers_roll=True),
    ),
    pytest.param(Case("worker code change", code=True, workers_roll=True)),
    # A rebuild pushes a new digest: the container image leaf changes, the fixed selector does not.
    pytest.param(
        Case("worker image rebuild", replace=("docker-build:index:Image::ha-celery-dev-worker",), workers_roll=True)
    ),
    pytest.param(Case("workerReplicas", new=("workerReplicas=5",))),
    pytest.param(Case("workerConcurrency", new=("workerConcurrency=4",), workers_roll=True)),
    pytest.param(Case("autoscaling hpa", new=("autoscaling=hpa",))),
    pytest.param(Case("autoscaling keda", new=("autoscaling=keda",))),
]
DISK_KIND = Case("brokerStorage disk kind", new=("brokerStorage=ssd",))
CONFIG_CHANGE = Case("brokerMemoryMiB", new=("brokerMemoryMiB=1536",))
COOKIE = Case("erlang-cookie rotation", replace=("random:index/randomPassword:RandomPassword::rabbitmq-erlang-cookie",))


def _code_changed_tree(into: Path) -> Path:
    """A copy of the program with one app/ file changed: the worker image's tag follows its content."""
    skip = shutil.ignore_patterns(".venv", ".git", "build", "tests", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, into, ignore=skip, symlinks=True)
    tasks = into / "app" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n# a worker code change (tests/unit/plan/test_update_matrix.py)\n")
    return into


def _plan(job: tuple[tuple[str, ...], tuple[str, ...], bool], out: Path) -> Plan:
    sets, replace, code = job
    tree = _code_changed_tree(out / "tree") if code else ROOT
    args = [sys.executable, "-m", "plan", "--stack", "dev", "--out", str(out)]
    args += [a for kv in sets for a in ("--set", kv)] + [a for n in replace for a in ("--replace", n)]
    done = subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"plan {job} failed: {done.stderr}"
    return Plan.load(out / "dev")


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan]:
    """Every plan the cases need, built once, two at a time (each is a Python process importing the SDKs)."""
    cases = [p.values[0] for p in ROUTINE if isinstance(p.values[0], Case)] + [DISK_KIND, CONFIG_CHANGE, COOKIE]
    jobs = sorted({job for case in cases for job in (case.base_job, case.new_job)})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {job: pool.submit(_plan, job, tmp_path_factory.mktemp("matrix")) for job in jobs}
        return {job: future.result() for job, future in futures.items()}


def _steps(case: Case, plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan]) -> dict[str, Step]:
    steps = diff_plans(plans[case.base_job], plans[case.new_job], case.replace)
    return {s.name: s for s in steps}


def _explain(steps: dict[str, Step]) -> Iterator[str]:
    for s in steps.values():
        if s.step != SAME:
            yield f"{s.step} {s.type} {s.name}: {'; '.join(s.reasons)}"


@pytest.mark.parametrize("case", ROUTINE, ids=lambda c: c.name)
def test_routine_change_replaces_nothing_and_rolls_what_it_must(
    case: Case, plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan]
) -> None:
    steps = _steps(case, plans)
    story = "\n".join(_explain(steps))
    assert stateful_losses(steps.values()) == [], f"{case.name}: stateful replacement\n{story}"
    for name in (STATEFULSET, DEPLOYMENT):
        assert steps[name].step in (SAME, UPDATE), f"{case.name}: {name} is {steps[name].step}\n{story}"
    for s in steps.values():
        if s.type in CLUSTER_TYPES:
            assert s.step == SAME, f"{case.name}: {s.type} {s.name} is {s.step}\n{story}"
    for name, expected in ((STATEFULSET, case.broker_rolls), (DEPLOYMENT, case.workers_roll)):
        step = steps[name]
        assert step.rolls is expected, f"{case.name}: {name} rolls={step.rolls}, expected {expected}\n{story}"
        # Pods that mount a changed ConfigMap/Secret must roll, or they keep the old files until a restart.
        assert step.rolls or not step.mounts_changed, f"{case.name}: {name} mounts {step.mounts_changed}\n{story}"


def test_disk_kind_change_is_reported_as_a_replacement(
    plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan],
) -> None:
    steps = _steps(DISK_KIND, plans)
    statefulset = steps[STATEFULSET]
    assert statefulset.step in REPLACING, "\n".join(_explain(steps))
    assert any("volumeClaimTemplates" in r for r in statefulset.reasons), statefulset.reasons
    assert STATEFULSET in {s.name for s in stateful_losses(steps.values())}
    assert stateful_losses(steps.values(), allow=[STATEFULSET, "rabbitmq-storage"]) == []


def test_a_config_change_updates_the_config_map_and_the_statefulset_in_place(
    plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan],
) -> None:
    """The review's finding 1, fixed: the Kubernetes provider has enableConfigMapMutable and the
    StatefulSet depends on the ConfigMap by an ordering edge only, so a config change updates both in
    place (the rule that would replace them still holds for others: tests/unit/plan/test_diff.py,
    test_an_immutable_fixed_name_config_map_replaces_a_dependent_whose_force_new_spec_uses_it)."""
    steps = _steps(CONFIG_CHANGE, plans)
    story = "\n".join(_explain(steps))
    assert steps["rabbitmq-config"].step == UPDATE, story
    assert steps[STATEFULSET].step == UPDATE, story


def test_an_erlang_cookie_rotation_updates_the_secret_named_like_the_password(
    plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Plan],
) -> None:
    """`--replace` names one resource: the RandomPassword, not the Secret of the same logical name."""
    steps = {s.key: s for s in diff_plans(plans[COOKIE.base_job], plans[COOKIE.new_job], COOKIE.replace)}
    story = "\n".join(_explain(steps))
    assert steps[COOKIE.replace[0]].step == REPLACE, story
    assert steps["kubernetes:core/v1:Secret::rabbitmq-erlang-cookie"].step == UPDATE, story
    statefulset = steps[f"kubernetes:apps/v1:StatefulSet::{STATEFULSET}"]
    assert statefulset.step == UPDATE, story
    assert 'annotations["ha-celery/credentials-sha256"]' in statefulset.reasons[0], story
