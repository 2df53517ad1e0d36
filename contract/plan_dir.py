"""What makes a plan directory (``python -m plan`` output) complete, for everything that reads one.

``python -m plan`` builds a plan beside its target and renames it into place, so a failed write
leaves the previous plan; a directory missing one of these was not written by it (or by an older
tool, or was cut short by hand), and a drill or a diff on it would judge half a plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PLAN_ENTRIES: Final = ("resources.json", "engine.json", "settings.json", "kubernetes")
"""Written by every plan; ``kubernetes`` is a directory of one YAML file per object."""


class IncompletePlanError(FileNotFoundError):
    """The directory is not a complete plan; the message names it and what is missing."""


def check_complete(directory: Path) -> Path:
    """``directory`` when it holds a complete plan; raises IncompletePlanError naming it otherwise."""
    if not directory.is_dir():
        raise IncompletePlanError(f"{directory}: no plan there; build it with `make plan STACK=<stack>`")
    missing = [name for name in PLAN_ENTRIES if not (directory / name).exists()]
    if not (directory / "kubernetes").is_dir() or not any((directory / "kubernetes").glob("*.yaml")):
        missing.append("kubernetes/*.yaml")
    if missing:
        raise IncompletePlanError(
            f"{directory}: not a complete plan (missing {', '.join(dict.fromkeys(missing))}); rebuild it with"
            " `make plan STACK=<stack>`"
        )
    return directory
