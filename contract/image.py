"""What the worker image is built from, and the tag that names those bytes.

Shared by the cloud program (``components.registry`` tags and pushes the image) and the local
harness (``harness.images`` checks that the plan's tag names the checkout it runs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

WORKER_SOURCES: Final[tuple[str, ...]] = ("app", "contract")
"""The project folders the worker image is built from (app/Dockerfile.dockerignore admits exactly
these): the application and the contract it shares with the cloud program."""


def source_tag(root: Path, sources: tuple[str, ...] = WORKER_SOURCES) -> str:
    """A content hash of what the image is built from: the tag changes exactly when the image can.

    Tags are immutable in the repository, so a tag must never be reused for other bytes;
    a content hash also keeps `pulumi preview` quiet when nothing changed.
    """
    digest = hashlib.sha256()
    ignored = {"__pycache__", ".mypy_cache", ".pytest_cache"}
    files = (p for source in sources for p in (root / source).rglob("*") if p.is_file())
    for path in sorted(p for p in files if not ignored & set(p.parts)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


IMAGE_PLATFORMS: Final[tuple[str, ...]] = ("linux/amd64",)
"""The platforms the worker image (and the mirrored broker image) is built for. The stack settings
refuse machine types of other architectures (Arm families) while this holds only linux/amd64:
add "linux/arm64" here, and to the builds in components.registry, to lift that."""
