"""The policy pack served as the Pulumi CLI serves it (``python -m pulumi.policy`` in ``policy/``), over
gRPC: every policy listed as mandatory, a violating plan refused. The invariants themselves are checked
offline in tests/unit/policy/test_policy.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy import pack
from policy.validators import INVARIANTS
from tests.conftest import ROOT, Plan
from tests.unit.policy.test_policy import broker, resources_of, struct

pytestmark = pytest.mark.integration


@pytest.fixture
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack served as the CLI serves it: ``python -m pulumi.policy ENGINE .`` in ``policy/``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # pulumi_policy prints its port and never flushes: on a pipe the line stays in the buffer
        # unless the child runs unbuffered, as the Pulumi CLI's language host runs it.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            assert proc.stderr is not None
            pytest.fail(f"the policy pack did not start: {line!r}\n{proc.stderr.read().decode()}")
        with grpc.insecure_channel(f"127.0.0.1:{int(line)}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.kill()
        proc.wait()


def test_the_served_pack_lists_every_policy_as_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == pack.PACK_NAME
    assert [(p.name, p.enforcementLevel) for p in info.policies] == [
        (i.name, analyzer_pb2.EnforcementLevel.MANDATORY) for i in INVARIANTS
    ]


def test_the_served_pack_refuses_a_violating_plan(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, plans: dict[str, Plan]
) -> None:
    resources = [r for r in resources_of(plans["prod"]) if r.name != "celery-pdb"]
    broker(resources).props["spec"]["replicas"] = 4
    sts = broker(resources)
    out = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(type=sts.type, properties=struct(sts.props), urn="urn:sts", name=sts.name)
    )
    assert [(d.policyName, d.enforcementLevel) for d in out.diagnostics] == [
        ("broker-replicas-odd", analyzer_pb2.EnforcementLevel.MANDATORY)
    ], out
    assert "spec.replicas is 4;" in out.diagnostics[0].message
    stack = analyzer.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(type=r.type, properties=struct(r.props), urn=f"urn:{r.name}", name=r.name)
                for r in resources
            ]
        )
    )
    assert [(d.policyName, d.urn) for d in stack.diagnostics] == [("disruption-budgets", "urn:celery-deployment")]
