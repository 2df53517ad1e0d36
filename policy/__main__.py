"""The policy pack the Pulumi CLI runs: `pulumi preview --policy-pack policy` (also `pulumi up`).

The CLI runs this file with ``policy/`` first on ``sys.path`` (``runpy.run_path`` on the pack
directory); the repository root goes in front so ``policy`` and ``contract`` import as packages,
as they do in the tests. Constructing ``PolicyPack`` starts the analyzer's gRPC server and
blocks: the policies themselves are built (and tested) in ``policy.pack``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pulumi_policy import PolicyPack  # noqa: E402

from policy.pack import ENFORCEMENT, PACK_NAME, policies  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=policies(),
    enforcement_level=ENFORCEMENT,
    description="The HA invariants of ha-celery: quorum brokers, dead-lettering, PDBs, placement, pinned images, "
    "no plain secrets, shutdown budgets, deletion protection.",
)
