"""The image's scheduler CLI (``app.scheduler``) with the drill's counting tasks added as choices.

    python -m drill.scheduler --count 10000 --task record

Same code path as ``python -m app.scheduler`` (argument parsing, configuration, the publisher,
the exit status); only ``--task record`` / ``record_once`` are added, so the drills and the
benchmarks can count what the real CLI scheduled.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Final

from app.scheduler import PLANS, PlanFactory, main
from drill.tasks import RECORD_ONCE, record_plan

DRILL_PLANS: Final[Mapping[str, PlanFactory]] = {
    **PLANS,
    "record": record_plan,
    "record_once": lambda count, ms: record_plan(count, ms, RECORD_ONCE),
}


def run(argv: Sequence[str] | None = None) -> int:
    return main(argv, plans=DRILL_PLANS)


if __name__ == "__main__":
    sys.exit(run())
