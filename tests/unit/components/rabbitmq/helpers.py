"""What the broker component's tests share: the broker's objects in a plan, and the registrations
(inputs and resource options) of the program or the component alone under Pulumi's mocks."""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.conftest import Plan

if TYPE_CHECKING:
    from components.rabbitmq import RabbitMQClusterArgs

STATEFULSET = "kubernetes:apps/v1:StatefulSet"


def broker_config_map(plan: Plan) -> dict[str, Any]:
    """The broker's ConfigMap (the plan also ships the dashboard's)."""
    found = [c for c in plan.objects("ConfigMap") if c["metadata"]["name"] == "rabbitmq-config"]
    assert len(found) == 1, f"{plan.stack}: one rabbitmq-config ConfigMap"
    return found[0]


def statefulset(plan: Plan) -> dict[str, Any]:
    found = plan.objects("StatefulSet")
    assert len(found) == 1, f"{plan.stack}: one StatefulSet (the broker)"
    return found[0]


def pod(plan: Plan) -> dict[str, Any]:
    spec: dict[str, Any] = statefulset(plan)["spec"]["template"]["spec"]
    return spec


def broker_container(plan: Plan) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod(plan)["containers"] if c["name"] == "rabbitmq"]
    assert len(found) == 1
    return found[0]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ---------------------------------------------------------------- resource options ----
# The plan records inputs only; what `pulumi up` does on a change also depends on the resource
# options (ignore_changes, replace_on_changes, custom_timeouts), which only the engine sees. These
# helpers run the program (or the component) under the same mocks with a monitor that records them.


@dataclass(frozen=True)
class Registered:
    """One resource registration: masked inputs (camelCase, as the engine gets them) and options."""

    inputs: dict[str, Any]
    ignore_changes: tuple[str, ...]
    replace_on_changes: tuple[str, ...]
    delete_before_replace: bool
    protect: bool
    timeouts: dict[str, str]
    dependencies: frozenset[str] = frozenset()
    """URNs of every resource this one waits for (depends_on and property dependencies)."""
    property_dependencies: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    """Per top-level input, the URNs its value came from: what the engine's dependent replacement
    follows (pulumi/pulumi step_generator.go, calculateDependentReplacements)."""


def urn_type(urn: str) -> str:
    """The resource type token of a URN (``urn:pulumi:stack::project::parent$type::name``)."""
    return urn.split("::")[2].rsplit("$", maxsplit=1)[-1]


def urn_name(urn: str) -> str:
    return urn.split("::")[3]


def changed_mocks(changes: dict[str, dict[str, str]]) -> Callable[[str], Any]:
    """A factory of RecordingMocks whose resources named in ``changes`` return those outputs
    instead: a renewed certificate, a rotated password, as the provider would after `--replace`."""
    from plan.mocks import RecordingMocks

    class Changed(RecordingMocks):
        def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
            resource_id, state = super().new_resource(args)
            return resource_id, {**state, **changes.get(args.name, {})}

    return lambda project: Changed(project=project)


def record(
    stack: str,
    program: Callable[[], None],
    config: dict[str, str],
    mocks_factory: Callable[[str], Any] | None = None,
) -> dict[tuple[str, str], Registered]:
    """Run ``program`` under the mocks (``mocks_factory(project)``, or plain RecordingMocks)."""
    import pulumi
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from plan.__main__ import mask
    from plan.mocks import RecordingMocks
    from settings import PROJECT

    requests: dict[tuple[str, str], Any] = {}

    class OptionsMonitor(MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            requests[(request.type, request.name)] = request
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]

    def run() -> dict[tuple[str, str], Registered]:
        project = config.get("gcp:project", "mock-project")
        mocks = mocks_factory(project) if mocks_factory else RecordingMocks(project=project)
        pulumi.runtime.set_all_config(config)
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=OptionsMonitor(mocks))
        _sync_await(run_pulumi_func(program))
        out = {}
        for r in mocks.registrations:
            req = requests[(r.type, r.name)]
            timeouts = {k: getattr(req.customTimeouts, k) for k in ("create", "update", "delete")}
            out[(r.type, r.name)] = Registered(
                mask(r.inputs),
                tuple(req.ignoreChanges),
                tuple(req.replaceOnChanges),
                bool(req.deleteBeforeReplace),
                bool(req.protect),
                {k: v for k, v in timeouts.items() if v},
                frozenset(req.dependencies),
                {k: frozenset(v.urns) for k, v in req.propertyDependencies.items()},
            )
        return out

    # Pulumi's runtime settings are context variables: a copied context leaves no global state behind.
    return contextvars.copy_context().run(run)


def dev_args(**changes: Any) -> RabbitMQClusterArgs:
    """Dev-like broker args with ``changes``."""
    from components.rabbitmq import RabbitMQClusterArgs

    args = RabbitMQClusterArgs(
        namespace="ha-celery",
        replicas=3,
        disk_type="pd-standard",
        storage_gi=10,
        image="rabbitmq:4.3.6-management",
        cpu_millis=500,
        memory_mib=1024,
        production=False,
        consumer_timeout_ms=1_800_000,
        cluster_name="ha-celery-dev",
    )
    return dataclasses.replace(args, **changes)


def component(mocks_factory: Callable[[str], Any] | None = None, **changes: Any) -> dict[tuple[str, str], Registered]:
    """The broker component alone, with dev-like args and ``changes``."""
    from components.rabbitmq import RabbitMQCluster

    args = dev_args(**changes)

    def program() -> None:
        RabbitMQCluster("rabbitmq", args)

    return record("dev", program, {}, mocks_factory)


def only(found: dict[tuple[str, str], Registered], token: str) -> Registered:
    [one] = [r for (t, _), r in found.items() if t == token]
    return one


def get(tree: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        tree = tree[int(part)] if part.isdigit() else tree[part]
    return tree


def put(tree: Any, path: str, value: Any) -> None:
    *parents, last = re.findall(r"[^.\[\]]+", path)
    parent = get(tree, ".".join(parents))
    parent[int(last) if last.isdigit() else last] = value


def duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))
