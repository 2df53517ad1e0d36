"""Each resource's step on `pulumi up`, decided from two offline plans as the engine and providers would.

Pure: two plan directories (resources.json + engine.json, written by `python -m plan`) in, steps out.
No pulumi import, so the drills may use it. The rules and their sources are in plan/rules.py.

What it emulates (pulumi/pulumi step_generator.go, pulumi-kubernetes provider.go/diff.go):
1. The engine substitutes the old value of every `ignore_changes` path (processIgnoreChanges), asks the
   provider's Diff, then turns changes under `replace_on_changes` into replacements (applyReplaceOnChanges).
2. The provider's Diff: a change under a force-new field replaces. pulumi-kubernetes asks for
   delete-before-replace when the object has a user-set metadata.name that stays the same; the
   `delete_before_replace` option overrides the provider either way.
3. A delete-before-replace deletes first every dependent that "would be replaced": the engine walks the old
   plan's dependents, makes each input property that depends on a condemned resource unknown and asks the
   provider's Diff again (calculateDependentReplacements). For a Kubernetes object an unknown property
   deletes each of its live keys in the merge patch, so any force-new field under it replaces.
4. A resource whose provider is replaced is replaced. A replaced random/tls resource generates new values,
   and a docker-build Image named by --replace pushes a new digest; the new plan shows them (plan.mocks
   REPLACED_MARK), so their dependents change by value. Other replaced resources (a GKE cluster) have
   outputs the plan cannot predict: in the resource's own diff a scalar property fed by them is unknown;
   a structured one is compared by value (the plan cannot say which of its leaves they feed).
5. REPLACE and ALLOW name one resource each, as `--replace <urn>` does (resolve).

Not emulated: server-side defaults (the plans hold inputs, not live objects), early renewal by the clock
(use REPLACE on the certificate), docker-build's own Diff (the Image is treated as update-in-place).

Order of the steps: dependency order of the new plan (a resource after what it depends on), then the
deleted resources, dependents first. `operations()` expands that into the engine's sequence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from contract.plan_dir import IncompletePlanError, check_complete
from plan.rules import (
    KUBERNETES_PROVIDER_REPLACE_KEYS,
    STATEFUL_KINDS,
    STATEFUL_TYPES,
    KubernetesProviderOptions,
    Pattern,
    covers,
    format_path,
    kubernetes_force_new,
    lookup,
    parse_path,
    replaces_on,
)
from plan.rules import (
    Path as PropertyPath,
)

SAME = "same"
UPDATE = "update"
REPLACE = "replace"
"""Create-before-delete: the new resource is created, dependents updated, the old one deleted at the end."""
DELETE_BEFORE_REPLACE = "delete-before-replace"
CREATE = "create"
DELETE = "delete"
STEPS = (SAME, UPDATE, REPLACE, DELETE_BEFORE_REPLACE, CREATE, DELETE)
REPLACING = frozenset({REPLACE, DELETE_BEFORE_REPLACE})

KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"
PREDICTED_PREFIXES = ("random:", "tls:", "kubernetes:")
"""Replaced resources whose new outputs the new plan shows (generated values: plan.mocks REPLACED_MARK;
Kubernetes objects: their inputs)."""
REBUILT = "docker-build:index:Image"
"""Shows its new digest too when `--replace` names it (plan.mocks): a rebuild pushes a new one."""
WORKLOAD_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet"})


class PlanError(ValueError):
    """A plan directory that cannot be compared (missing files, unknown names)."""


# --- reading plans --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    inputs: Mapping[str, Any]
    engine: Mapping[str, Any]
    """engine.json's entry: dependencies, propertyDependencies, options, secretHashes."""

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"

    @property
    def custom(self) -> bool:
        return bool(self.engine.get("custom", True))

    @property
    def kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")

    @property
    def kind(self) -> str:
        return str(self.inputs.get("kind", "")) if self.kubernetes else ""

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.inputs.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def object(self) -> str | None:
        """`Kind/namespace/name` of a Kubernetes object (`Kind/name` when cluster-scoped), else None."""
        if not self.kubernetes:
            return None
        meta = self.metadata
        parts = (self.kind, meta.get("namespace"), meta.get("name", self.name))
        return "/".join(str(p) for p in parts if p)

    @property
    def stateful(self) -> bool:
        return self.type in STATEFUL_TYPES or self.kind in STATEFUL_KINDS

    def depends_on(self) -> set[str]:
        """Everything the engine's DependencyGraph counts (dependencies, property deps, provider, deletedWith)."""
        deps = set(self.engine.get("dependencies", ()))
        for urns in self.engine.get("propertyDependencies", {}).values():
            deps.update(urns)
        for key in ("provider", "deletedWith"):
            if self.engine.get(key):
                deps.add(self.engine[key])
        return deps

    def property_dependencies(self) -> Mapping[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.engine.get("propertyDependencies", {}).items()}

    def paths(self, option: str) -> tuple[PropertyPath, ...]:
        return tuple(parse_path(p) for p in self.engine.get(option, ()))


@dataclass(frozen=True)
class Plan:
    directory: Path
    resources: Mapping[str, Resource]

    @classmethod
    def load(cls, directory: Path) -> Plan:
        """A plan directory as `python -m plan` writes it (build/plan/<stack>)."""
        try:
            check_complete(directory)
        except IncompletePlanError as error:
            raise PlanError(str(error)) from error
        files = {name: directory / f"{name}.json" for name in ("resources", "engine")}
        engine = {f"{e['type']}::{e['name']}": e for e in json.loads(files["engine"].read_text())}
        resources = {}
        for r in json.loads(files["resources"].read_text()):
            key = f"{r['type']}::{r['name']}"
            resources[key] = Resource(r["type"], r["name"], r["inputs"], engine.get(key, {}))
        return cls(directory, resources)

    def kubernetes_options(self, resource: Resource) -> KubernetesProviderOptions:
        provider = self.resources.get(str(resource.engine.get("provider")))
        return KubernetesProviderOptions.from_inputs(provider.inputs if provider else {})

    def object(self, kind: str, namespace: str | None, name: str) -> Resource | None:
        for r in self.resources.values():
            meta = r.metadata
            if r.kind == kind and meta.get("name") == name and meta.get("namespace") in (None, namespace):
                return r
        return None


def dependency_order(plan: Plan) -> list[str]:
    """Keys such that each comes after everything it depends on (and its parent); ties by key."""
    deps = {
        k: {d for d in r.depends_on() | {str(r.engine.get("parent"))} if d in plan.resources and d != k}
        for k, r in plan.resources.items()
    }
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = sorted(k for k, ds in deps.items() if k not in done and ds <= done)
        if not ready:  # a cycle cannot be registered; keep going rather than loop
            ready = sorted(k for k in deps if k not in done)[:1]
        order.extend(ready)
        done.update(ready)
    return order


def resolve(selectors: Iterable[str], keys: Iterable[str], setting: str) -> frozenset[str]:
    """The `type::name` keys the selectors name, as `pulumi up --replace <urn>` names one resource.

    A selector is `type::name` (a URN's tail, e.g. `random:index/randomPassword:RandomPassword::pw`) or
    a bare name that exactly one of `keys` (custom resources) has. A bare name shared by two resources
    (a Secret and the RandomPassword it holds) is refused with the candidates, never applied to both."""
    known = sorted(set(keys))
    chosen: set[str] = set()
    for selector in selectors:
        if "::" in selector:
            candidates = [selector] if selector in known else []
        else:
            candidates = [k for k in known if k.rsplit("::", 1)[1] == selector]
        if not candidates:
            raise PlanError(f"{setting}: no resource named {selector} (give type::name, or a name one resource has)")
        if len(candidates) > 1:
            raise PlanError(
                f"{setting}: {selector} names {len(candidates)} resources; give one: {', '.join(candidates)}"
            )
        chosen.add(candidates[0])
    return frozenset(chosen)


# --- changes between two sets of inputs -------------------------------------------------------------

ChangeKind = Literal["add", "delete", "update", "unknown"]


@dataclass(frozen=True)
class Change:
    path: PropertyPath
    kind: ChangeKind
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        return f"{format_path(self.path)} ({self.kind})"


def value_changes(old: Any, new: Any, path: PropertyPath = ()) -> Iterator[Change]:
    """Leaf-level differences, lists compared element by element (the provider's addPatchArrayToDiff)."""
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in sorted(set(old) | set(new), key=str):
            if k not in old:
                yield Change((*path, k), "add", None, new[k])
            elif k not in new:
                yield Change((*path, k), "delete", old[k], None)
            else:
                yield from value_changes(old[k], new[k], (*path, k))
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            if i >= len(old):
                yield Change((*path, i), "add", None, new[i])
            elif i >= len(new):
                yield Change((*path, i), "delete", old[i], None)
            else:
                yield from value_changes(old[i], new[i], (*path, i))
    else:
        yield Change(path, "update", old, new)


def secret_changes(old: Resource, new: Resource) -> Iterator[Change]:
    """Masked secrets compare equal by value ("[secret]"); their hashes in engine.json do not."""
    a, b = old.engine.get("secretHashes", {}), new.engine.get("secretHashes", {})
    for path in sorted(set(a) & set(b)):
        if a[path] != b[path]:
            yield Change(parse_path(path), "update", "[secret]", "[secret]")


# --- what the provider's Diff says ----------------------------------------------------------------


def _ignored(resource: Resource, change: Change) -> bool:
    return any(covers(p, change.path) for p in resource.paths("ignoreChanges"))


def kubernetes_replace_reasons(changes: Iterable[Change], force_new: Iterable[Pattern]) -> list[str]:
    """convertPatchToDiff + PatchPropertiesChanged: a change at or under a force-new field, or a whole
    block added/removed that holds one."""
    fields = list(force_new)
    reasons = []
    for change in changes:
        for field_ in fields:
            inside = covers(field_, change.path)
            rest = field_[len(change.path) :]
            holds = (
                change.kind in ("add", "delete")
                and covers(change.path, tuple(field_))
                and (lookup(change.old, rest) or lookup(change.new, rest))
            )
            if inside or holds:
                reasons.append(f"{change} is under force-new .{format_path(field_)}")
                break
    return reasons


def replace_reasons(plan: Plan, resource: Resource, changes: list[Change]) -> list[str]:
    """Why the provider (or replace_on_changes) replaces the resource for these changes; [] for an update."""
    if resource.type == KUBERNETES_PROVIDER:
        reasons = [
            f"{c} replaces the provider (DiffConfig)" for c in changes if c.path[0] in KUBERNETES_PROVIDER_REPLACE_KEYS
        ]
        reasons += [
            f"{c}: an unknown kubeconfig replaces the provider (DiffConfig)"
            for c in changes
            if c.kind == "unknown" and c.path[0] in ("kubeconfig", "context", "cluster")
        ]
    elif resource.kubernetes:
        force_new = kubernetes_force_new(resource.inputs, plan.kubernetes_options(resource))
        reasons = kubernetes_replace_reasons(changes, force_new)
    else:
        reasons = [
            f"{c} is under force-new {', '.join(hits)}"
            for c in changes
            if (hits := replaces_on(resource.type, c.path, c.old, c.new))
        ]
    for c in changes:
        for p in resource.paths("replaceOnChanges"):
            if covers(p, c.path) or (c.kind == "unknown" and covers(c.path, p)):
                reasons.append(f"{c} is under replace_on_changes {format_path(p)}")
    return reasons


def unknown_changes(resource: Resource, keys: Iterable[str]) -> list[Change]:
    """The changes an unknown input property makes in the provider's Diff.

    pulumi-kubernetes keeps the Computed value in the object; the merge patch against the live object
    then nulls each of the property's live keys, and each is a DELETE (provider.go addPatchValueToDiff)."""
    changes: list[Change] = []
    for key in sorted(keys):
        value = resource.inputs.get(key)
        if resource.kubernetes and isinstance(value, Mapping) and value:
            changes += [Change((key, k), "unknown", v, None) for k, v in value.items()]
        else:
            changes.append(Change((key,), "unknown", value, None))
    return [c for c in changes if not _ignored(resource, c)]


def deletes_first(resource: Resource, provider_asks: bool) -> bool:
    option = resource.engine.get("deleteBeforeReplace")
    return bool(option) if option is not None else provider_asks


def kubernetes_asks_delete_first(old: Resource, new: Resource) -> bool:
    """provider.go Diff: replaced, named by the user (not autonamed) and the same name and namespace."""
    name = new.metadata.get("name")
    return (
        bool(name)
        and name == old.metadata.get("name")
        and new.metadata.get("namespace") == old.metadata.get("namespace")
    )


# --- the steps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    type: str
    name: str
    step: str
    reasons: tuple[str, ...]
    object: str | None
    stateful: bool = False
    rolls: bool | None = None
    """Workloads updated in place: whether the pod template changed (the controller rolls the pods)."""
    mounts_changed: tuple[str, ...] = ()
    """Workloads: the ConfigMaps/Secrets their pods mount or read that change in this update."""
    retained: bool = False
    """Deleted with retainOnDelete: the engine forgets it and leaves the object (and its data) in place."""

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"

    @property
    def destroys_state(self) -> bool:
        if self.step == DELETE:
            return self.stateful and not self.retained
        return self.stateful and self.step in REPLACING

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "step": self.step,
            "reasons": list(self.reasons),
            "object": self.object,
        }


@dataclass
class _Decision:
    step: str
    reasons: list[str] = field(default_factory=list)


class _Differ:
    def __init__(self, base: Plan, new: Plan, replace: frozenset[str]) -> None:
        self.base, self.new, self.replace = base, new, replace
        self.decisions: dict[str, _Decision] = {}
        self.forced: dict[str, list[str]] = {}
        """Dependents a delete-before-replace deletes first, with why."""

    def replaced(self) -> set[str]:
        return {k for k, d in self.decisions.items() if d.step in REPLACING} | set(self.forced)

    def run(self) -> None:
        for key in dependency_order(self.new):
            new = self.new.resources[key]
            old = self.base.resources.get(key)
            if not new.custom:
                continue
            if old is None:
                self.decisions[key] = _Decision(CREATE, ["not in the base plan"])
                continue
            decision = self.decide(old, new)
            self.decisions[key] = decision
            if decision.step == DELETE_BEFORE_REPLACE and key not in self.forced:
                self.cascade(key)
        # After the walk: the cascade follows the base plan's edges, so a dependent may come before its
        # root in the new plan's order (it no longer depends on it) and be decided before it is forced.
        for key, why in self.forced.items():
            if key in self.decisions:
                self.decisions[key] = _Decision(DELETE_BEFORE_REPLACE, why + self.decisions[key].reasons)

    def decide(self, old: Resource, new: Resource) -> _Decision:
        replaced = self.replaced()
        if new.engine.get("provider") in replaced:
            return _Decision(
                DELETE_BEFORE_REPLACE if deletes_first(new, False) else REPLACE,
                # step_generator.go diff(): a replaced provider is a replacement with no delete-first request.
                [f"its provider {new.engine['provider']} is replaced"],
            )
        changes = [
            c for c in [*value_changes(old.inputs, new.inputs), *secret_changes(old, new)] if not _ignored(new, c)
        ]
        changes += self.unpredictable_changes(new, replaced, changes)
        reasons = replace_reasons(self.new, new, changes)
        if new.key in self.replace:
            reasons.insert(0, "--replace names it (pulumi up --replace)")
        if reasons:
            first = deletes_first(new, new.kubernetes and kubernetes_asks_delete_first(old, new))
            if first and new.kubernetes and new.engine.get("deleteBeforeReplace") is None:
                reasons.append(f"fixed metadata.name {new.metadata.get('name')}: the provider deletes it first")
            elif first:
                reasons.append("delete_before_replace option")
            return _Decision(DELETE_BEFORE_REPLACE if first else REPLACE, reasons)
        if changes:
            shown = ", ".join(str(c) for c in changes[:4]) + (
                f" and {len(changes) - 4} more" if len(changes) > 4 else ""
            )
            return _Decision(UPDATE, [f"changed: {shown}"])
        return _Decision(SAME, [])

    def unpredictable_changes(self, new: Resource, replaced: set[str], changes: list[Change]) -> list[Change]:
        """Leaves fed by a replaced resource's outputs that the new plan cannot show (a new cluster's
        endpoint) are unknown; only the leaves: `up` computes the rest of the property as the plan shows it.

        A scalar property is itself the leaf. In a structured one (a Kubernetes spec) the plan does not say
        which leaves the outputs feed, so its values are compared as they are; whole-property unknowns are
        the engine's dependent-replacement pass (cascade), not the resource's own diff."""
        shown = {
            k for k in replaced if k.startswith(PREDICTED_PREFIXES) or (k in self.replace and k.startswith(REBUILT))
        }
        unpredictable = replaced - shown
        unknown = {
            k
            for k, deps in new.property_dependencies().items()
            if unpredictable & set(deps) and not isinstance(new.inputs.get(k), (Mapping, list))
        }
        return [c for c in unknown_changes(new, unknown) if all(c.path[0] != d.path[0] for d in changes)]

    def cascade(self, root: str) -> None:
        """calculateDependentReplacements over the base plan (the snapshot's dependency graph)."""
        replace_set = {root}
        dependents: set[str] = {root}
        for key in dependency_order(self.base):
            resource = self.base.resources[key]
            if key == root or not (resource.depends_on() & dependents):
                continue
            dependents.add(key)
            why = self.requires_replacement(resource, replace_set)
            if why:
                replace_set.add(key)
                # The engine's dependent replacement (pulumi/pulumi#2167; reported in pulumi-kubernetes#1567).
                self.forced.setdefault(key, []).append(f"deleted first with {root.rsplit('::', 1)[-1]}: {why}")

    def requires_replacement(self, resource: Resource, replace_set: set[str]) -> str | None:
        if not resource.custom:
            return None
        if resource.engine.get("provider") in replace_set:
            return f"its provider {resource.engine['provider']} is condemned"
        if resource.engine.get("deletedWith") in replace_set:
            return f"deleted with {resource.engine['deletedWith']}"
        keys = {k for k, deps in resource.property_dependencies().items() if replace_set & set(deps)}
        if not keys:
            return None
        reasons = replace_reasons(self.base, resource, unknown_changes(resource, keys))
        if not reasons:
            return None
        verb = "depends on it and becomes" if len(keys) == 1 else "depend on it and become"
        return f"{', '.join(sorted(keys))} {verb} unknown; {reasons[0]}"


def _mounted(resource: Resource) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap/Secret the pod template mounts or reads."""
    spec = resource.inputs.get("spec", {}).get("template", {}).get("spec", {})
    refs: set[tuple[str, str]] = set()
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"].get("name", "")))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"].get("secretName", "")))
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                refs.add(("ConfigMap", source["configMap"].get("name", "")))
            if "secret" in source:
                refs.add(("Secret", source["secret"].get("name", "")))
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "configMapKeyRef" in source:
                refs.add(("ConfigMap", source["configMapKeyRef"].get("name", "")))
            if "secretKeyRef" in source:
                refs.add(("Secret", source["secretKeyRef"].get("name", "")))
        for env_from in container.get("envFrom", []):
            if "configMapRef" in env_from:
                refs.add(("ConfigMap", env_from["configMapRef"].get("name", "")))
            if "secretRef" in env_from:
                refs.add(("Secret", env_from["secretRef"].get("name", "")))
    return refs


def _workload(step: Step, old: Resource | None, new: Resource, plan: Plan, steps: Mapping[str, Step]) -> Step:
    """Adds whether the pods roll, and which mounted objects changed."""
    namespace = new.metadata.get("namespace")
    changed = []
    for kind, name in sorted(_mounted(new)):
        target = plan.object(kind, namespace, name)
        if target is not None and target.key in steps and steps[target.key].step != SAME:
            changed.append(f"{kind}/{name}")
    template = ("spec", "template")
    rolls = None
    reasons = list(step.reasons)
    if step.step in (SAME, UPDATE) and old is not None:
        changes = [*value_changes(old.inputs, new.inputs), *secret_changes(old, new)]
        rolls = any(covers(template, c.path) for c in changes if not _ignored(new, c))
        if rolls:
            reasons.append("pod template changed: the controller rolls the pods per its update strategy")
        if changed and not rolls:
            reasons.append(
                f"pods keep the old {', '.join(changed)} until they restart: the pod template did not change"
            )
    elif step.step == DELETE_BEFORE_REPLACE:
        reasons.append("every pod is deleted at once, then the new object creates them again")
        when_deleted = new.inputs.get("spec", {}).get("persistentVolumeClaimRetentionPolicy", {}).get("whenDeleted")
        if new.kind == "StatefulSet" and when_deleted == "Delete":
            reasons.append("persistentVolumeClaimRetentionPolicy.whenDeleted=Delete: its claims and disks go with it")
    return Step(
        step.type,
        step.name,
        step.step,
        tuple(reasons),
        step.object,
        step.stateful,
        rolls,
        tuple(changed),
        step.retained,
    )


def diff_plans(base: Plan, new: Plan, replace: Iterable[str] = ()) -> list[Step]:
    """Each custom resource's step from base to new, in dependency order, deletes last.

    `replace`: what `pulumi up --replace` names, `type::name` or a name only one custom resource has
    (resolve); the new plan must have been built with the same selectors, so that new values show."""
    keys = resolve(replace, (k for k, r in new.resources.items() if r.custom), "REPLACE")
    differ = _Differ(base, new, keys)
    differ.run()
    steps: dict[str, Step] = {}
    for key, decision in differ.decisions.items():
        r = new.resources[key]
        steps[key] = Step(r.type, r.name, decision.step, tuple(decision.reasons), r.object, r.stateful)
    for key in reversed(dependency_order(base)):
        r = base.resources[key]
        if key not in new.resources and r.custom:
            retained = bool(r.engine.get("retainOnDelete"))
            kept = ["retained on delete (retainOnDelete): left in place with its data, only forgotten"]
            reasons = ["not in the new plan", *(kept if retained else [])]
            steps[key] = Step(r.type, r.name, DELETE, tuple(reasons), r.object, r.stateful, retained=retained)
    for key, step in list(steps.items()):
        resource = new.resources.get(key)
        if resource is not None and resource.kind in WORKLOAD_KINDS:
            steps[key] = _workload(step, base.resources.get(key), resource, new, steps)
    return list(steps.values())


def operations(steps: Iterable[Step]) -> list[tuple[str, Step]]:
    """The engine's sequence: delete-before-replace deletes (dependents first), then creates and updates in
    dependency order (a replacement's new object included), then the deletes of replaced and removed resources."""
    ordered = list(steps)
    ops = [("delete", s) for s in reversed(ordered) if s.step == DELETE_BEFORE_REPLACE]
    for s in ordered:
        if s.step in (CREATE, REPLACE, DELETE_BEFORE_REPLACE):
            ops.append(("create", s))
        elif s.step == UPDATE:
            ops.append(("update", s))
    ops += [("delete", s) for s in reversed(ordered) if s.step == REPLACE]
    ops += [("delete", s) for s in ordered if s.step == DELETE]
    return ops


def stateful_losses(steps: Iterable[Step], allow: Iterable[str] = ()) -> list[Step]:
    """Stateful resources replaced or deleted that `allow` does not name.

    `allow`: `type::name`, a name only one step has (resolve), or a Kubernetes object `Kind/namespace/name`."""
    listed = list(steps)
    objects = {s.object: s.key for s in listed if s.object}
    allowed = {objects[a] for a in allow if a in objects}
    allowed |= resolve([a for a in allow if a not in objects], [s.key for s in listed], "ALLOW")
    return [s for s in listed if s.destroys_state and s.key not in allowed]
