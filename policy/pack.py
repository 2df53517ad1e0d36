"""The invariants of ``policy.validators`` as ``pulumi_policy`` policies, one per invariant.

Resource policies run on every resource as it is registered; stack policies once, with every
resource of the stack (they need to see several: a workload and its PDB, the cluster's environment
label and the broker). Every policy is mandatory: a violation fails ``pulumi preview`` and stops
``pulumi up`` before it changes anything.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidation,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.validators import INVARIANTS, Invariant, Resource, ResourceCheck, StackCheck

PACK_NAME = "ha-celery-invariants"
ENFORCEMENT = EnforcementLevel.MANDATORY


def _resource_validation(check: ResourceCheck) -> ResourceValidation:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props):
            report_violation(message, None)

    return validate


def _stack_validation(check: StackCheck) -> StackValidation:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [Resource(r.resource_type, r.name, r.props) for r in args.resources]
        urns = {id(resource): r.urn for resource, r in zip(resources, args.resources, strict=True)}
        for violation in check(resources):
            report_violation(violation.message, urns.get(id(violation.resource)) if violation.resource else None)

    return validate


def to_policy(invariant: Invariant) -> Policy:
    """The ``pulumi_policy`` policy that enforces ``invariant``."""
    if invariant.check_stack is not None:
        return StackValidationPolicy(
            name=invariant.name,
            description=invariant.description,
            validate=_stack_validation(invariant.check_stack),
            enforcement_level=ENFORCEMENT,
        )
    if invariant.check_resource is None:
        raise ValueError(f"invariant {invariant.name} has no check")
    return ResourceValidationPolicy(
        name=invariant.name,
        description=invariant.description,
        validate=_resource_validation(invariant.check_resource),
        enforcement_level=ENFORCEMENT,
    )


def policies() -> list[Policy]:
    """One policy per invariant, in ``INVARIANTS`` order."""
    return [to_policy(invariant) for invariant in INVARIANTS]
