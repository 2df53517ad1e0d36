"""`python -m drill run --scenario kill-broker --tasks 1000`: the local failure drills.

Boots three real RabbitMQ nodes (the config broker/ renders), real Celery workers (the
app/ configuration the image runs), publishes the tasks, injects the fault mid-load,
waits for the queue to drain and reports what was lost. ``--workload eta`` publishes countdowns
instead (``drill.workload``) and also counts the tasks that started before their ETA. Exit status
1 if any task was lost or early, or the drill could not run; everything it started is stopped on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from contract.plan_dir import IncompletePlanError, check_complete
from drill.profiles import Profile
from drill.report import summary, timeline
from drill.runner import DrillOptions, DrillResult, run_drill, run_plan_drills, write_report
from drill.scenario import Scenario
from drill.workload import Workload
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
        "(ha only; default %(default)s)",
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
    commands.add_parser("cleanup", help="remove network namespaces left by a crashed drill")
    return parser


def _check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, value in (("--tasks", args.tasks), ("--workers", args.workers), ("--concurrency", args.concurrency)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if args.task_ms < 0:
        parser.error(f"--task-ms must be >= 0, got {args.task_ms}")


def _scenarios(parser: argparse.ArgumentParser, args: argparse.Namespace, profile: Profile) -> list[Scenario]:
    """The scenarios ``--scenario`` names that ``--config`` and ``--workload`` can run."""
    if Workload(args.workload) is Workload.ETA and profile is Profile.SEED:
        parser.error("--workload eta needs --config ha: it scales the plan's worker Deployment and uses quorum queues")
    scenarios = list(Scenario) if args.scenario == ALL else [Scenario(args.scenario)]
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


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[DrillOptions]:
    _check_sizes(parser, args)
    profile = Profile(args.config)
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
    all_options = _options(parser, args)
    if Profile(args.config) is Profile.HA and len(all_options) > 1:
        results = run_plan_drills(all_options, console)
    else:
        results = [run_drill(options, console) for options in all_options]
    _write_reports(results, args.out, console)
    return 1 if any(r.lost or r.early or r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
