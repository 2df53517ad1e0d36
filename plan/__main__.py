"""`python -m plan --stack dev`: the resources a stack would create, without a cloud or the CLI.

Writes build/plan/<stack>/resources.json (type, name, parent type, inputs with every secret
replaced by "[secret]"), build/plan/<stack>/kubernetes/*.yaml (each Kubernetes object as
it would be sent to the API server) and build/plan/<stack>/engine.json (what the engine stores
besides the inputs: dependencies, property dependencies, resource options, and a hash per secret
input so that plan-diff sees a secret change without the value). Exits 2 with the settings error
on bad config.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import runpy
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

import settings
from plan import stackfile
from plan.diff import PlanError, resolve
from plan.mocks import RecordingMocks, RecordingMonitor
from plan.rules import format_path, parse_path
from settings import PROJECT, SettingsError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "[secret]"


def mask(value: Any) -> Any:
    """Replaces every secret (as the engine marks them) by a placeholder, recursively."""
    if rpc.is_rpc_secret(value):
        # Keep the shape (a Secret's keys are no secret), mask every leaf.
        return mask_leaves(rpc.unwrap_rpc_secret(value))
    if isinstance(value, Mapping):
        return {k: mask(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [mask(v) for v in value]
    # The engine's wire format (protobuf Struct) has only doubles; Kubernetes wants integers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def secret_hashes(value: Any, path: str = "") -> dict[str, str]:
    """Path -> a hash of each secret's value: it changes when the secret does, and does not reveal it.

    Under mocks the values are made up (plan.mocks), so the hash of one is no leak either."""
    if rpc.is_rpc_secret(value):
        raw = json.dumps(_plain(rpc.unwrap_rpc_secret(value)), sort_keys=True, default=str)
        return {path: hashlib.sha256(f"ha-celery-plan-secret:{raw}".encode()).hexdigest()[:16]}
    found: dict[str, str] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not str(k).startswith("__"):
                found |= secret_hashes(v, format_path((*parse_path(path), str(k))))
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            found |= secret_hashes(v, format_path((*parse_path(path), i)))
    return found


def _plain(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def mask_leaves(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: mask_leaves(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [mask_leaves(v) for v in value]
    return SECRET


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (rendered config files) as literal blocks, readable in review."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def stack_config(stack: str, overrides: Sequence[str]) -> dict[str, str]:
    """The stack file's config as Pulumi hands it to a program (every value a string), with the
    ``--set`` values stored as `pulumi config set` stores them: the text after ``=``, never parsed
    as YAML (settings apply the schema's type). An empty value unsets the key (its default applies)."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not settings.STACK_RE.fullmatch(stack) or not path.is_file():
        stacks = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
        raise SystemExit(f"plan: no stack file Pulumi.{settings.shown(stack)[1:-1]}.yaml; stacks: {', '.join(stacks)}")
    try:
        raw = stackfile.read(path)
    except stackfile.StackFileError as error:
        raise SystemExit(f"plan: stack file {error}") from error
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"plan: --set takes key=value, got {settings.shown(item)}")
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value:
            raw[full] = value
        elif full.startswith(f"{PROJECT}:") and full.removeprefix(f"{PROJECT}:") not in settings.schema():
            # Unsetting a misspelt key would leave the meant one set, silently.
            raise SystemExit(
                f"plan: --set {settings.shown(key)}= unsets no key of Pulumi.yaml; keys: {', '.join(settings.schema())}"
            )
        else:
            raw.pop(full, None)
    return raw


def parent_types(monitor: RecordingMonitor) -> dict[tuple[str, str], str | None]:
    """(type, name) -> the parent's type token, read from the URNs' type chains."""
    parents: dict[tuple[str, str], str | None] = {}
    for urn in monitor.resources:
        *_, chain, name = urn.split("::")
        types = chain.split("$")
        parent = types[-2] if len(types) > 1 else None
        parents[(types[-1], name)] = None if parent == "pulumi:pulumi:Stack" else parent
    return parents


def kubernetes_manifest(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    token: str = resource["type"]
    if not token.startswith("kubernetes:"):
        return None
    inputs = dict(resource["inputs"])
    return {"apiVersion": inputs.pop("apiVersion"), "kind": inputs.pop("kind"), **inputs}


def run_program() -> None:
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


@dataclasses.dataclass(frozen=True)
class PlanRun:
    resources: list[dict[str, Any]]
    """resources.json: type, name, parent type, masked inputs."""
    engine: list[dict[str, Any]]
    """engine.json: per resource what the engine stores besides the inputs."""


def run(stack: str, config: dict[str, str]) -> list[dict[str, Any]]:
    """resources.json's content for a stack's config."""
    return run_recorded(stack, config).resources


def run_recorded(stack: str, config: dict[str, str], replace: frozenset[str] = frozenset()) -> PlanRun:
    mocks = RecordingMocks(project=config.get("gcp:project", "mock-project"), replace=replace)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(config)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    try:
        _sync_await(run_pulumi_func(run_program))
    except SettingsError as error:
        print(f"plan: stack {stack}: {error}", file=sys.stderr)
        print(f"plan: {len(mocks.registrations)} resources were registered before the error.", file=sys.stderr)
        raise SystemExit(2) from error
    try:
        resolve(replace, (f"{r.type}::{r.name}" for r in mocks.registrations if r.custom), "--replace")
    except PlanError as error:
        print(f"plan: stack {stack}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    parents = parent_types(monitor)
    # Sorted: registration order depends on output resolution, and a plan must diff cleanly.
    registrations = sorted(mocks.registrations, key=lambda r: (r.type, r.name))
    resources = [
        {"type": r.type, "name": r.name, "parent": parents.get((r.type, r.name)), "inputs": mask(r.inputs)}
        for r in registrations
    ]
    engine = [
        {
            "type": r.type,
            "name": r.name,
            **monitor.engine[f"{r.type}::{r.name}"].as_json(),
            "secretHashes": secret_hashes(r.inputs),
        }
        for r in registrations
    ]
    return PlanRun(resources, engine)


def write(out: Path, result: PlanRun, effective: settings.Settings) -> None:
    """Builds the plan in a temporary directory beside ``out`` and renames it into place, so a
    write that fails halfway leaves the previous good plan where it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _write_into(building, result, effective)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            building.rename(out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            building.rename(out)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _write_into(out: Path, result: PlanRun, effective: settings.Settings) -> None:
    resources = result.resources
    manifests = out / "kubernetes"
    manifests.mkdir(parents=True)
    # The settings after defaults: what the stack really asks for, for review beside the resources.
    (out / "settings.json").write_text(json.dumps(dataclasses.asdict(effective), indent=2) + "\n")
    (out / "resources.json").write_text(json.dumps(resources, indent=2, sort_keys=True) + "\n")
    (out / "engine.json").write_text(json.dumps(result.engine, indent=2, sort_keys=True) + "\n")
    for resource in resources:
        manifest = kubernetes_manifest(resource)
        if manifest is None:
            continue
        meta = manifest.get("metadata", {})
        stem = "-".join(p for p in (manifest["kind"], meta.get("namespace"), meta.get("name", resource["name"])) if p)
        (manifests / f"{stem.lower()}.yaml").write_text(yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plan", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "plan", help="plan directory (default build/plan)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="TYPE::NAME",
        help="as `pulumi up --replace <urn>`: type::name (the URN's tail) or a name only one resource has; "
        "a named random/tls resource generates new values",
    )
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"plan: --out {args.out} is a file; it takes the directory the plans go under")
    config = stack_config(args.stack, args.set)
    result = run_recorded(args.stack, config, frozenset(args.replace))
    resources = result.resources
    # Strict re-parse of the stack file itself: a misspelt key is an error, not a silent default.
    ours = {k: v for k, v in config.items() if k.startswith(f"{PROJECT}:")}
    try:
        effective = settings.parse(args.stack, ours, config.get("gcp:project"))
    except SettingsError as error:
        print(f"plan: stack {args.stack}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    out = args.out / args.stack
    write(out, result, effective)
    kinds = sum(1 for r in resources if kubernetes_manifest(r) is not None)
    print(f"plan: stack {args.stack}: {len(resources)} resources, {kinds} Kubernetes objects -> {out}")


if __name__ == "__main__":
    main()
