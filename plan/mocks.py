"""Pulumi mocks that stand in for GCP, Docker and Kubernetes, and record every registration.

Outputs are what the real providers would return (camelCase, as the engine sends them),
derived from the inputs, so the program's `.apply` chains run for real under mocks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from plan.diff import REBUILT

MOCK_SECRET_PREFIX = "mock-secret-"
"""Every generated secret starts with this, so tests can scan a plan for leaked values."""

REPLACED_MARK = "-replaced"
"""Appended to what a provider generates (a password, a key, a certificate) for a resource that
`pulumi up --replace` names (and to a docker-build Image's digest: a rebuild pushes a new one), and for
every random/tls resource whose inputs carry such a value:
the real providers would generate new values there, and the plan must show what then changes."""

GENERATING_PREFIXES = ("random:", "tls:")
"""The providers whose outputs are generated, not derived from the inputs: a replacement gives new values."""


def _hex(seed: str, length: int = 64) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool


def _unwrapped(value: Any) -> Any:
    """The value with every secret wrapper removed (for comparing, never for writing)."""
    if rpc.is_rpc_secret(value):
        return _unwrapped(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrapped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrapped(v) for v in value]
    return value


def _autoname(name: str, inputs: dict[str, Any]) -> str:
    """What pulumi-kubernetes names an object without metadata.name: `<logical name>-<8 random characters>`.

    The provider draws the suffix once, at create, and keeps it on updates; a replacement draws a new
    one. Here it is a hash of the inputs but metadata, so that the inputs that replace such an object
    (a ConfigMap's data) give it a new name and its dependents see the change, as they would."""
    body = {k: v for k, v in _unwrapped(inputs).items() if k != "metadata"}
    return f"{name}-{_hex(json.dumps(body, sort_keys=True, default=str), 8)}"


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    project: str = "mock-project"
    registrations: list[Registration] = field(default_factory=list)
    replace: frozenset[str] = frozenset()
    """What `pulumi up --replace` names, `type::name` or a bare name: their generated outputs change
    (REPLACED_MARK). plan/__main__ refuses a bare name two resources share once all are registered."""

    def _replaced(self, args: pulumi.runtime.MockResourceArgs) -> bool:
        named = f"{args.typ}::{args.name}" in self.replace or args.name in self.replace
        if args.typ == REBUILT:
            return named
        if not args.typ.startswith(GENERATING_PREFIXES):
            return False
        return named or REPLACED_MARK in json.dumps(_unwrapped(args.inputs), default=str)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registrations.append(Registration(args.typ, args.name, dict(args.inputs), bool(args.custom)))
        resource_id, state = self._new_state(args)
        if self._replaced(args):
            # A rebuilt image (docker-build) pushes a new digest: its dependents see it change by value.
            for key in ("result", "privateKeyPem", "certPem", "certRequestPem", "digest", "ref"):
                if key in state and key not in args.inputs:
                    state[key] = f"{state[key]}{REPLACED_MARK}"
            # pulumi-tls ids are a hash of the key or the certificate's serial: new ones. pulumi-random's
            # RandomPassword id is always "none" (terraform-provider-random resource_password.go): unchanged.
            if args.typ.startswith("tls:") and resource_id:
                resource_id += REPLACED_MARK
        return resource_id, state

    def _new_state(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        token, name = args.typ, args.name
        if token == "gcp:container/cluster:Cluster":
            state.update(
                name=name,
                endpoint="203.0.113.10",
                masterAuth={"clusterCaCertificate": "bW9jay1jYQ=="},
            )
            return f"projects/{self.project}/locations/{args.inputs.get('location')}/clusters/{name}", state
        if token == "gcp:container/nodePool:NodePool":
            state.setdefault("name", name)
        elif token == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{self.project}.iam.gserviceaccount.com"
        elif token == "docker-build:index:Image":
            digest = f"sha256:{_hex(name)}"
            state.update(digest=digest, ref=f"{args.inputs['tags'][0]}@{digest}")
        elif token == "random:index/randomPassword:RandomPassword":
            state["result"] = f"{MOCK_SECRET_PREFIX}{name}-{_hex(name, 16)}"
        elif token == "tls:index/privateKey:PrivateKey":
            # The provider marks it secret (additional_secret_outputs): the plan masks it.
            state["privateKeyPem"] = f"{MOCK_SECRET_PREFIX}{name}-{_hex(name, 16)}"
        elif token == "tls:index/selfSignedCert:SelfSignedCert":
            state["certPem"] = f"mock-certificate-{name}"
        elif token == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = f"mock-certificate-request-{name}"
        elif token == "tls:index/locallySignedCert:LocallySignedCert":
            state["certPem"] = f"mock-certificate-{name}"
            state["validityEndTime"] = "2027-12-07T00:00:00Z"
        elif token.startswith("kubernetes:") and not token.startswith("pulumi:providers"):
            state.setdefault("status", {})
            metadata: dict[str, Any] = state.get("metadata") or {}
            if not metadata.get("name") and not metadata.get("generateName"):
                state["metadata"] = {**metadata, "name": _autoname(name, args.inputs)}
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": f"{MOCK_SECRET_PREFIX}access-token", "project": self.project, "id": "mock"}, []
        if args.token == "gcp:organizations/getProject:getProject":
            # A made-up project number: GKE's service agent is named after it.
            return {"number": "123456789012", "projectId": self.project, "id": f"projects/{self.project}"}, []
        return {}, []


def urn_key(urn: str) -> str:
    """`type::name` of a URN (its last type and its name): how engine.json names resources."""
    *_, chain, name = urn.split("::")
    return f"{chain.split('$')[-1]}::{name}"


def provider_key(reference: str) -> str | None:
    """A provider reference is `<urn>::<id>`; None for the default provider."""
    return urn_key(reference.rsplit("::", 1)[0]) if reference else None


@dataclass(frozen=True)
class EngineRecord:
    """What the Pulumi engine stores per resource besides its inputs (the offline plan dropped these).

    The dependency fields decide the engine's dependent replacement (step_generator.go
    calculateDependentReplacements); the options decide the step itself."""

    custom: bool
    parent: str | None
    provider: str | None
    dependencies: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    ignore_changes: tuple[str, ...]
    replace_on_changes: tuple[str, ...]
    delete_before_replace: bool | None
    """None: the provider decides (the option was not set)."""
    retain_on_delete: bool | None
    protect: bool | None
    deleted_with: str | None
    custom_timeouts: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "custom": self.custom,
            "parent": self.parent,
            "provider": self.provider,
            "dependencies": sorted(self.dependencies),
            "propertyDependencies": {k: sorted(v) for k, v in sorted(self.property_dependencies.items())},
            "ignoreChanges": list(self.ignore_changes),
            "replaceOnChanges": list(self.replace_on_changes),
            "deleteBeforeReplace": self.delete_before_replace,
            "retainOnDelete": self.retain_on_delete,
            "protect": self.protect,
            "deletedWith": self.deleted_with,
            "customTimeouts": self.custom_timeouts,
        }


def _parent(urn: str) -> str | None:
    key = urn_key(urn) if urn else None
    return None if key is None or key.startswith("pulumi:pulumi:Stack::") else key


def engine_record(request: Any) -> EngineRecord:
    """The engine's view of a RegisterResourceRequest (proto/pulumi/resource.proto)."""
    timeouts = request.customTimeouts if request.HasField("customTimeouts") else None
    return EngineRecord(
        custom=bool(request.custom),
        parent=_parent(request.parent),
        provider=provider_key(request.provider),
        dependencies=tuple(urn_key(u) for u in request.dependencies),
        property_dependencies={k: tuple(urn_key(u) for u in v.urns) for k, v in request.propertyDependencies.items()},
        ignore_changes=tuple(request.ignoreChanges),
        replace_on_changes=tuple(request.replaceOnChanges),
        delete_before_replace=bool(request.deleteBeforeReplace)
        if request.deleteBeforeReplaceDefined or request.deleteBeforeReplace
        else None,
        retain_on_delete=request.retainOnDelete if request.HasField("retainOnDelete") else None,
        protect=request.protect if request.HasField("protect") else None,
        deleted_with=urn_key(request.deletedWith) if request.deletedWith else None,
        custom_timeouts={k: v for k in ("create", "update", "delete") if timeouts and (v := getattr(timeouts, k))},
    )


class RecordingMonitor(MockMonitor):
    """MockMonitor that also keeps what the engine would store for each registration."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.engine: dict[str, EngineRecord] = {}

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            self.engine[f"{request.type}::{request.name}"] = engine_record(request)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]
