"""ha-celery's plan variants (keda, hpa, mirrored image), generated into a temp dir: zero refusals.

Built by the session's plan fixtures into temporary directories, never read from build/plan/.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from drill.plan_secrets import ha_celery_rules
from harness.kube.env import PodFacts, resolve_env
from harness.kube.objects import load_plan
from harness.kube.secretfill import fill_secrets, rules_generator

VARIANTS: dict[str, tuple[str, ...]] = {
    "keda": ("autoscaling=keda", "autoscalingMaxReplicas=12"),
    "hpa": ("autoscaling=hpa",),
    "mirror": ("mirrorRabbitmqImage=true",),
}


@pytest.fixture(scope="session")
def variant_dirs(plan_runner: Callable[..., subprocess.CompletedProcess[str]]) -> dict[str, Path]:
    """Every variant's plan directory (built with the session's other plans); fails with the plan's stderr."""
    dirs: dict[str, Path] = {}
    for name, overrides in VARIANTS.items():
        result = plan_runner("dev", *overrides)
        if result.returncode != 0:
            pytest.fail(f"plan variant {name} failed:\n{result.stderr[-2000:]}")
        dirs[name] = Path(result.stdout.split("-> ")[-1].strip())
    return dirs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_loads_with_zero_refusals(variant_dirs: dict[str, Path], variant: str) -> None:
    plan = load_plan(variant_dirs[variant])
    kinds = sorted(o["kind"] for o in plan.autoscalers)
    # One autoscaler per lane (dev: default and long).
    want = {
        "keda": ["ScaledObject", "ScaledObject", "TriggerAuthentication", "TriggerAuthentication"],
        "hpa": ["HorizontalPodAutoscaler", "HorizontalPodAutoscaler"],
        "mirror": [],
    }
    assert kinds == want[variant]
    if variant == "mirror":
        image = plan.statefulsets[0].template.spec.containers[0].image
        assert "/rabbitmq:" in image
        assert "@sha256:" in image


def test_keda_reads_as_the_monitoring_user_and_the_workers_as_the_worker_user(variant_dirs: dict[str, Path]) -> None:
    plan = fill_secrets(load_plan(variant_dirs["keda"]), rules_generator(ha_celery_rules(random.Random(5))))
    monitoring = plan.secret("rabbitmq-monitoring-user")
    worker = plan.secret("rabbitmq-worker-user")
    keda = plan.secret("celery-worker-keda-rabbitmq")
    assert monitoring is not None
    assert worker is not None
    assert keda is not None
    password = monitoring.data["password"].decode()
    assert keda.data["host"].decode() == (
        f"http://celery-monitoring:{password}@rabbitmq.ha-celery.svc.cluster.local:15672/"
    )
    w = next(d for d in plan.deployments if d.name == "celery-worker").template.spec.containers[0]
    env = resolve_env(w, PodFacts("w", "ha-celery"), secrets=plan.secrets)
    assert (env["BROKER_USER"], env["BROKER_PASSWORD"]) == ("celery-worker", worker.data["password"].decode())
