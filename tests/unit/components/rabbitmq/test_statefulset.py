"""The broker StatefulSet and its StorageClass: identity, claims, and the options that keep
`pulumi up` from replacing it."""

from __future__ import annotations

import re

from tests.conftest import Plan
from tests.unit.components.rabbitmq.helpers import (
    STATEFULSET,
    Registered,
    broker_container,
    component,
    duration_s,
    get,
    only,
    pod,
    put,
    statefulset,
)


def test_storage_class_per_stack(plans: dict[str, Plan]) -> None:
    expected = {"prod": ("pd-ssd", "Retain"), "dev": ("pd-standard", "Delete")}
    for stack, (disk, reclaim) in expected.items():
        sc = plans[stack].object("StorageClass")
        assert sc["provisioner"] == "pd.csi.storage.gke.io"
        assert sc["parameters"] == {"type": disk}, stack
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
        assert sc["allowVolumeExpansion"] is True
        assert sc["reclaimPolicy"] == reclaim, stack
        claim = statefulset(plans[stack])["spec"]["volumeClaimTemplates"][0]["spec"]
        assert claim["storageClassName"] == sc["metadata"]["name"]


def test_statefulset_identity_and_scaling(plan: Plan) -> None:
    sts = statefulset(plan)
    assert sts["metadata"]["name"] == "rabbitmq", "a fixed name: node identities derive from it"
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # Claims outlive the StatefulSet in every stack: a replacement nobody asked for (a disk kind
    # change, `--replace`) must find the queues again. Dev's destroy deletes them with the
    # namespace, and its StorageClass then the disks; prod keeps its disks on purpose.
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain", plan.stack
    expected = "Retain" if plan.stack == "prod" else "Delete"
    assert plan.object("StorageClass")["reclaimPolicy"] == expected, plan.stack
    headless = [s for s in plan.objects("Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    assert spec["serviceName"] == headless[0]["metadata"]["name"]
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True


def test_growing_the_disks_does_not_replace_the_statefulset() -> None:
    from components.rabbitmq.statefulset import STORAGE_REQUEST_PATH

    before, after = component(storage_gi=10), component(storage_gi=20)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {(STATEFULSET, "rabbitmq-statefulset")}
    old, new = before[(STATEFULSET, "rabbitmq-statefulset")], after[(STATEFULSET, "rabbitmq-statefulset")]
    assert STORAGE_REQUEST_PATH in new.ignore_changes
    assert (get(old.inputs, STORAGE_REQUEST_PATH), get(new.inputs, STORAGE_REQUEST_PATH)) == ("10Gi", "20Gi")
    # What the engine does with ignore_changes: the old value goes back into the new inputs. The
    # provider replaces a StatefulSet on any change to these fields; none may be left.
    put(new.inputs, STORAGE_REQUEST_PATH, get(old.inputs, STORAGE_REQUEST_PATH))
    for force_new in ("spec.volumeClaimTemplates", "spec.selector", "spec.serviceName"):
        assert get(old.inputs, force_new) == get(new.inputs, force_new), force_new
    assert old.inputs == new.inputs


def test_await_timeouts_cover_the_brokers_own_budgets(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    """Pulumi's default 10 min await must not cut a rollout whose pods may each take the grace period."""
    timeouts = {k: duration_s(v) for k, v in only(options[plan.stack], STATEFULSET).timeouts.items()}
    spec = statefulset(plan)["spec"]
    grace = pod(plan)["terminationGracePeriodSeconds"]
    pre_stop = " ".join(broker_container(plan)["lifecycle"]["preStop"]["exec"]["command"])
    waits = [int(w) for w in pre_stop.split() if w.isdigit()]
    assert sum(waits) + 60 <= grace, f"{plan.stack}: preStop may wait {sum(waits)} s of a {grace} s grace period"
    deadline = r"deadline=\$\(\( \$\(date \+%s\) \+ (\d+) \)\)"
    [boot] = re.findall(deadline, broker_container(plan)["lifecycle"]["postStart"]["exec"]["command"][-1])
    [seed_wait] = re.findall(deadline, pod(plan)["initContainers"][0]["command"][-1])
    start = int(seed_wait) + int(boot)
    assert timeouts["create"] >= start, plan.stack
    # Rolling, one pod at a time: each stops (up to the grace period) and boots again.
    assert timeouts["update"] >= spec["replicas"] * (grace + start), plan.stack
    assert timeouts["delete"] >= grace, plan.stack


def test_immutable_storage_class_fields_replace_it(
    plan: Plan, options: dict[str, dict[tuple[str, str], Registered]]
) -> None:
    sc = only(options[plan.stack], "kubernetes:storage.k8s.io/v1:StorageClass")
    assert set(sc.replace_on_changes) == {"reclaimPolicy", "volumeBindingMode"}
    assert set(sc.replace_on_changes) <= set(plan.object("StorageClass")), "names of real fields"
    assert sc.delete_before_replace, "fixed name: the old class must be deleted before the new one exists"
