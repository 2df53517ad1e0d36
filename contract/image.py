"""What the images are built from, and the tags that name those bytes.

Shared by the cloud program (``components.registry`` tags and pushes the images), the stack settings
(which platforms are built) and the local harness (``harness.images`` checks that the plan's tag
names the checkout it runs).

A tag must change whenever pulumi-docker-build rebuilds, or the push of new bytes under an old tag
is refused by the repository's immutable tags. docker-build rebuilds when an input changes
(platforms, build args, tags) or when its ``contextHash`` does. That hash (provider
internal/context.go, v0.0.22) covers the Dockerfile's content, then, for every regular file or
symlink of the context that the ignore file (``<Dockerfile>.dockerignore``, else
``<context>/.dockerignore``) admits: its content (a symlink's target's), its path relative to the
context and its mode bits (a chmod or another umask at checkout rebuilds). Empty directories,
directory modes and owners are not hashed. :func:`context_hash` hashes the same inputs (not the same
bytes: the tag only has to change when docker-build's hash does, and stay put when it does not).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Final

WORKER_SOURCES: Final[tuple[str, ...]] = ("app", "contract")
"""The project folders the worker image is built from (app/Dockerfile.dockerignore admits exactly
these): the application and the contract it shares with the cloud program."""
WORKER_DOCKERFILE: Final = "app/Dockerfile"
"""The worker's Dockerfile, relative to its build context (the project root)."""
MIRROR_CONTEXT: Final = "images/rabbitmq-mirror"
"""Build context of the broker mirror, relative to the project root: only its two-line Dockerfile,
so the mirror rebuilds only when the broker image (a build arg) or the platforms change."""
MIRROR_IMAGE_ARG: Final = "RABBITMQ_IMAGE"
"""The mirror Dockerfile's build arg: the image it copies (``FROM ${RABBITMQ_IMAGE}``)."""


class ImagePlatforms(StrEnum):
    """The ``imagePlatforms`` setting: what the worker and mirror images are built for."""

    AMD64 = "amd64"
    """x86-64 only (the default: one build, no emulation; every non-Arm machine family)."""
    AMD64_ARM64 = "amd64,arm64"
    """A multi-arch image index: also runs on Arm node pools (T2A, C4A, N4A, A4X)."""

    @property
    def platforms(self) -> tuple[str, ...]:
        """OCI platforms, as docker-build takes them (``linux/amd64``)."""
        return tuple(f"linux/{arch}" for arch in self.value.split(","))

    @property
    def suffix(self) -> str:
        """Tag suffix naming the architectures (``amd64-arm64``): a platform change is a rebuild, so a new tag."""
        return self.value.replace(",", "-")


_Pattern = tuple[bool, re.Pattern[str], str]
"""(is an exception ``!``, regex, the literal text before the first wildcard)."""


def _pattern(line: str) -> _Pattern:
    """One ignore-file line, as moby's patternmatcher reads it."""
    negate = line.startswith("!")
    text = os.path.normpath(line[1:] if negate else line).lstrip("/")
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return negate, re.compile(f"^{out}$"), re.split(r"[*?\[]", text, maxsplit=1)[0]


@cache
def _ignore_patterns(ignore_file: Path) -> tuple[_Pattern, ...]:
    if not ignore_file.is_file():
        return ()
    lines = (line.strip() for line in ignore_file.read_text().splitlines())
    return tuple(_pattern(line) for line in lines if line and not line.startswith("#"))


def _excluded(rel: str, patterns: tuple[_Pattern, ...]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex, _ in patterns:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def _reachable(folder: str, exceptions: list[str]) -> bool:
    """Whether an exception pattern (by its literal prefix) could admit something inside an excluded *folder*."""
    inside = folder + "/"
    return any(inside.startswith(lit) or lit.startswith(inside) for lit in exceptions)


def context_files(context: Path, dockerfile: Path) -> Iterator[Path]:
    """The files of *context* that docker-build hashes (admitted by the ignore file), sorted by relative path."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = _ignore_patterns(ignore if ignore.is_file() else context / ".dockerignore")
    exceptions = [literal for negate, _, literal in patterns if negate]
    found: list[tuple[str, Path]] = []
    for top, dirs, files in os.walk(context):
        base = Path(top).relative_to(context).as_posix()
        # Prune excluded folders no exception could reach into (.venv, caches): the walk stays fast.
        dirs[:] = [
            d
            for d in dirs
            if not _excluded(rel := f"{base}/{d}".removeprefix("./"), patterns) or _reachable(rel, exceptions)
        ]
        for name in files:
            rel = f"{base}/{name}".removeprefix("./")
            path = Path(top, name)
            if _excluded(rel, patterns) or not (path.is_file() or path.is_symlink()) or path.is_dir():
                continue
            found.append((rel, path))
    return (path for _, path in sorted(found))


def context_hash(context: Path, dockerfile: Path) -> str:
    """sha256 hex of what docker-build's contextHash covers: Dockerfile content; path, content and mode of each file."""
    digest = hashlib.sha256()
    digest.update(dockerfile.read_bytes() + b"\0")
    for path in context_files(context, dockerfile):
        if not path.exists():  # a dangling symlink: docker-build cannot read it either
            continue
        mode = os.lstat(path).st_mode
        rel = path.relative_to(context).as_posix()
        digest.update(f"{rel}\0{mode:o}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def source_tag(root: Path) -> str:
    """16 hex digits of the worker's build context (:func:`context_hash`): they change exactly when docker-build's do.

    Tags are immutable in the repository, so a tag must never be reused for other bytes; a tag
    that names the context also keeps `pulumi up` from rebuilding an unchanged tree.
    """
    return context_hash(root, root / WORKER_DOCKERFILE)[:16]


def worker_tag(root: Path, platforms: ImagePlatforms) -> str:
    """The worker image's tag: ``<source_tag>-<architectures>``, e.g. ``0123456789abcdef-amd64``."""
    return f"{source_tag(root)}-{platforms.suffix}"


def tag_source(tag: str) -> str:
    """The source part of a worker tag (what :func:`source_tag` of the checkout is compared with)."""
    return tag.split("-", 1)[0]


def mirror_tag(root: Path, image: str, platforms: ImagePlatforms) -> str:
    """The broker mirror's tag: the upstream tag, the architectures and 8 hex digits of the mirror context.

    ``rabbitmq:4.3.6-management`` -> ``4.3.6-management-amd64-1a2b3c4d``. The upstream tag keeps the
    version readable; the rest changes whenever docker-build would rebuild the mirror.
    """
    context = root / MIRROR_CONTEXT
    upstream = image.rsplit("/", 1)[-1].split(":", 1)[1]
    return f"{upstream}-{platforms.suffix}-{context_hash(context, context / 'Dockerfile')[:8]}"
