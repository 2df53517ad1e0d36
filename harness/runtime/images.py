"""The plan's two container images as local root filesystems, and the one place plan image refs map to them.

The plan runs two images (build/plan/<stack>/kubernetes/*.yaml):

* ``rabbitmq:4.3.x-management`` (StatefulSet; or its Artifact Registry mirror ``<registry>/rabbitmq:<tag>``): a
  Debian forky root filesystem with rabbitmq-server, reshaped like the official image (harness/runtime/rootfs.py);
* ``<region>-docker.pkg.dev/<project>/ha-celery-<stack>/worker:<tag>@sha256:...`` (Deployment and scheduler Job):
  app/Dockerfile. Built here as a Debian bookworm root filesystem (its python3 is 3.11, the image's minor version)
  with the locked app/requirements.txt installed; the project's code is NOT baked in but bind-mounted read-only
  from the checkout, so a code change needs no rebuild.

:func:`ensure_images` builds or reuses both (cached under /var/cache/ha-celery/rootfs), :func:`image_for` maps a
plan ref to one of them, refusing anything else by name. Each :class:`Image` carries what a runtime needs (ENV,
ENTRYPOINT/CMD, USER, WORKDIR, binds) and every known difference from the real image, for reports: a local run that
silently differs from the plan is a false proof.

``python -m harness.runtime.images`` (``make images``) builds/reuses both and prints what it did, the versions and
timings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from contract.image import source_tag, tag_source
from contract.wire import WORKER_COMMAND
from harness.runtime import rootfs
from harness.runtime.rootfs import Bind, BuildReport, RootfsError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = rootfs.DEFAULT_CACHE_DIR

# --------------------------------------------------------------------------------------------------------------------
# The image type


@dataclass(frozen=True)
class Image:
    """One image as the local runtime runs it (see harness.runtime.rootfs.container_argv)."""

    name: str
    """"rabbitmq" or "worker"."""
    rootfs: Path
    """The shared, never-written root filesystem (each container gets an overlay over it)."""
    env: Mapping[str, str]
    """The image's ENV (inherited from its base image included); the pod's env is merged on top by the caller."""
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    uid: int
    """The image's USER."""
    gid: int
    workdir: str
    """The image's WORKDIR."""
    binds: tuple[Bind, ...]
    """Host paths every container of this image gets (the worker's code); pod volumes come after them."""
    version: str
    """What runs, for reports, e.g. "rabbitmq-server 4.3.6-1, erlang 1:29.1.1+dfsg-1"."""
    differences: tuple[str, ...]
    """Every known difference from the real image (image_for() prepends the plan-tag difference)."""
    upstream_version: str = ""
    """The version that runs, comparable with a plan tag: "4.3.6" (RabbitMQ), "3.11.2" (Python)."""
    build: BuildReport | None = field(default=None, compare=False)
    """What ensure_images() did to get it (built, extracted or reused, and the timings)."""

    def container_env(self, hostname: str, pod_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The complete environment for container_argv/exec_argv: this image's ENV, HOSTNAME, the pod's env."""
        return rootfs.container_env(self.env, hostname, pod_env)

    def command(self, command: Sequence[str] | None = None, args: Sequence[str] | None = None) -> list[str]:
        """The process argv for a container's command/args over this image's ENTRYPOINT/CMD (Kubernetes rules)."""
        return rootfs.pod_command(self.entrypoint, self.cmd, command, args)

    def container_argv(
        self,
        *,
        hostname: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        pod_binds: Sequence[Bind] = (),
        netns: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        workdir: str | None = None,
    ) -> list[str]:
        """harness.runtime.rootfs.container_argv for this image: *env* complete (see :meth:`container_env`), the
        image's binds before the pod's, uid/gid/workdir the image's unless the pod overrides them."""
        return rootfs.container_argv(
            self.rootfs,
            hostname=hostname,
            argv=argv,
            env=env,
            uid=self.uid if uid is None else uid,
            gid=self.gid if gid is None else gid,
            workdir=self.workdir if workdir is None else workdir,
            netns=netns,
            binds=(*self.binds, *pod_binds),
        )


# --------------------------------------------------------------------------------------------------------------------
# rabbitmq: harness/runtime/rootfs.py builds it; this is its Image value


def rabbitmq_image(cache_dir: Path = DEFAULT_CACHE_DIR, pinned: str = rootfs.DEFAULT_PINNED_RABBITMQ) -> Image:
    """Build or reuse the rabbitmq root filesystem (raises rootfs.PinnedVersionMismatch if the suite moved)."""
    root = rootfs.ensure_rootfs(cache_dir, pinned)
    versions = rootfs.dpkg_versions(root, ["rabbitmq-server", "erlang-base"])
    server = versions["rabbitmq-server"]
    return Image(
        name="rabbitmq",
        rootfs=root,
        env=dict(rootfs.IMAGE_ENV),
        entrypoint=rootfs.IMAGE_ENTRYPOINT,
        cmd=rootfs.IMAGE_CMD,
        uid=rootfs.IMAGE_UID,
        gid=rootfs.IMAGE_GID,
        # 4.3/ubuntu/Dockerfile sets no WORKDIR: a runtime then starts in "/".
        workdir="/",
        binds=(),
        version=f"rabbitmq-server {server}, erlang {versions.get('erlang-base', '?')}",
        differences=tuple(rootfs.IMAGE_DIFFERENCES),
        upstream_version=_debian_upstream(server),
        build=rootfs.LAST_BUILD[0] if rootfs.LAST_BUILD else None,
    )


def _debian_upstream(version: str) -> str:
    """ "1:29.1.1+dfsg-1" -> "29.1.1", "4.3.6-1" -> "4.3.6": drop epoch, Debian revision and repack suffix."""
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0]
    return re.split(r"[+~]", upstream, maxsplit=1)[0]


# --------------------------------------------------------------------------------------------------------------------
# worker: app/Dockerfile as a Debian bookworm root filesystem

#: python:3.11.16-slim-trixie ships CPython 3.11; trixie's python3 is 3.13 and forky's newer still, bookworm's is
#: 3.11 (3.11.2 plus Debian's security patches): the suite whose Python has the image's minor version (same bytecode
#: magic, same stdlib API). Checked after the bootstrap (WORKER_PYTHON_MINOR).
WORKER_SUITE = "bookworm"
WORKER_PYTHON_MINOR = "3.11"
#: bookworm-updates and -security carry the patched python3.11 (the point release alone is older).
WORKER_SOURCES: tuple[str, ...] = (
    f"deb {rootfs.MIRROR} {WORKER_SUITE} main",
    f"deb {rootfs.MIRROR} {WORKER_SUITE}-updates main",
    f"deb {rootfs.MIRROR}-security {WORKER_SUITE}-security main",
)
#: python3 for the interpreter; ca-certificates, netbase and tzdata are what docker-library's python slim image
#: installs as runtime dependencies (tzdata matters: zoneinfo, which Celery uses, needs the system zone files).
WORKER_PACKAGES: tuple[str, ...] = ("python3", "ca-certificates", "netbase", "tzdata")
#: Bump when :func:`_customize_worker` changes: it is part of the cache key, so old caches are not reused.
WORKER_REVISION = 2
#: What debian:*-slim (the python slim image's base, debuerreotype's --slim) leaves out of every package: docs, man
#: pages, locales. Keeps the rootfs at the slim image's shape and the tarball smaller.
WORKER_SLIM_EXCLUDES: tuple[str, ...] = (
    "/usr/share/doc/*",
    "/usr/share/groff/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
)
WORKER_REQUIREMENTS = "app/requirements.txt"
#: Where the image's pip puts the requirements is /usr/local/lib/python3.11/site-packages (its own CPython); Debian's
#: python3 looks in /usr/local/lib/python3.11/dist-packages instead (debian/patches: distutils-install-layout).
WORKER_SITE = "/usr/local/lib/python3.11/dist-packages"
WORKER_UID = 10001  # app/Dockerfile: groupadd --gid 10001 celery && useradd --uid 10001 --gid 10001 ... celery
WORKER_GID = 10001
WORKER_WORKDIR = "/tmp"  # app/Dockerfile: WORKDIR /tmp (the only writable place the worker needs)
WORKER_IMAGE_PYTHON = "3.11.16"  # app/Dockerfile: FROM python:3.11.16-slim-trixie
#: app/Dockerfile: CMD [...] (no ENTRYPOINT; python:3.11 sets none either). tests/unit/app/test_config.py keeps the
#: Dockerfile's CMD equal to contract.wire.WORKER_COMMAND, so that is the one copy used here.
WORKER_CMD: tuple[str, ...] = tuple(WORKER_COMMAND)
#: The worker image's ENV: python:3.11.16-slim-trixie's (PATH, LANG, GPG_KEY, PYTHON_VERSION; docker-library
#: python 3.11/slim-trixie/Dockerfile), then app/Dockerfile's, then HOME as the runtime derives it from /etc/passwd
#: for a USER without HOME (containerd and Docker both do: celery's home is /nonexistent).
WORKER_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "GPG_KEY": "A035C8C19219BA821ECEA86B64E628F8D684696D",
    "PYTHON_VERSION": WORKER_IMAGE_PYTHON,
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PIP_NO_CACHE_DIR": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONPATH": "/srv",
    "HOME": "/nonexistent",
}
#: Project folders mounted read-only into every worker container: what the image COPYs (app/, contract/; see
#: components.registry.WORKER_SOURCES), plus drill/ for the drills' counting tasks.
WORKER_CODE: tuple[tuple[str, str], ...] = (("app", "/srv/app"), ("contract", "/srv/contract"), ("drill", "/srv/drill"))

WORKER_DIFFERENCES_STATIC: tuple[str, ...] = (
    (
        f"Base OS is Debian {WORKER_SUITE} minbase with Debian's python3.11 at /usr/bin, not python:"
        f"{WORKER_IMAGE_PYTHON}-slim-trixie (Debian trixie slim + CPython built from source under /usr/local, "
        "--enable-optimizations --with-lto): different patch level (see the version) and Debian's patches."
    ),
    (
        "/usr/local/bin/python and /usr/local/bin/python3 are symlinks to /usr/bin/python3; there is no pip, "
        "setuptools or wheel in the image's Python (the image has them; PIP_* env is set but unused)."
    ),
    (
        f"The locked requirements are installed from the host with pip --require-hashes --no-deps (pure-Python "
        f"wheels only, same files and hashes) into {WORKER_SITE}, not /usr/local/lib/python3.11/site-packages; "
        "bytecode compiled by the root filesystem's python, as the image's pip does."
    ),
    (
        "The code is not baked in: the checkout's app/ and contract/ are bind-mounted read-only at /srv/app and "
        "/srv/contract (so what runs is the checkout now, whatever the plan's tag), not compiled by compileall "
        "(PYTHONDONTWRITEBYTECODE=1: imports compile in memory, or use the checkout's __pycache__), and they show "
        "files the image's .dockerignore leaves out (Dockerfile, Dockerfile.dockerignore, __pycache__)."
    ),
    (
        "drill/ is mounted at /srv/drill for the drill's counting and failing tasks (the drills add them "
        "with CELERY_WORKER_INCLUDE=drill.tasks,drill.failing); the image has no drill/."
    ),
    (
        "ENV PYTHON_SHA256 (the image's source tarball checksum) is not set: its 3.11.16 value was not verified "
        "here. HOME=/nonexistent is in the image ENV as the runtime would derive it from /etc/passwd."
    ),
    rootfs.CONTAINER_RUNTIME,
    (
        "The main process (celery) is PID 2 of the container; PID 1 is a root /bin/sh outside the chroot that "
        "forwards TERM/INT/HUP/QUIT/USR1/USR2 (image: celery is PID 1, exec-form CMD). Visible in /proc only."
    ),
)


def requirements_digest(requirements: Path) -> str:
    """First 16 hex digits of the requirements file's sha256 (part of the cache key)."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]


def worker_cache_key(python_version: str, requirements_sha: str) -> str:
    """File-name-safe key: suite, python3.11 Debian version, requirements digest, customization revision."""
    return f"{WORKER_SUITE}_python3.11_{python_version.replace(':', '%3A')}_req-{requirements_sha}_r{WORKER_REVISION}"


def _find_cached_worker(cache_dir: Path, requirements_sha: str) -> Path | None:
    # Any python3.11 build of the suite will do: Python is not pinned (the image's 3.11.16 is not in Debian anyway).
    suffix = f"_req-{requirements_sha}_r{WORKER_REVISION}.tar.zst"
    hits = [p for p in cache_dir.glob(f"{WORKER_SUITE}_python3.11_*.tar.zst") if p.name.endswith(suffix)]
    return max(hits, key=lambda p: p.stat().st_mtime) if hits else None


def _bootstrap_worker(dest: Path) -> None:
    """mmdebstrap into *dest*, in a private mount namespace so an interrupted build leaves no mount behind."""
    rootfs.mmdebstrap(
        dest,
        WORKER_SUITE,
        WORKER_PACKAGES,
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in WORKER_SLIM_EXCLUDES),
        # debuerreotype keeps copyright files and locale.alias when slimming; so does this.
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        mirrors=WORKER_SOURCES,
    )


def _host_pip() -> list[str]:
    """A pip on the host that can install into another root: the running interpreter's, else python3's.

    Host pip with --platform any --implementation py --only-binary=:all: accepts only pure-Python wheels, so a
    compiled wheel entering the lock fails here by name instead of installing for the wrong interpreter. (Measured:
    host pip ~3 s, uv ~0.4 s, pip inside the chroot would need python3-pip and DNS in the chroot; all dwarfed by the
    bootstrap, so the check wins.)
    """
    candidates = [sys.executable, shutil.which("python3") or ""]
    for python in (c for c in candidates if c):
        proc = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return [python, "-m", "pip"]
    raise RootfsError(
        "no pip on the host to install the worker's requirements: install python3-pip (apt) or run with a Python "
        "that has pip"
    )


def _install_requirements(root: Path, requirements: Path) -> None:
    target = root / WORKER_SITE.lstrip("/")
    rootfs._run(
        [
            *_host_pip(),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--require-hashes",
            "--no-deps",
            # Compiled below by the rootfs's own python, as the image's pip compiles with the image's.
            "--no-compile",
            "--only-binary=:all:",
            "--implementation=py",
            "--platform=any",
            f"--python-version={WORKER_PYTHON_MINOR}",
            f"--target={target}",
            "-r",
            str(requirements),
        ]
    )


def _console_script(root: Path, name: str) -> str:
    """The pip-style launcher for console entry point *name*, read from the installed dist-info."""
    site = root / WORKER_SITE.lstrip("/")
    for entry_points in sorted(site.glob("*.dist-info/entry_points.txt")):
        section = ""
        for raw in entry_points.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[console_scripts]" and "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                if key == name:
                    module, func = value.split(":", 1)
                    # What pip writes (shebang aside): /usr/local/bin/python, as the image's scripts point at its
                    # own interpreter.
                    return (
                        "#!/usr/local/bin/python\n"
                        "# -*- coding: utf-8 -*-\n"
                        "import re\n"
                        "import sys\n"
                        f"from {module} import {func.split('.')[0]}\n"
                        "if __name__ == '__main__':\n"
                        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                        f"    sys.exit({func}())\n"
                    )
    raise RootfsError(f"no console entry point {name!r} in {site}")


def _customize_worker(root: Path, requirements: Path) -> None:
    """app/Dockerfile's steps except the code COPY (the code is mounted): user, requirements, entry point."""
    rootfs._chroot_root(
        root,
        "\n".join(
            [
                # app/Dockerfile, verbatim: a named user for the numeric UID, so tools that look it up do not fail.
                f"groupadd --gid {WORKER_GID} celery",
                f"useradd --uid {WORKER_UID} --gid {WORKER_GID} --no-create-home --home-dir /nonexistent "
                "--shell /usr/sbin/nologin celery",
                # python:3.11's "useful symlinks"; the probes run `python -m app.health`.
                "mkdir -p /usr/local/bin /srv",
                "ln -sfn /usr/bin/python3 /usr/local/bin/python3",
                "ln -sfn /usr/bin/python3 /usr/local/bin/python",
            ]
        ),
    )
    _install_requirements(root, requirements)
    # pip --target leaves launchers with the HOST interpreter's shebang in <target>/bin: useless in the image.
    shutil.rmtree(root / WORKER_SITE.lstrip("/") / "bin", ignore_errors=True)
    celery = root / "usr/local/bin/celery"
    celery.write_text(_console_script(root, "celery"), encoding="utf-8")
    os.chmod(celery, 0o755)
    shutil.copyfile(requirements, root / "srv/requirements.txt")  # app/Dockerfile: COPY ... /srv/requirements.txt
    for _, target in WORKER_CODE:  # mount points, so the read-only lower layer already has them
        (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
    rootfs._chroot_root(root, f"python3 -m compileall -q -j0 {WORKER_SITE}")
    for leftover in (root / "tmp").iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


def _python_version(root: Path) -> str:
    found = rootfs.dpkg_versions(root, ["python3.11"]).get("python3.11")
    if found is None:
        raise RootfsError(
            f"Debian {WORKER_SUITE} has no python3.11 any more: the worker image needs Python "
            f"{WORKER_PYTHON_MINOR}; change WORKER_SUITE to a suite that has it"
        )
    return found


def ensure_worker_rootfs(
    cache_dir: Path = DEFAULT_CACHE_DIR, requirements: Path = PROJECT_ROOT / WORKER_REQUIREMENTS
) -> tuple[Path, rootfs.BuildReport]:
    """Return the worker root filesystem, building and caching it when needed (the rabbitmq one's scheme: a
    ``<key>.tar.zst`` and the extracted ``<key>/``, temps renamed into place under the cache's flock)."""
    cache_dir = Path(cache_dir)
    req_sha = requirements_digest(requirements)
    with rootfs._locked(cache_dir):
        rootfs._remove_stale_temps(cache_dir)
        tarball = _find_cached_worker(cache_dir, req_sha)
        if tarball is not None:
            dest = cache_dir / tarball.name.removesuffix(".tar.zst")
            if dest.is_dir():
                return dest, rootfs.BuildReport(dest, tarball, built=False, extracted=False)
            t0 = time.monotonic()
            rootfs._extract(tarball, dest)
            return dest, rootfs.BuildReport(dest, tarball, False, True, extract_seconds=time.monotonic() - t0)
        rootfs.ensure_host_tools()
        work = Path(tempfile.mkdtemp(prefix=".tmp-build-", dir=cache_dir))
        try:
            root = work / "root"
            t0 = time.monotonic()
            _bootstrap_worker(root)
            t1 = time.monotonic()
            python_version = _python_version(root)
            _customize_worker(root, requirements)
            t2 = time.monotonic()
            key = worker_cache_key(python_version, req_sha)
            tarball = cache_dir / f"{key}.tar.zst"
            rootfs._pack(root, tarball)
            t3 = time.monotonic()
            dest = cache_dir / key
            if dest.exists():  # an extracted dir without its tarball: stale, replace
                shutil.rmtree(dest)
            os.rename(root, dest)
            return dest, rootfs.BuildReport(dest, tarball, True, False, t1 - t0, t2 - t1, t3 - t2)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def locked_versions(requirements: Path) -> dict[str, str]:
    """``name==version`` pins of a requirements file (lower-case names)."""
    text = requirements.read_text(encoding="utf-8")
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, flags=re.MULTILINE)}


def worker_image(
    cache_dir: Path = DEFAULT_CACHE_DIR, project_root: Path = PROJECT_ROOT, requirements: Path | None = None
) -> Image:
    """Build or reuse the worker root filesystem; the Image mounts *project_root*'s code."""
    requirements = requirements or project_root / WORKER_REQUIREMENTS
    root, report = ensure_worker_rootfs(cache_dir, requirements)
    python = _python_version(root)
    upstream = _debian_upstream(python)
    celery = locked_versions(requirements).get("celery", "?")
    return Image(
        name="worker",
        rootfs=root,
        env=dict(WORKER_ENV),
        entrypoint=(),
        cmd=WORKER_CMD,
        uid=WORKER_UID,
        gid=WORKER_GID,
        workdir=WORKER_WORKDIR,
        binds=tuple(Bind(project_root / src, target, read_only=True) for src, target in WORKER_CODE),
        version=f"python {upstream} (Debian python3.11 {python}), celery {celery}",
        differences=(
            f"Python {upstream} (Debian {WORKER_SUITE} python3.11 {python}) instead of the image's "
            f"{WORKER_IMAGE_PYTHON}: same minor version, {WORKER_IMAGE_PYTHON} has newer bug and security fixes "
            "than 3.11.2 (Debian backports only the security ones).",
            *WORKER_DIFFERENCES_STATIC,
        ),
        upstream_version=upstream,
        build=report,
    )


# --------------------------------------------------------------------------------------------------------------------
# Both, and the ref mapping


def ensure_images(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    pinned_rabbitmq: str = rootfs.DEFAULT_PINNED_RABBITMQ,
    project_root: Path = PROJECT_ROOT,
) -> dict[str, Image]:
    """Build or reuse both images: {"rabbitmq": ..., "worker": ...}. Reuse is offline and takes milliseconds."""
    return {
        "rabbitmq": rabbitmq_image(cache_dir, pinned_rabbitmq),
        "worker": worker_image(cache_dir, project_root),
    }


#: rabbitmq:4.3.<patch>-management, bare (Docker Hub library) or under a registry path (the Artifact Registry mirror
#: components.registry makes: <region>-docker.pkg.dev/<project>/<repository>/rabbitmq:<tag>), optional digest.
_RABBITMQ_REF = re.compile(
    r"^(?:(?:(?:docker\.io/|registry-1\.docker\.io/)?library/)?rabbitmq:(?P<version>4\.3\.[0-9]+)-management"
    # The mirror (components.registry): <repository url>/[ha-celery-]rabbitmq:<upstream tag>-<archs>-<context hash>.
    r"|(?:[a-z0-9-]+-docker\.pkg\.dev/[a-z0-9-]+/[a-z0-9._-]+/|(?:(?:us|eu|asia)\.)?gcr\.io/[a-z0-9-]+/ha-celery-)"
    r"rabbitmq:(?P<mirrored>4\.3\.[0-9]+)-management(?:-(?:amd64|arm64))*(?:-[0-9a-f]{8})?)"
    r"(?:@sha256:[0-9a-f]{64})?$"
)
#: Anything ending in /worker:<tag>[@sha256:...]: components.registry pushes <repository url>/worker:<tag>
#: (contract.image.worker_tag), or <domain>/<project>/ha-celery-worker:<tag> in a gcr.io-domain repository.
_WORKER_REF = re.compile(
    r"^(?:[^/@\s]+/)+(?:ha-celery-)?worker:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?:@sha256:[0-9a-f]{64})?$"
)
SUPPORTED_REFS = (
    "rabbitmq:4.3.<patch>-management (Docker Hub, optionally docker.io/library/, or the Artifact Registry mirror "
    "<region>-docker.pkg.dev/<project>/<repository>/rabbitmq:4.3.<patch>-management[-<archs>-<hash>] or "
    "gcr.io/<project>/ha-celery-rabbitmq:...), optionally @sha256:<digest>; "
    "<registry>/.../worker:<tag>[@sha256:<digest>] (app/Dockerfile)"
)


class UnsupportedImage(ValueError):
    """A plan image ref no local runtime stands in for."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no local runtime for image {ref!r}; supported: {SUPPORTED_REFS}")


def ref_difference(ref: str, image: Image) -> str:
    """The difference between what *ref* names and what *image* runs locally, in one sentence."""
    if image.name == "rabbitmq":
        m = _RABBITMQ_REF.match(ref)
        if m is None:
            raise UnsupportedImage(ref)
        planned = m["version"] or m["mirrored"]
        if planned == image.upstream_version:
            return f"plan image {ref}: RabbitMQ {planned}; local runtime runs the same version ({image.version})"
        return f"plan image {ref}: RabbitMQ {planned}; local runtime runs {image.upstream_version} ({image.version})"
    m = _WORKER_REF.match(ref)
    if m is None:
        raise UnsupportedImage(ref)
    app = next((b.source for b in image.binds if b.target == "/srv/app"), None)
    local = source_tag(app.parent) if app is not None else "?"
    if tag_source(m["tag"]) == local:
        same = "the mounted checkout's app/ + contract/ hash to the same tag"
        return f"plan image {ref}: built from these sources ({same}); local runtime: {image.version}"
    return (
        f"plan image {ref}: built from sources tagged {m['tag']}; the mounted checkout's app/ + contract/ hash to "
        f"{local} (they changed since that plan was rendered): the local worker runs the checkout ({image.version})"
    )


def image_for(ref: str, images: Mapping[str, Image]) -> Image:
    """THE one place plan image refs map to local runtimes.

    Returns the matching Image with the plan-tag-vs-local difference first in ``differences``; raises
    :class:`UnsupportedImage` (naming the ref and what is supported) for anything else, e.g. another RabbitMQ line,
    a non-management or alpine variant, or another vendor's rabbitmq image.
    """
    if _RABBITMQ_REF.match(ref):
        name = "rabbitmq"
    elif _WORKER_REF.match(ref):
        name = "worker"
    else:
        raise UnsupportedImage(ref)
    if name not in images:
        raise KeyError(f"image {ref!r} maps to the local {name!r} image, which was not built (have: {sorted(images)})")
    image = images[name]
    return replace(image, differences=(ref_difference(ref, image), *image.differences))


# --------------------------------------------------------------------------------------------------------------------
# make images


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB" if path.exists() else "?"


def describe(image: Image) -> str:
    b = image.build
    if b is None:
        how = "reused"
    elif b.built:
        how = (
            f"built in {b.bootstrap_seconds + b.customize_seconds + b.pack_seconds:.1f}s (bootstrap "
            f"{b.bootstrap_seconds:.1f}s, customize {b.customize_seconds:.1f}s, pack {b.pack_seconds:.1f}s)"
        )
    elif b.extracted:
        how = f"extracted from the cached tarball in {b.extract_seconds:.1f}s"
    else:
        how = "reused"
    tarball = f", tarball {_size(b.tarball)}" if b is not None else ""
    return (
        f"{image.name}: {how}\n  rootfs  {image.rootfs}{tarball}\n  version {image.version}\n"
        f"  user {image.uid}:{image.gid}, workdir {image.workdir}, cmd {shlex.join([*image.entrypoint, *image.cmd])}\n"
        f"  {len(image.differences)} known differences from the real image"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.runtime.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--pinned-rabbitmq", default=rootfs.DEFAULT_PINNED_RABBITMQ)
    parser.add_argument("--differences", action="store_true", help="list every known difference")
    ns = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "harness.runtime.images: building the images needs root (mmdebstrap, chroot, namespaces)", file=sys.stderr
        )
        return 1
    t0 = time.monotonic()
    try:
        images = ensure_images(ns.cache_dir, pinned_rabbitmq=ns.pinned_rabbitmq)
    except RootfsError as exc:  # PinnedVersionMismatch says what moved and what to do
        print(f"harness.runtime.images: {exc}", file=sys.stderr)
        return 1
    for image in images.values():
        print(describe(image))
        if ns.differences:
            print("".join(f"    - {d}\n" for d in image.differences), end="")
    print(f"images ready in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
