"""A Debian forky root filesystem that stands in for the official ``rabbitmq:4.3-management`` image.

Three things, stdlib only:

* :func:`ensure_rootfs` builds (once) a forky rootfs with Debian's ``rabbitmq-server`` installed, reshaped to look
  like the docker-library image as far as a pod spec can tell (uid/gid 999, paths, conf.d, enabled plugins, env,
  entrypoint), and caches it as a zstd tarball plus an extracted directory.
* :func:`container_argv` returns the argv that runs one "container" of *any* image root filesystem (this one or the
  worker's, see harness/runtime/images.py): private mount/UTS/IPC/PID namespaces, optionally inside a named network
  namespace, an overlay over the shared rootfs (so a container never changes it), its own /proc, /dev, hostname, bind
  mounts, then the container's root, user and confinement (harness/runtime/confine.py). It knows nothing of an
  image: the caller passes the image's uid/gid/workdir and the complete environment (:func:`container_env`), so
  harness/runtime/images.py is the one place image facts are chosen.
* :func:`exec_argv` is ``kubectl exec``: it enters a running container's namespaces and root.

Everything a container mounts lives in its own mount namespace, so nothing stays mounted on the host when it dies,
even by SIGKILL (``unshare --kill-child`` takes the container's PID 1 down with the ``unshare`` process).

Image facts are from github.com/docker-library/rabbitmq, files ``4.3/ubuntu/Dockerfile``,
``4.3/ubuntu/management/Dockerfile``, ``4.3/ubuntu/10-defaults.conf`` and ``4.3/ubuntu/docker-entrypoint.sh``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.runtime import confine
from harness.runtime.confine import Confinement

# --------------------------------------------------------------------------------------------------------------------
# Build parameters

DEFAULT_CACHE_DIR = Path("/var/cache/ha-celery/rootfs")
DEFAULT_PINNED_RABBITMQ = "4.3.6-1"
SUITE = "forky"
MIRROR = "http://deb.debian.org/debian"
#: Bump when the reshaping in :func:`_customize` changes: it is part of the cache key, so old caches are not reused.
CUSTOMIZATION_REVISION = 1
HOST_PACKAGES: Mapping[str, str] = {"mmdebstrap": "mmdebstrap", "zstd": "zstd"}
ZSTD_LEVEL = 10

# --------------------------------------------------------------------------------------------------------------------
# Facts about the official image (docker-library/rabbitmq, 4.3/ubuntu/*). The build below uses them; at run time they
# reach containers only through harness.runtime.images.Image (the runtime functions further down take no image
# defaults).

IMAGE_UID = 999  # 4.3/ubuntu/Dockerfile: useradd --uid 999 --system --home-dir "$RABBITMQ_DATA_DIR" --gid rabbitmq
IMAGE_GID = 999  # 4.3/ubuntu/Dockerfile: groupadd --gid 999 --system rabbitmq
IMAGE_USER = "rabbitmq"
IMAGE_DATA_DIR = "/var/lib/rabbitmq"
IMAGE_RABBITMQ_HOME = "/opt/rabbitmq"
#: ENTRYPOINT ["docker-entrypoint.sh"] and CMD ["rabbitmq-server"] (4.3/ubuntu/Dockerfile; management inherits both).
IMAGE_ENTRYPOINT: tuple[str, ...] = ("docker-entrypoint.sh",)
IMAGE_CMD: tuple[str, ...] = ("rabbitmq-server",)
#: Every ENV of 4.3/ubuntu/Dockerfile's final stage (the management Dockerfile adds none), in effect order.
#: RABBITMQ_VERSION/PGP key id are upstream's values, kept so scripts that read them see what the image shows.
IMAGE_ENV: Mapping[str, str] = {
    "PATH": "/opt/rabbitmq/sbin:/opt/erlang/bin:/opt/openssl/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
    "/sbin:/bin",
    "ERLANG_INSTALL_PATH_PREFIX": "/opt/erlang",
    "OPENSSL_INSTALL_PATH_PREFIX": "/opt/openssl",
    "RABBITMQ_DATA_DIR": IMAGE_DATA_DIR,
    "RABBITMQ_VERSION": "4.3.2",
    "RABBITMQ_PGP_KEY_ID": "0x0A9AF2115F4687BD29803A206B73A36E6026DFCA",
    "RABBITMQ_HOME": IMAGE_RABBITMQ_HOME,
    "HOME": IMAGE_DATA_DIR,
    "LANG": "C.UTF-8",
    "LANGUAGE": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "RUNNING_UNDER_SYSTEMD": "true",
}
#: 4.3/ubuntu/10-defaults.conf, copied to /etc/rabbitmq/conf.d/ (chown rabbitmq:rabbitmq). The base image also copies
#: 20-management_agent.disable_metrics_collector.conf, which 4.3/ubuntu/management/Dockerfile deletes again.
IMAGE_DEFAULTS_CONF = """\
## DEFAULT SETTINGS ARE NOT MEANT TO BE TAKEN STRAIGHT INTO PRODUCTION
## see https://www.rabbitmq.com/configure.html for further information
## on configuring RabbitMQ

## allow access to the guest user from anywhere on the network
## https://www.rabbitmq.com/access-control.html#loopback-users
## https://www.rabbitmq.com/production-checklist.html#users
loopback_users.guest = false

## Send all logs to stdout/TTY. Necessary to see logs when running via
## a container
log.console = true
"""
#: Base Dockerfile: `rabbitmq-plugins enable --offline rabbitmq_prometheus`; management Dockerfile:
#: `rabbitmq-plugins enable --offline rabbitmq_management`. Both run at build time, in this order.
IMAGE_PLUGINS: tuple[str, ...] = ("rabbitmq_prometheus", "rabbitmq_management")
#: Directories the Dockerfile creates, chowns rabbitmq:rabbitmq and chmods 1777.
IMAGE_1777_DIRS: tuple[str, ...] = (
    IMAGE_DATA_DIR,
    "/etc/rabbitmq",
    "/etc/rabbitmq/conf.d",
    "/tmp/rabbitmq-ssl",
    "/var/log/rabbitmq",
)
#: 4.3/ubuntu/docker-entrypoint.sh (MIT, docker-library), verbatim except that this comment replaces none of it.
DOCKER_ENTRYPOINT_SH = """\
#!/usr/bin/env bash
set -euo pipefail

# allow the container to be started with `--user`
if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = '0' ]; then
\tif [ "$1" = 'rabbitmq-server' ]; then
\t\tfind /var/lib/rabbitmq \\! -user rabbitmq -exec chown rabbitmq '{}' +
\tfi

\texec gosu rabbitmq "$BASH_SOURCE" "$@"
fi

deprecatedEnvVars=(
\tRABBITMQ_DEFAULT_PASS_FILE
\tRABBITMQ_DEFAULT_USER_FILE
\tRABBITMQ_MANAGEMENT_SSL_CACERTFILE
\tRABBITMQ_MANAGEMENT_SSL_CERTFILE
\tRABBITMQ_MANAGEMENT_SSL_DEPTH
\tRABBITMQ_MANAGEMENT_SSL_FAIL_IF_NO_PEER_CERT
\tRABBITMQ_MANAGEMENT_SSL_KEYFILE
\tRABBITMQ_MANAGEMENT_SSL_VERIFY
\tRABBITMQ_SSL_CACERTFILE
\tRABBITMQ_SSL_CERTFILE
\tRABBITMQ_SSL_DEPTH
\tRABBITMQ_SSL_FAIL_IF_NO_PEER_CERT
\tRABBITMQ_SSL_KEYFILE
\tRABBITMQ_SSL_VERIFY
\tRABBITMQ_VM_MEMORY_HIGH_WATERMARK
)
hasOldEnv=
for old in "${deprecatedEnvVars[@]}"; do
\tif [ -n "${!old:-}" ]; then
\t\techo >&2 "error: $old is set but deprecated"
\t\thasOldEnv=1
\tfi
done
if [ -n "$hasOldEnv" ]; then
\techo >&2 'error: deprecated environment variables detected'
\techo >&2
\techo >&2 'Please use a configuration file instead; visit https://www.rabbitmq.com/configure.html to learn more'
\techo >&2
\texit 1
fi

# if long and short hostnames are not the same, use long hostnames
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
\t: "${RABBITMQ_USE_LONGNAME:=true}"
fi

exec "$@"
"""

#: What still differs from rabbitmq:4.3.x-management after reshaping (for reports).
CONTAINER_RUNTIME = (
    "Containers get an overlay (tmpfs upper) over the shared rootfs, /dev as a tmpfs with host null/zero/full/"
    "random/urandom/tty bound in, read-only sysfs, and RLIMIT_NOFILE as inherited (the host's); in cgroups "
    "of their limits (harness/kube/limits.py), confined as the pod's securityContext says "
    "(harness/kube/security.py: bounding set, no_new_privs, seccomp, read-only root)."
)
"""How every container of either image runs here (listed among both images' differences)."""
IMAGE_DIFFERENCES: list[str] = [
    (
        "Base OS is Debian forky (minbase), not Ubuntu 24.04; RabbitMQ is Debian's rabbitmq-server package, not the "
        "upstream generic-unix tarball (same scripts, Debian patches)."
    ),
    (
        "Erlang/OTP is Debian's (OTP 29 from forky at build time) under /usr/lib/erlang, not OTP 27.3.4.x built from "
        "source under /opt/erlang; OpenSSL is Debian's libssl3, not 3.5.x with the FIPS provider under /opt/openssl "
        "(both /opt dirs do not exist; PATH still lists them, as the image's does)."
    ),
    (
        "RABBITMQ_VERSION env says what the image says (4.3.2 at the time of reading); the installed server is the "
        "pinned Debian version (see the cache key); the plan's image tag may differ again (the pod runner reports it)."
    ),
    (
        "/opt/rabbitmq is a symlink to /usr/lib/rabbitmq/lib/rabbitmq_server-<version> (root-owned), not a "
        "rabbitmq-owned directory; /plugins -> /opt/rabbitmq/plugins as in the image."
    ),
    (
        "/usr/sbin/rabbitmq* exist (the image has none there); they are re-pointed from Debian's su/runuser wrappers "
        "to /opt/rabbitmq/sbin/*, so any path runs the upstream script directly, as the image does."
    ),
    (
        "No gosu: the entrypoint's root branch (`exec gosu rabbitmq ...`) fails if a container is started as uid 0 "
        "with a rabbitmq* command. Pods here run as 999, which never takes that branch."
    ),
    "No rabbitmqadmin (the management image downloads the rabbitmqadmin-ng binary); no tzdata/ca-certificates.",
    "Group id 999 belonged to forky's `lpadmin` group; lpadmin was renumbered to a free system gid.",
    "The rabbitmq account's shell is /bin/sh (image: useradd default /bin/sh); Debian's was /usr/sbin/nologin.",
    CONTAINER_RUNTIME,
    (
        "The main process (docker-entrypoint.sh -> rabbitmq-server -> beam.smp) is PID 2 of the container; PID 1 is a "
        "root /bin/sh outside the chroot that forwards TERM/INT/HUP/QUIT/USR1/USR2 (image: beam.smp is PID 1 thanks "
        "to RUNNING_UNDER_SYSTEMD=true). Visible in the container's /proc only."
    ),
]

#: Where each fact above was read (path in docker-library/rabbitmq at the commit fetched).
IMAGE_FACT_SOURCES: Mapping[str, str] = {
    "uid/gid 999, HOME/RABBITMQ_DATA_DIR, 1777 dirs, /root/.erlang.cookie link, ENV, ENTRYPOINT/CMD, prometheus": (
        "4.3/ubuntu/Dockerfile"
    ),
    "rabbitmq_management enabled; 20-management_agent.disable_metrics_collector.conf removed": (
        "4.3/ubuntu/management/Dockerfile"
    ),
    "conf.d/10-defaults.conf (loopback_users.guest = false, log.console = true)": "4.3/ubuntu/10-defaults.conf",
    "entrypoint: gosu step-down only for uid 0, deprecated env check, RABBITMQ_USE_LONGNAME if hostname != -s": (
        "4.3/ubuntu/docker-entrypoint.sh"
    ),
    "logs to stdout via log.console in conf.d since 3.9 (RABBITMQ_LOGS=- is gone)": (
        "commit 3e8f0f1 'Use conf.d to enable console logging in RMQ 3.9+'"
    ),
}


class RootfsError(RuntimeError):
    """Building, caching or running the rootfs failed."""


class PinnedVersionMismatch(RootfsError):
    """The archive carries another rabbitmq-server than the pinned one."""

    def __init__(self, pinned: str, found: str) -> None:
        self.pinned = pinned
        self.found = found
        super().__init__(
            f"Debian {SUITE} now carries rabbitmq-server {found}, but {pinned} is pinned. "
            f"No rootfs was cached for {found}: refusing to test another version silently. "
            f"To move on, review the {found} changelog, then pass pinned={found!r} (and update the pin where it is "
            f"kept); to stay on {pinned}, restore a cache tarball built for it into the cache directory."
        )


# --------------------------------------------------------------------------------------------------------------------
# Small helpers


def _run(argv: Sequence[str], *, input_text: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RootfsError(
            f"command failed ({proc.returncode}): {shlex.join(argv)}\nstdout: {proc.stdout[-4000:]}\n"
            f"stderr: {proc.stderr[-4000:]}"
        )
    return proc.stdout


def ensure_host_tools() -> None:
    """Install mmdebstrap and zstd with apt when missing (util-linux's unshare/nsenter are essential)."""
    missing = [pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RootfsError(f"{shlex.join(argv)} failed: {proc.stderr[-2000:]}")


def dpkg_versions(root: Path, packages: Sequence[str]) -> dict[str, str]:
    """Installed versions of *packages* read from root/var/lib/dpkg/status (missing ones are left out)."""
    wanted = set(packages)
    found: dict[str, str] = {}
    text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8")
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, flags=re.MULTILINE))
        name = fields.get("Package")
        if name in wanted and fields.get("Status", "").endswith(" installed"):
            found[name] = fields["Version"]
    return found


def cache_key(rabbitmq_version: str, erlang_version: str) -> str:
    """File-name-safe key: suite, rabbitmq-server and erlang-base versions, customization revision."""

    def safe(v: str) -> str:
        return v.replace(":", "%3A")

    return (
        f"{SUITE}_rabbitmq-server_{safe(rabbitmq_version)}_erlang-base_{safe(erlang_version)}_r{CUSTOMIZATION_REVISION}"
    )


def _find_cached(cache_dir: Path, pinned: str) -> Path | None:
    prefix = f"{SUITE}_rabbitmq-server_{pinned.replace(':', '%3A')}_erlang-base_"
    suffix = f"_r{CUSTOMIZATION_REVISION}.tar.zst"
    hits = [p for p in cache_dir.glob("*.tar.zst") if p.name.startswith(prefix) and p.name.endswith(suffix)]
    return max(hits, key=lambda p: p.stat().st_mtime) if hits else None


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temps(cache_dir: Path) -> None:
    """Left by an interrupted build; only called under the cache lock, so no live build owns them."""
    for p in cache_dir.glob(".tmp-*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _extract(tarball: Path, dest: Path) -> None:
    """Extract *tarball* to *dest* atomically (temp dir beside it, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-x-", dir=dest.parent))
    try:
        _run(["tar", "--numeric-owner", "-xpf", str(tarball), "-I", "zstd -T0", "-C", str(tmp)])
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pack(root: Path, tarball: Path) -> None:
    tmp = tarball.with_name(f".tmp-{os.getpid()}-{tarball.name}")
    _run(["tar", "--numeric-owner", "-cpf", str(tmp), "-I", f"zstd -T0 -{ZSTD_LEVEL}", "-C", str(root), "."])
    os.rename(tmp, tarball)


# --------------------------------------------------------------------------------------------------------------------
# Building


def mmdebstrap(
    dest: Path, suite: str, packages: Sequence[str], *options: str, mirrors: Sequence[str] = (MIRROR,)
) -> None:
    """A minbase *suite* with *packages* into *dest*, in a private mount namespace so an interrupted
    build leaves no mount behind."""
    _run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            *options,
            suite,
            str(dest),
            *mirrors,
        ]
    )


def _debootstrap(dest: Path) -> None:
    mmdebstrap(dest, SUITE, ["rabbitmq-server"], '--aptopt=Acquire::Check-Valid-Until "false"')


def _chroot_root(root: Path, script: str) -> None:
    _run(["unshare", "--mount", "--propagation", "private", "--", "chroot", str(root), "/bin/sh", "-euc", script])


def _free_system_id(used: set[int]) -> int:
    for candidate in range(998, 99, -1):
        if candidate not in used:
            return candidate
    raise RootfsError("no free system id below 999")


def _ids(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out[parts[0]] = int(parts[2])
    return out


def _customize(root: Path, rabbitmq_version: str) -> None:
    """Reshape Debian's package into the image's layout (see IMAGE_* constants and IMAGE_DIFFERENCES)."""
    upstream = rabbitmq_version.rsplit(":", maxsplit=1)[-1].rsplit("-", 1)[0]
    server_dir = f"/usr/lib/rabbitmq/lib/rabbitmq_server-{upstream}"
    if not (root / server_dir.lstrip("/") / "sbin/rabbitmq-server").is_file():
        raise RootfsError(f"{server_dir}/sbin/rabbitmq-server not found in the rootfs")
    users, groups = _ids(root / "etc/passwd"), _ids(root / "etc/group")
    old_uid, old_gid = users[IMAGE_USER], groups[IMAGE_USER]
    steps: list[str] = []
    for name, gid in groups.items():
        if gid == IMAGE_GID and name != IMAGE_USER:  # forky: lpadmin
            steps.append(f"groupmod -g {_free_system_id(set(groups.values()))} {shlex.quote(name)}")
    for name, uid in users.items():
        if uid == IMAGE_UID and name != IMAGE_USER:
            steps.append(f"usermod -u {_free_system_id(set(users.values()))} {shlex.quote(name)}")
    steps += [
        f"groupmod -g {IMAGE_GID} {IMAGE_USER}",
        f"usermod -u {IMAGE_UID} -g {IMAGE_GID} -s /bin/sh -d {IMAGE_DATA_DIR} {IMAGE_USER}",
        f"find / -xdev -uid {old_uid} -exec chown -h {IMAGE_UID} {{}} +",
        f"find / -xdev -gid {old_gid} -exec chgrp -h {IMAGE_GID} {{}} +",
        # Debian's postinst made a cookie and an empty mnesia dir; the image asserts there is no stale cookie.
        f"rm -f {IMAGE_DATA_DIR}/.erlang.cookie /etc/rabbitmq/rabbitmq-env.conf",
        f"rmdir {IMAGE_DATA_DIR}/mnesia 2>/dev/null || true",
        "mkdir -p " + " ".join(IMAGE_1777_DIRS),
        f"chown -fR {IMAGE_UID}:{IMAGE_GID} " + " ".join(IMAGE_1777_DIRS),
        "chmod 1777 " + " ".join(IMAGE_1777_DIRS),
        f"ln -sf {IMAGE_DATA_DIR}/.erlang.cookie /root/.erlang.cookie",
        f"ln -sfn {server_dir} {IMAGE_RABBITMQ_HOME}",
        f"ln -sfn {IMAGE_RABBITMQ_HOME}/plugins /plugins",
        # Debian's /usr/sbin wrappers: as a uid that is not `rabbitmq` they print help and exit 1 (rabbitmq-server
        # even runs the server first, without its arguments, then fails); as `rabbitmq` the server's output goes to
        # /var/log/rabbitmq/startup_log; as root they su/runuser. The image runs the upstream scripts directly.
        (
            f"for f in /usr/sbin/rabbitmq*; do b=${{f##*/}}; "
            f"if [ -e {IMAGE_RABBITMQ_HOME}/sbin/$b ]; then ln -sf {IMAGE_RABBITMQ_HOME}/sbin/$b $f; fi; done"
        ),
        "mkdir -p /usr/local/bin",
    ]
    _chroot_root(root, "\n".join(steps))
    (root / "usr/local/bin/docker-entrypoint.sh").write_text(DOCKER_ENTRYPOINT_SH, encoding="utf-8")
    os.chmod(root / "usr/local/bin/docker-entrypoint.sh", 0o755)
    defaults = root / "etc/rabbitmq/conf.d/10-defaults.conf"
    defaults.write_text(IMAGE_DEFAULTS_CONF, encoding="utf-8")
    os.chown(defaults, IMAGE_UID, IMAGE_GID)
    # As the image does: enable plugins offline, then smoke-test as the rabbitmq user, then drop the cookie made.
    build_env = container_env(IMAGE_ENV, "build")
    smoke: list[list[str]] = [["rabbitmq-plugins", "enable", "--offline", p] for p in IMAGE_PLUGINS]
    smoke += [["rabbitmqctl", "help"], ["rabbitmq-plugins", "list"]]
    for argv in smoke:
        _run(
            container_argv(
                root,
                hostname="build",
                argv=argv,
                env=build_env,
                uid=IMAGE_UID,
                gid=IMAGE_GID,
                workdir="/",
                overlay=False,
            )
        )
    for leftover in (root / IMAGE_DATA_DIR.lstrip("/")).iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
    for leftover in (root / "tmp").iterdir():
        if leftover.name != "rabbitmq-ssl":
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


@dataclass(frozen=True)
class BuildReport:
    """What the last :func:`ensure_rootfs` call did (seconds are wall clock; 0 when skipped)."""

    rootfs: Path
    tarball: Path
    built: bool
    extracted: bool
    bootstrap_seconds: float = 0.0
    customize_seconds: float = 0.0
    pack_seconds: float = 0.0
    extract_seconds: float = 0.0


LAST_BUILD: list[BuildReport] = []


def ensure_rootfs(cache_dir: Path, pinned: str) -> Path:
    """Return an extracted rootfs with rabbitmq-server *pinned* installed, building and caching it when needed.

    The cache holds ``<key>.tar.zst`` and the extracted ``<key>/`` where key names the suite, the rabbitmq-server and
    erlang-base versions and :data:`CUSTOMIZATION_REVISION`. A cached tarball for *pinned* is reused without any
    network access. Otherwise forky is bootstrapped; if it carries another rabbitmq-server,
    :class:`PinnedVersionMismatch` is raised and nothing is cached. All work happens in ``.tmp-*`` entries that are
    renamed into place, under an flock, so an interrupted call leaves nothing that a later call would trust.
    """
    cache_dir = Path(cache_dir)
    with _locked(cache_dir):
        _remove_stale_temps(cache_dir)
        tarball = _find_cached(cache_dir, pinned)
        if tarball is not None:
            dest = cache_dir / tarball.name.removesuffix(".tar.zst")
            if dest.is_dir():
                LAST_BUILD[:] = [BuildReport(dest, tarball, built=False, extracted=False)]
                return dest
            t0 = time.monotonic()
            _extract(tarball, dest)
            LAST_BUILD[:] = [BuildReport(dest, tarball, False, True, extract_seconds=time.monotonic() - t0)]
            return dest
        ensure_host_tools()
        work = Path(tempfile.mkdtemp(prefix=".tmp-build-", dir=cache_dir))
        try:
            root = work / "root"
            t0 = time.monotonic()
            _debootstrap(root)
            t1 = time.monotonic()
            versions = dpkg_versions(root, ["rabbitmq-server", "erlang-base"])
            found = versions.get("rabbitmq-server", "<not installed>")
            if found != pinned:
                raise PinnedVersionMismatch(pinned, found)
            _customize(root, found)
            t2 = time.monotonic()
            key = cache_key(found, versions["erlang-base"])
            tarball = cache_dir / f"{key}.tar.zst"
            _pack(root, tarball)
            t3 = time.monotonic()
            dest = cache_dir / key
            if dest.exists():  # an extracted dir without its tarball: stale, replace
                shutil.rmtree(dest)
            os.rename(root, dest)
            LAST_BUILD[:] = [BuildReport(dest, tarball, True, False, t1 - t0, t2 - t1, t3 - t2)]
            return dest
        finally:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# Running containers

#: Host directory on which each container mounts its private tmpfs (overlay upper/work + merged root). The directory
#: is created once and stays empty on the host: the tmpfs exists only in the container's mount namespace.
CONTAINER_STAGE = "/run/ha-celery-rootfs"
DEVICES: tuple[str, ...] = ("null", "zero", "full", "random", "urandom", "tty")
FORWARDED_SIGNALS: tuple[str, ...] = ("TERM", "INT", "HUP", "QUIT", "USR1", "USR2")


@dataclass(frozen=True)
class Bind:
    """Bind-mount host path *source* (file or directory) at *target* inside the container."""

    source: Path
    target: str
    read_only: bool = False


def container_env(
    image_env: Mapping[str, str], hostname: str, pod_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The complete environment of a container process: the image's ENV, then HOSTNAME as a runtime sets it, then the
    pod's env (which wins, as in Kubernetes)."""
    merged = dict(image_env)
    merged["HOSTNAME"] = hostname
    merged.update(pod_env or {})
    return merged


def _env_argv(env: Mapping[str, str], workdir: str, argv: Sequence[str]) -> list[str]:
    for key in env:
        if not key or "=" in key:
            raise ValueError(f"bad environment variable name {key!r}")
    if "=" in argv[0]:  # env would take it for an assignment
        raise ValueError(f"command name must not contain '=': {argv[0]!r}")
    return ["/usr/bin/env", "-i", f"--chdir={workdir}", *(f"{k}={v}" for k, v in env.items()), *argv]


def container_argv(
    rootfs: Path,
    *,
    hostname: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    uid: int,
    gid: int,
    workdir: str,
    netns: str | None = None,
    binds: Sequence[Bind] = (),
    overlay: bool = True,
    confinement: Confinement = confine.DEFAULT,
    groups: Sequence[int] | None = None,
) -> list[str]:
    """Argv that runs *argv* as one container of the image whose root filesystem is *rootfs* (run it as root).

    *env* is the COMPLETE environment (image ENV + HOSTNAME + pod env, see :func:`container_env`); *uid*/*gid*/
    *workdir* are the image's USER/WORKDIR (or the pod's securityContext/workingDir); *binds* are the image's binds
    followed by the pod's volumes. Nothing here defaults to one image's values: a wrong image must not run silently.

    * ``nsenter --net=/run/netns/NETNS`` when *netns* is given (``ip netns add`` names);
    * ``unshare --mount --uts --ipc --pid --fork --kill-child``: the container's PID 1 (a supervising shell; the main
      process is PID 2) is killed when the returned process dies, the kernel then kills the whole PID namespace, and
      every mount below lives only in that private mount namespace. SIGTERM to the runner is ignored by unshare:
      stop a container with :func:`stop_container` (TERM to PID 1, forwarded to the main process);
    * with *overlay* (default) the root is an overlay of *rootfs* under a tmpfs upper layer, so the shared rootfs is
      never written (mount points for *binds* are created in the upper layer). ``overlay=False`` writes to *rootfs*
      (used while building it);
    * a fresh /proc (this PID namespace), a tmpfs /dev with the host's null/zero/full/random/urandom/tty, /dev/shm,
      read-only /sys, the hostname set in the new UTS namespace, *binds* in order (mount a parent before a child);
    * with ``confinement.read_only_root`` the root remounted read-only once the binds are in place (runc's
      readonly rootfs: the volumes, /dev and /dev/shm stay writable);
    * :mod:`harness.runtime.enter` (see :mod:`harness.runtime.confine`): chroot, capability bounding set,
      no_new_privs, seccomp, then uid:gid with *groups* (default: just *gid*), and ``env -i`` with exactly *env* and
      ``--chdir=workdir``.

    *argv* is the full command (use :func:`pod_command` to combine the image's ENTRYPOINT/CMD as Kubernetes does).
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if confinement.read_only_root and not overlay:
        raise ValueError("a read-only root needs the overlay (without it the root is the shared rootfs itself)")
    for b in binds:
        if not b.target.startswith("/") or ".." in b.target.split("/"):
            raise ValueError(f"bind target must be an absolute path without '..': {b.target!r}")
    q = shlex.quote
    lines = ["set -eu"]
    if overlay:
        lines += [
            f"mkdir -p {CONTAINER_STAGE}",
            f"mount -t tmpfs -o mode=0755 ha-celery-ctr {CONTAINER_STAGE}",
            f"mkdir {CONTAINER_STAGE}/upper {CONTAINER_STAGE}/work {CONTAINER_STAGE}/root",
            (
                f"mount -t overlay overlay -o lowerdir={q(str(rootfs))},upperdir={CONTAINER_STAGE}/upper,"
                f"workdir={CONTAINER_STAGE}/work {CONTAINER_STAGE}/root"
            ),
            f"R={CONTAINER_STAGE}/root",
        ]
    else:
        lines.append(f"R={q(str(rootfs))}")
    lines += [
        'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
        'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"',
        'mount -t tmpfs -o mode=0755,nosuid dev "$R/dev"',
        'mkdir "$R/dev/shm" "$R/dev/pts"',
        'mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"',
        'ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"',
        'ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"',
        f'for d in {" ".join(DEVICES)}; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done',
    ]
    for b in binds:
        src, tgt = q(str(b.source)), '"$R"' + q(b.target)
        lines.append(f'if [ -d {src} ]; then mkdir -p {tgt}; else mkdir -p "$(dirname {tgt})"; touch {tgt}; fi')
        lines.append(f"mount --bind {src} {tgt}")
        if b.read_only:
            lines.append(f"mount -o remount,bind,ro {tgt}")
    lines.append(f"hostname {q(hostname)}")
    if confinement.read_only_root:
        # Only the root mount itself: the binds below it keep their own flags, as with runc.
        lines.append('mount -o remount,bind,ro "$R"')
    root = f"{CONTAINER_STAGE}/root" if overlay else str(rootfs)
    inner = confine.enter_argv(
        confinement,
        root=root,
        uid=uid,
        gid=gid,
        groups=[gid] if groups is None else groups,
        argv=_env_argv(env, workdir, argv),
    )
    # No `exec`: the helper changes the uid, which clears the parent-death signal that `unshare --kill-child`
    # set, so an exec'd main process would outlive a SIGKILLed runner (seen: orphaned beams). This shell stays PID 1
    # of the PID namespace (keeps the death signal; when it dies the kernel kills the whole namespace), forwards
    # TERM/INT/HUP/QUIT/USR1/USR2 to the main process and exits with its status.
    lines += [
        f"{shlex.join(inner)} <&0 &",
        "child=$!",
        *(f"trap 'kill -{sig} $child 2>/dev/null' {sig}" for sig in FORWARDED_SIGNALS),
        "set +e",
        "while :; do wait $child; rc=$?; kill -0 $child 2>/dev/null || break; done",
        "exit $rc",
    ]
    cmd = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--uts",
        "--ipc",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        "/bin/sh",
        "-c",
        "\n".join(lines),
    ]
    if netns is not None:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", "--", *cmd]
    return cmd


def container_main_pid(runner_pid: int) -> int | None:
    """Host PID of the container's main process (the chrooted *argv*), given the PID of the process started from
    :func:`container_argv`. Inside the container it is PID 2; PID 1 is the supervising shell.

    None until it has chrooted (its root is no longer the host's "/"): before that, entering it would run the
    *host's* binaries (a host rabbitmqctl, say) instead of the image's.
    """
    try:
        inits = Path(f"/proc/{runner_pid}/task/{runner_pid}/children").read_text().split()
        if not inits:
            return None
        init = inits[0]
        for child in Path(f"/proc/{init}/task/{init}/children").read_text().split():
            if os.readlink(f"/proc/{child}/root") != "/":
                return int(child)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def pids_in_pidns_of(pid: int) -> list[int]:
    """Every host PID in the same PID namespace as *pid* (empty once that namespace is gone)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError):
        return []
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/pid") == ns:
                    out.append(int(entry.name))
            except OSError:  # gone, or not inspectable (PID 1 of this VM refuses even root)
                continue
    return out


def exec_argv(
    init_pid: int,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    uid: int,
    gid: int,
    workdir: str,
    confinement: Confinement = confine.DEFAULT,
    groups: Sequence[int] | None = None,
) -> list[str]:
    """``kubectl exec``: run *argv* in the running container whose main process is *init_pid* (see
    :func:`container_main_pid`), in all its namespaces and its root, as uid:gid, confined as the container is (its
    capability bounding set, no_new_privs and seccomp filter, as runc gives an exec'd process the container's). *env*
    is the container's complete environment (kubectl exec sees the same as the main process)."""
    enter = confine.enter_argv(
        confinement,
        # After setns into the mount namespace the host tree is "/" again; the container's root is the main
        # process's (a magic link the host's /proc, still mounted there, resolves).
        root=f"/proc/{init_pid}/root",
        uid=uid,
        gid=gid,
        groups=[gid] if groups is None else groups,
        argv=_env_argv(env, workdir, argv),
    )
    return ["nsenter", f"--target={init_pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", *enter]


def stop_container(runner_pid: int, sig: int = 15) -> None:
    """Send *sig* (default SIGTERM) to the container's PID 1, which forwards it to the main process."""
    try:
        init = Path(f"/proc/{runner_pid}/task/{runner_pid}/children").read_text().split()
    except FileNotFoundError:
        return
    if init:
        # The container may exit between reading its PID and the signal: nothing left to stop then.
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(init[0]), sig)


def pod_command(
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
) -> list[str]:
    """Kubernetes semantics over the image's *entrypoint*/*cmd*: *command* replaces ENTRYPOINT (and drops CMD),
    *args* replaces CMD."""
    if command:
        return [*command, *(args or ())]
    return [*entrypoint, *(args if args else cmd)]


def mounts_under(path: Path | str) -> list[str]:
    """Mount points in the caller's mount namespace at or below *path* (to check nothing leaked)."""
    base = os.path.realpath(path).rstrip("/") or "/"
    out: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == base or point.startswith(base + "/"):
            out.append(point)
    return out
