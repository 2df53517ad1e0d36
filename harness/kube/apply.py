"""Apply a second plan to a running pod-runner cluster the way the Pulumi engine would: step by step.

The steps come from plan-diff (``build/plan-diff/steps.json``): ``[{"type", "name", "step",
"reasons", "object"}]`` in the engine's order, ``object`` being ``Kind/namespace/name`` (``Kind/name``
for cluster-scoped kinds) for a Kubernetes object and null otherwise. This module decides nothing
about *which* step a resource takes: it carries each one out on the pod runner.

* ``same``: nothing.
* ``update`` / ``create``: the object as the new plan has it is written to the API server
  (:meth:`KubeCluster.set_objects`); its controller rolls the pods per its strategy
  (``harness.kube.rollout``), and the step waits as pulumi-kubernetes' await logic does:
  a StatefulSet or Deployment until every pod runs the new template and is Ready
  (``provider/pkg/await``: ``statefulset.go``, ``deployment.go``), other kinds not at all.
* ``delete``: the object is removed; a workload's pods are deleted by the garbage collector
  (foreground propagation, pulumi-kubernetes' default) and the step waits until they are gone; a
  StatefulSet with ``persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`` loses its claims.
* ``replace`` / ``delete-before-replace``: delete, then create. pulumi-kubernetes replaces an
  object with a user-set name delete-before-replace (two objects cannot share a name); a
  ``replace`` step on such an object is carried out the same way, and said so in the result.

A step with no Kubernetes object (a random password, a certificate, a cloud resource) has nothing
to apply here: its effect reaches the cluster through the objects whose values it feeds, and the
new plan's masked Secret values are regenerated exactly for the Secrets whose step changes them
(the others keep the running cluster's values: an unchanged RandomPassword keeps its result).

Differences from a real ``pulumi up`` are returned with the results: the engine runs independent
steps in parallel (here one after the other, each awaited), and the kubelet rewrites mounted
ConfigMap/Secret files within its sync period (about a minute; here at once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Protocol

from harness.kube.fields import Delta
from harness.kube.objects import Plan, PodSpec, StatefulSet, load_plan
from harness.kube.rollout import PodView, deployment_rolled_out, stale_uses, statefulset_rolled_out
from harness.kube.secretfill import Generator, fill_secrets
from harness.runtime.poll import poll

STEP_KINDS: Final = ("same", "update", "replace", "delete-before-replace", "create", "delete")
"""The steps plan-diff writes (the engine's ``same``, ``update``, ``replace``, ``create``, ``delete``;
``delete-before-replace`` is a replace whose old object goes first)."""
CHANGING: Final = frozenset({"update", "replace", "delete-before-replace", "create"})
AWAIT_S: Final = 600.0
"""pulumi-kubernetes' default await timeout for a StatefulSet or Deployment update (10 minutes)."""

_FIELDS: Final = {
    "StatefulSet": "statefulsets",
    "Deployment": "deployments",
    "Job": "jobs",
    "Service": "services",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "PodDisruptionBudget": "pdbs",
    "Namespace": "namespaces",
    "NetworkPolicy": "network_policies",
    "StorageClass": "storage_classes",
    "PriorityClass": "priority_classes",
    "HorizontalPodAutoscaler": "autoscalers",
    "ScaledObject": "autoscalers",
    "TriggerAuthentication": "autoscalers",
    "PodMonitoring": "monitoring",
    "Rules": "monitoring",
    "PodMonitor": "monitoring",
    "PrometheusRule": "monitoring",
}
"""Kind -> the Plan list that holds its objects (``harness.kube.objects.add_object``'s table)."""


class ApplyError(ValueError):
    """A steps file or a step the pod runner cannot carry out; the message names it."""


@dataclass(frozen=True)
class Step:
    """One step of plan-diff's list."""

    type: str
    name: str
    step: str
    reasons: tuple[str, ...] = ()
    object: str | None = None

    @property
    def label(self) -> str:
        return f"{self.step} {self.object or f'{self.type} {self.name}'}"


def parse_steps(raw: object, source: str = "steps") -> list[Step]:
    """plan-diff's JSON list as Steps; ApplyError naming the entry and the allowed values otherwise."""
    if not isinstance(raw, list):
        raise ApplyError(f"{source}: expected a list of steps, got {type(raw).__name__}")
    out: list[Step] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not {"type", "name", "step"} <= entry.keys():
            raise ApplyError(f"{source}[{i}]: each step needs type, name and step: {entry!r}")
        if entry["step"] not in STEP_KINDS:
            raise ApplyError(f"{source}[{i}]: step {entry['step']!r} is not one of {', '.join(STEP_KINDS)}")
        obj = entry.get("object")
        if obj is not None and (not isinstance(obj, str) or obj.count("/") not in (1, 2)):
            raise ApplyError(f"{source}[{i}]: object {obj!r} is not Kind/namespace/name or Kind/name")
        reasons = tuple(str(r) for r in entry.get("reasons") or ())
        out.append(Step(str(entry["type"]), str(entry["name"]), str(entry["step"]), reasons, obj))
    return out


def load_steps(path: Path) -> list[Step]:
    """The steps file plan-diff writes (``build/plan-diff/steps.json``)."""
    if not path.is_file():
        raise ApplyError(f"no steps file {path}: run `make plan-diff` (or pass one with --steps)")
    return parse_steps(json.loads(path.read_text()), str(path))


def object_ref(step: Step) -> tuple[str, str]:
    """(kind, name) of a step's Kubernetes object."""
    if step.object is None:
        raise ApplyError(f"{step.label}: no Kubernetes object")
    parts = step.object.split("/")
    kind, name = parts[0], parts[-1]
    if kind not in _FIELDS:
        raise ApplyError(f"{step.label}: kind {kind!r} is not one the pod runner holds ({', '.join(sorted(_FIELDS))})")
    return kind, name


def _name_of(obj: Any) -> str:
    return str(obj["metadata"]["name"]) if isinstance(obj, dict) else str(obj.name)


def _kind_of(obj: Any, kind: str) -> bool:
    return not isinstance(obj, dict) or obj.get("kind") == kind


def find(plan: Plan, kind: str, name: str) -> Any | None:
    """The object ``kind``/``name`` of ``plan``, None if absent."""
    items: list[Any] = getattr(plan, _FIELDS[kind])
    return next((o for o in items if _kind_of(o, kind) and _name_of(o) == name), None)


def with_object(plan: Plan, kind: str, obj: Any) -> Plan:
    """``plan`` with ``obj`` put in (replacing an object of the same kind and name)."""
    name = _name_of(obj)
    items: list[Any] = getattr(plan, _FIELDS[kind])
    kept = [o for o in items if not (_kind_of(o, kind) and _name_of(o) == name)]
    return replace(plan, **{_FIELDS[kind]: [*kept, obj]})


def without_object(plan: Plan, kind: str, name: str) -> Plan:
    """``plan`` without the object ``kind``/``name``."""
    items: list[Any] = getattr(plan, _FIELDS[kind])
    return replace(plan, **{_FIELDS[kind]: [o for o in items if not (_kind_of(o, kind) and _name_of(o) == name)]})


def copy_plan(plan: Plan) -> Plan:
    """A copy whose lists are new (the objects themselves are immutable or never mutated)."""
    return replace(plan, **{f.name: list(getattr(plan, f.name)) for f in fields(Plan)})


def carry_secrets(new: Plan, running: Plan, steps: Sequence[Step], generator: Generator) -> Plan:
    """The new plan with every masked Secret value filled: from the running cluster when that Secret's
    step keeps it, freshly generated when its step changes it (a rotated password) or it is new."""
    changing = set()
    for step in steps:
        if step.object is not None and step.step in CHANGING and object_ref(step)[0] == "Secret":
            changing.add(object_ref(step)[1])
    by_name = {s.name: s for s in running.secrets}
    carried = []
    for secret in new.secrets:
        old = by_name.get(secret.name)
        if old is None or secret.name in changing:
            carried.append(secret)
            continue
        keep = {k for k in secret.masked if k in old.data}
        data = {**secret.data, **{k: old.data[k] for k in keep}}
        carried.append(replace(secret, data=data, masked=secret.masked - keep))
    return fill_secrets(replace(new, secrets=carried), generator)


class Cluster(Protocol):
    """What applying needs of the pod runner (``harness.kube.cluster.KubeCluster``)."""

    @property
    def plan(self) -> Plan: ...

    @property
    def secret_generator(self) -> Generator: ...

    def set_objects(self, plan: Plan) -> set[tuple[str, str]]: ...

    def owner_views(self, owner: str, template: Any) -> list[PodView]: ...

    def delete_claims(self, sts: StatefulSet) -> list[str]: ...

    def pod_specs(self) -> dict[str, tuple[str, PodSpec]]: ...


@dataclass(frozen=True)
class Applied:
    """What one step did on the pod runner."""

    step: Step
    started: float
    seconds: float
    action: str
    differences: tuple[Delta, ...] = ()


@dataclass
class Applier:
    """Carries out steps on ``cluster`` towards ``target`` (the new plan, its Secrets filled)."""

    cluster: Cluster
    target: Plan
    timeout: float = AWAIT_S
    on_wait: Callable[[str], None] = field(default=lambda _: None)
    _exposed: dict[str, tuple[str, PodSpec, set[tuple[str, str]]]] = field(default_factory=dict)
    """Pod uid -> (name, spec, the ConfigMaps and Secrets that changed while it ran)."""

    @classmethod
    def towards(cls, cluster: Cluster, new_plan_dir: Path, steps: Sequence[Step], timeout: float = AWAIT_S) -> Applier:
        """An applier towards the plan in ``new_plan_dir``, its masked values filled (:func:`carry_secrets`)."""
        return cls(
            cluster, carry_secrets(load_plan(new_plan_dir), cluster.plan, steps, cluster.secret_generator), timeout
        )

    def stale(self) -> dict[str, list[str]]:
        """Pods still running that keep old data of a ConfigMap or Secret changed while they ran
        (``harness.kube.rollout.stale_uses``): what a step should have rolled and did not."""
        now = self.cluster.pod_specs()
        out: dict[str, list[str]] = {}
        for uid, (name, spec, changed) in sorted(self._exposed.items(), key=lambda kv: kv[1][0]):
            uses = stale_uses(spec, changed) if uid in now else []
            if uses:
                out[name] = uses
        return out

    def _write(self, plan: Plan) -> None:
        changed = self.cluster.set_objects(plan)
        if not changed:
            return
        for uid, (name, spec) in self.cluster.pod_specs().items():
            self._exposed.setdefault(uid, (name, spec, set()))[2].update(changed)

    def apply(self, step: Step) -> Applied:
        started = time.time()
        action, differences = self._carry_out(step)
        return Applied(step, started, time.time() - started, action, tuple(differences))

    def _carry_out(self, step: Step) -> tuple[str, list[Delta]]:
        if step.object is None:
            return "no Kubernetes object: its effect is in the objects' new values", []
        if step.step == "same":
            return "unchanged", []
        kind, name = object_ref(step)
        if step.step in ("update", "create"):
            return self._put(kind, name), self._differences(step, kind)
        if step.step == "delete":
            return self._delete(kind, name), []
        gone = self._delete(kind, name)
        made = self._put(kind, name)
        differences = self._differences(step, kind)
        if step.step == "replace":
            differences.append(
                Delta(
                    step.object,
                    "replace",
                    "create the new object, then delete the old",
                    "deleted, then created",
                    "one name cannot be two objects: pulumi-kubernetes replaces a user-named object "
                    "delete-before-replace, so plan-diff should have said so",
                )
            )
        return f"{gone}; {made}", differences

    def _put(self, kind: str, name: str) -> str:
        obj = find(self.target, kind, name)
        if obj is None:
            raise ApplyError(f"{kind}/{name}: not in the new plan")
        self._write(with_object(copy_plan(self.cluster.plan), kind, obj))
        if kind in ("StatefulSet", "Deployment"):
            owner = f"{kind}/{name}"
            self.on_wait(f"{owner}: awaiting the rollout")
            done = statefulset_rolled_out if kind == "StatefulSet" else deployment_rolled_out
            poll(
                lambda: done(obj, self.cluster.owner_views(owner, obj.template)),
                self.timeout,
                f"{owner} rolled out (every pod at the new template and Ready)",
                interval=0.5,
            )
            return f"{owner} written and rolled out"
        return f"{kind}/{name} written"

    def _delete(self, kind: str, name: str) -> str:
        old = find(self.cluster.plan, kind, name)
        if old is None:
            return f"{kind}/{name} was not there"
        self._write(without_object(copy_plan(self.cluster.plan), kind, name))
        if kind not in ("StatefulSet", "Deployment"):
            return f"{kind}/{name} deleted"
        owner = f"{kind}/{name}"
        self.on_wait(f"{owner}: deleting its pods (foreground)")
        poll(lambda: not self.cluster.owner_views(owner, None), self.timeout, f"{owner}'s pods gone", interval=0.5)
        if isinstance(old, StatefulSet) and not old.retain_when_deleted:
            claims = self.cluster.delete_claims(old)
            return f"{owner} deleted with its pods; claims deleted (whenDeleted: Delete): {', '.join(claims) or '-'}"
        return f"{owner} deleted with its pods"

    def _differences(self, step: Step, kind: str) -> list[Delta]:
        assert step.object is not None
        if kind == "Job":
            return [Delta(step.object, "spec", "run the Job", "written, not run", "the pod runner runs no Job")]
        if _FIELDS[kind] == "monitoring":
            return [
                Delta(
                    step.object,
                    "spec",
                    "the managed collector reloads the rules",
                    "written; the drill's Prometheus keeps the rules it booted with",
                    "the drill's Prometheus is configured once, at boot (drill.observe)",
                )
            ]
        if kind not in ("ConfigMap", "Secret"):
            return []
        return [
            Delta(
                step.object,
                "mounted files",
                "rewritten by the kubelet within its sync period (about a minute)",
                "rewritten at once",
                "the pod runner applies an object's data to the running pods when it is written",
            )
        ]


def apply_plan(
    cluster: Cluster,
    new_plan_dir: Path,
    steps: Sequence[Step],
    *,
    on_step: Callable[[Step], None] = lambda _: None,
    timeout: float = AWAIT_S,
    done: list[Applied] | None = None,
) -> list[Applied]:
    """Apply ``steps`` towards the plan in ``new_plan_dir``, in order, each awaited; returns what each did
    (appended to ``done`` as they finish, so a failed step leaves the ones before it on record)."""
    applier = Applier.towards(cluster, new_plan_dir, steps, timeout)
    done = [] if done is None else done
    for step in steps:
        on_step(step)
        done.append(applier.apply(step))
    return done


SEQUENTIAL = Delta(
    "steps",
    "order",
    "independent steps run in parallel (the engine's default parallelism)",
    "one after the other, each awaited",
    "a rollout is judged step by step; a parallel engine can only overlap them more",
)
