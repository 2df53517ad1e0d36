"""`python -m drill run --scenario kill-broker --tasks 1000`: the local failure drills.

Boots three real RabbitMQ nodes (the config broker/ renders), real Celery workers (the
app/ configuration the image runs), publishes the tasks, injects the fault mid-load,
waits for the queue to drain and reports what was lost. ``--workload eta`` publishes countdowns
instead (``drill.workload``) and also counts the tasks that started before their ETA; ``--workload
long`` runs tasks of minutes. ``--scenario update`` applies a second plan by plan-diff's steps
(``drill.update``). Exit status 1 if any task was lost or early, an update left fewer Ready brokers
than a majority, a frozen broker held a worker longer than ``timing.FROZEN_BROKER_HOLD_MAX_S`` or
stayed Ready (``drill.held``), or the drill could not run; everything it started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from contract import lanes
from contract.plan_dir import IncompletePlanError, check_complete
from drill.profiles import Profile
from drill.report import summary, timeline
from drill.runner import DrillOptions, DrillResult, run_drill, run_plan_drills, write_report
from drill.scenario import Scenario
from drill.update import UpdateSpec
from drill.workload import LONG_TASK_S, Workload
from harness.runtime import netns

ALL = "all"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drill", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one scenario (or all) and write build/demo/report.json + timeline.png")
    run.add_argument("--scenario", default=Scenario.KILL_BROKER.value, choices=[*(s.value for s in Scenario), ALL])
    run.add_argument(
        "--config",
        default=Profile.HA.value,
        choices=[p.value for p in Profile],
        help="ha (this project) or seed (2018)",
    )
    run.add_argument("--tasks", type=int, default=10_000, help="tasks to schedule (default %(default)s)")
    run.add_argument(
        "--workload",
        default=Workload.PLAIN.value,
        choices=[w.value for w in Workload],
        help="plain: tasks due at once; eta: countdowns of 1-30 s, a part published before any worker "
        "(ha only); long: tasks of --long-task-s seconds each (default %(default)s)",
    )
    run.add_argument(
        "--plan",
        type=Path,
        default=Path("build/plan/dev"),
        help="the plan the ha config boots on the pod runner (`make plan STACK=...`; default %(default)s)",
    )
    run.add_argument("--workers", type=int, default=2, help="seed only: worker processes (default %(default)s)")
    run.add_argument(
        "--concurrency", type=int, default=4, help="seed only: pool processes per worker (default %(default)s)"
    )
    run.add_argument("--task-ms", type=int, default=20, help="duration of each task, ms (default %(default)s)")
    run.add_argument("--out", type=Path, default=Path("build/demo"), help="report directory (default %(default)s)")
    run.add_argument(
        "--long-task-s",
        default=f"{LONG_TASK_S[0]:g}-{LONG_TASK_S[1]:g}",
        metavar="MIN-MAX",
        help="--workload long: each task runs MIN to MAX seconds (default %(default)s)",
    )
    run.add_argument(
        "--update-plan",
        type=Path,
        help="--scenario update: the second plan to apply (`python -m plan --out build/plan-update --set ...`)",
    )
    run.add_argument(
        "--steps",
        type=Path,
        default=Path("build/plan-diff/steps.json"),
        help="--scenario update: plan-diff's steps from --plan to --update-plan (default %(default)s)",
    )
    run.add_argument("--update-set", default="", help="--scenario update: the settings changed (for the report)")
    run.add_argument(
        "--lane",
        help="--config ha: the worker lane to load and fault (its queue and Deployment; default: long for"
        " --workload long, whose tasks of minutes pass the default lane's hard limit, else default)",
    )
    commands.add_parser("cleanup", help="remove network namespaces left by a crashed drill")
    return parser


def _check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, value in (("--tasks", args.tasks), ("--workers", args.workers), ("--concurrency", args.concurrency)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if args.task_ms < 0:
        parser.error(f"--task-ms must be >= 0, got {args.task_ms}")


def _lane(parser: argparse.ArgumentParser, args: argparse.Namespace, profile: Profile) -> str:
    """``--lane``, or the workload's: long tasks on the long lane (the plan's, contract.lanes)."""
    if args.lane is None:
        long = Workload(args.workload) is Workload.LONG and profile is Profile.HA
        return lanes.LONG_LANE if long else lanes.DEFAULT_LANE
    if profile is Profile.SEED and args.lane != lanes.DEFAULT_LANE:
        parser.error(f"--lane {args.lane}: the seed's 2018 setup has one queue (--config ha has lanes)")
    if (problem := lanes.lane_name_problem(args.lane)) is not None:
        parser.error(f"--lane {args.lane!r}: {problem}")
    lane: str = args.lane
    return lane


def _long_task_s(
    parser: argparse.ArgumentParser, args: argparse.Namespace, console: Console, lane: str
) -> tuple[float, float]:
    """``--long-task-s`` as (MIN, MAX) seconds; a warning if the lane's workers would time such tasks out."""
    long_task_s = _seconds_range(parser, args.long_task_s)
    soft = lanes.default_timing(lane).soft_time_limit_s
    if Workload(args.workload) is Workload.LONG and long_task_s[1] >= soft:
        # Not refused: what the plan's workers do to such a task is the finding (it fails at the soft limit).
        console.print(
            f"[yellow]--long-task-s {args.long_task_s}: lane {lane}'s workers stop a task after {soft} s"
            " (contract.lanes, unless the plan's workerLanes says otherwise): longer ones time out"
            " (dead-lettered, never completed)[/]"
        )
    return long_task_s


def _seconds_range(parser: argparse.ArgumentParser, raw: str) -> tuple[float, float]:
    low, sep, high = raw.partition("-")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        parser.error(f"--long-task-s takes MIN-MAX in seconds (e.g. 60-180), got {raw!r}")
    if not 0 <= pair[0] <= pair[1]:
        parser.error(f"--long-task-s: need 0 <= MIN <= MAX, got {raw!r}")
    return pair


def _update(parser: argparse.ArgumentParser, args: argparse.Namespace) -> UpdateSpec | None:
    """``--scenario update``'s second plan and steps (None for every other scenario)."""
    if args.scenario != Scenario.UPDATE.value:
        return None
    if Profile(args.config) is not Profile.HA or args.update_plan is None:
        parser.error("--scenario update needs --config ha and --update-plan (make demo SCENARIO=update UPDATE=...)")
    if not args.update_plan.joinpath("kubernetes").is_dir():
        parser.error(f"--update-plan {args.update_plan}: no Kubernetes objects there")
    if not args.steps.is_file():
        parser.error(f"--steps {args.steps}: no such file (make plan-diff writes it)")
    return UpdateSpec(args.update_plan, args.steps, tuple(args.update_set.split()))


def _scenarios(parser: argparse.ArgumentParser, args: argparse.Namespace, profile: Profile) -> list[Scenario]:
    """The scenarios ``--scenario`` names that ``--config`` and ``--workload`` can run."""
    if Workload(args.workload) is Workload.ETA and profile is Profile.SEED:
        parser.error("--workload eta needs --config ha: it scales the plan's worker Deployment and uses quorum queues")
    scenarios = [s for s in Scenario if not s.needs_update] if args.scenario == ALL else [Scenario(args.scenario)]
    if profile is Profile.SEED:
        if args.scenario != ALL and scenarios[0].needs_pod_runner:
            parser.error(f"--scenario {args.scenario} needs --config ha: the seed runs on bare 3.10 nodes, not pods")
        return [s for s in scenarios if not s.needs_pod_runner]
    try:
        check_complete(args.plan)
    except IncompletePlanError as error:
        parser.error(f"--plan {error}")
    # partition-broker is partition-node's older name on the pod runner: `all` runs it once.
    return [s for s in scenarios if not (len(scenarios) > 1 and s is Scenario.PARTITION_BROKER)]


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace, console: Console) -> list[DrillOptions]:
    _check_sizes(parser, args)
    profile = Profile(args.config)
    lane = _lane(parser, args, profile)
    long_task_s = _long_task_s(parser, args, console, lane)
    update = _update(parser, args)
    return [
        DrillOptions(
            scenario=scenario,
            profile=profile,
            tasks=args.tasks,
            workers=args.workers,
            concurrency=args.concurrency,
            task_ms=args.task_ms,
            plan=args.plan,
            workload=Workload(args.workload),
            long_task_s=long_task_s,
            update=update,
            lane=lane,
        )
        for scenario in _scenarios(parser, args, profile)
    ]


def _write_reports(results: list[DrillResult], out: Path, console: Console) -> None:
    """report.json and timeline.png per drill (in a folder per scenario when several ran), the summary."""
    for result in results:
        each = out if len(results) == 1 else out / result.options.scenario.value
        write_report(result, each)
        timeline(result, each / "timeline.png")
    summary(results, console)
    if len(results) > 1:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n")
    console.print(f"report: {out / 'report.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Logs and CI are not terminals: keep the summary table readable there too.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    if args.command == "cleanup":
        removed = netns.cleanup_stale()
        console.print(f"removed {len(removed)} namespaces: {', '.join(removed) or '-'}")
        return 0
    all_options = _options(parser, args, console)
    if Profile(args.config) is Profile.HA and len(all_options) > 1:
        results = run_plan_drills(all_options, console)
    else:
        results = [run_drill(options, console) for options in all_options]
    _write_reports(results, args.out, console)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
