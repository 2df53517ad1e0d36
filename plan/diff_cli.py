"""`make plan-diff BASE=<git ref>`: what `pulumi up` would do going from BASE's program to this tree's.

Builds two offline plans of STACK: the base from the ref's tree (its program and its stack file,
extracted with `git archive` into a temporary directory, planned with this tree's plan tool so that
engine.json exists), the new one from the working tree with SET and REPLACE. Prints each resource's
step (plan/diff.py) and writes build/plan-diff/steps.json: [{"type", "name", "step", "reasons", "object"}]
in dependency order (plan.diff.operations gives the engine's sequence); object is "Kind/namespace/name"
("Kind/name" when cluster-scoped) for a Kubernetes object, else null.

Exit codes:
  0  no stateful resource (StatefulSet, StorageClass, PVC, GKE cluster or node pool, registry) is
     replaced or deleted, or ALLOW names each one that is;
  1  a stateful resource would be replaced or deleted and ALLOW does not name it (listed on stderr);
  2  bad input: an unknown git ref or stack, a plan that fails, a REPLACE or ALLOW that names no
     resource, or a bare name two resources share (the candidates are listed as type::name).

REPLACE and ALLOW take `type::name` (a URN's tail: `random:index/randomPassword:RandomPassword::rabbitmq-
erlang-cookie`) or a bare name that exactly one custom resource has; ALLOW also takes Kind/namespace/name.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plan.diff import SAME, Plan, PlanError, Step, diff_plans, stateful_losses

ROOT = Path(__file__).resolve().parent.parent
STYLE = {"update": "yellow", "replace": "magenta", "delete-before-replace": "bold red", "create": "green"}


class InputError(Exception):
    """Exit 2: what was asked for cannot be planned."""


def base_tree(ref: str, into: Path) -> Path:
    """The ref's files (program, components, stack files) with this tree's plan tool."""
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True, capture_output=True
        )
    except subprocess.CalledProcessError as error:
        raise InputError(f"BASE={ref}: not a commit of this repository") from error
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    # As a checkout writes them: modes through the umask (git archive's are 0664/0775; the image tag hashes modes).
    subprocess.run(["tar", "-x", "--no-same-permissions", "-C", str(into)], input=archive, check=True)
    # The ref's own plan tool may predate engine.json: plan it with today's (it only reads the program).
    shutil.copytree(ROOT / "plan", into / "plan", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def build_plan(tree: Path, stack: str, out: Path, sets: Sequence[str] = (), replace: Sequence[str] = ()) -> Path:
    args = [sys.executable, "-m", "plan", "--stack", stack, "--out", str(out)]
    args += [a for kv in sets for a in ("--set", kv)] + [a for n in replace for a in ("--replace", n)]
    done = subprocess.run(args, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InputError(f"plan of {stack} in {tree} failed:\n{done.stderr.strip()}")
    return out / stack


def table(steps: Sequence[Step], losses: Sequence[Step]) -> Table:
    view = Table(title="pulumi up, as plan-diff decides it", show_lines=False)
    for column in ("step", "type", "name", "object", "why"):
        view.add_column(column, overflow="fold")
    lost = {s.key for s in losses}
    for s in steps:
        if s.step == SAME:
            continue
        style = "bold white on red" if s.key in lost else STYLE.get(s.step, "")
        view.add_row(s.step, s.type.split(":")[-1], s.name, s.object or "", "\n".join(s.reasons), style=style)
    return view


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plan.diff_cli", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--base", default="HEAD", help="git ref of the deployed program (default HEAD)")
    parser.add_argument("--stack", default="dev")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, new plan only"
    )
    parser.add_argument(
        "--base-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of both plans: what the deployed stack was planned with (make demo's SET, TLS)",
    )
    parser.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="TYPE::NAME",
        help="as `pulumi up --replace <urn>`: type::name (the URN's tail), or a name only one resource has",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="TYPE::NAME",
        help="a stateful replacement you accept: type::name, a name only one resource has, or Kind/namespace/name",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "plan-diff")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        with tempfile.TemporaryDirectory(prefix="plan-diff-") as tmp:
            work = Path(tmp)
            tree = base_tree(args.base, work / "base-tree")
            with ThreadPoolExecutor(max_workers=2) as pool:
                base_job = pool.submit(build_plan, tree, args.stack, work / "base", args.base_set)
                new_sets = [*args.base_set, *args.set]
                new_job = pool.submit(build_plan, ROOT, args.stack, work / "new", new_sets, args.replace)
                base, new = Plan.load(base_job.result()), Plan.load(new_job.result())
            steps = diff_plans(base, new, args.replace)
            losses = stateful_losses(steps, args.allow)
    except (InputError, PlanError) as error:
        print(f"plan-diff: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps.json").write_text(json.dumps([s.as_json() for s in steps], indent=2) + "\n")
    console.print(table(steps, losses))
    same = sum(1 for s in steps if s.step == SAME)
    console.print(f"{len(steps) - same} changed, {same} same -> {args.out / 'steps.json'}")
    if losses:
        for s in losses:
            print(f"plan-diff: stateful {s.type} {s.name}: {s.step} ({s.reasons[0]})", file=sys.stderr)
        print(
            "plan-diff: ALLOW=<type::name> accepts one (the runbook: docs/operate-broker.md, 'Changing disk kind')",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
