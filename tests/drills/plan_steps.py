"""A minimal object-level diff of two plans as plan-diff's steps: a TEST FIXTURE only.

The product takes its steps from plan-diff (``build/plan-diff/steps.json``, ``make plan-diff``),
which decides each step as the engine and the providers would. This fixture only says which
Kubernetes objects differ (``update``), appear (``create``) or go (``delete``): the steps a
fixed program (mutable ConfigMaps and Secrets, checksum annotations) gives for a routine change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.kube.objects import load_objects

KIND_ORDER = (
    "Namespace",
    "StorageClass",
    "ConfigMap",
    "Secret",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "StatefulSet",
    "Deployment",
)
"""Dependencies first, as the engine orders creates and updates (deletes run after, in reverse)."""


def _ref(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{obj['kind']}/{ns}/{meta['name']}" if ns else f"{obj['kind']}/{meta['name']}"


def _rank(ref: str) -> tuple[int, str]:
    kind = ref.split("/", 1)[0]
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), ref)


def object_steps(old_plan: Path, new_plan: Path) -> list[dict[str, Any]]:
    """Steps (``type``, ``name``, ``step``, ``reasons``, ``object``) from one plan's objects to the other's."""
    old = {_ref(o): o for o in load_objects(old_plan)}
    new = {_ref(o): o for o in load_objects(new_plan)}
    steps: list[dict[str, Any]] = []
    for ref in sorted(old.keys() | new.keys(), key=_rank):
        reasons: list[str]
        if ref not in old:
            step, reasons = "create", []
        elif ref not in new:
            continue
        else:
            changed = sorted(k for k in old[ref].keys() | new[ref].keys() if old[ref].get(k) != new[ref].get(k))
            step, reasons = ("update", changed) if changed else ("same", [])
        kind = ref.split("/", 1)[0]
        steps.append(
            {
                "type": f"kubernetes:{kind}",
                "name": ref.rsplit("/", 1)[1],
                "step": step,
                "reasons": reasons,
                "object": ref,
            }
        )
    for ref in sorted(old.keys() - new.keys(), key=_rank, reverse=True):
        kind = ref.split("/", 1)[0]
        steps.append(
            {
                "type": f"kubernetes:{kind}",
                "name": ref.rsplit("/", 1)[1],
                "step": "delete",
                "reasons": [],
                "object": ref,
            }
        )
    return steps


def write_steps(old_plan: Path, new_plan: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(object_steps(old_plan, new_plan), indent=2) + "\n")
    return out
