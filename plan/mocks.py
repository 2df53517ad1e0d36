"""Pulumi mocks that stand in for GCP, Docker and Kubernetes, and record every registration.

Outputs are what the real providers would return (camelCase, as the engine sends them),
derived from the inputs, so the program's `.apply` chains run for real under mocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi

MOCK_SECRET_PREFIX = "mock-secret-"
"""Every generated secret starts with this, so tests can scan a plan for leaked values."""


def _hex(seed: str, length: int = 64) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    project: str = "mock-project"
    registrations: list[Registration] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registrations.append(Registration(args.typ, args.name, dict(args.inputs), bool(args.custom)))
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
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": f"{MOCK_SECRET_PREFIX}access-token", "project": self.project, "id": "mock"}, []
        if args.token == "gcp:organizations/getProject:getProject":
            # A made-up project number: GKE's service agent is named after it.
            return {"number": "123456789012", "projectId": self.project, "id": f"projects/{self.project}"}, []
        return {}, []
