"""What a container runtime applies to a container's process, and the argv of the helper that applies it.

A container process is started (or exec'd into) by :mod:`harness.runtime.enter`, a stdlib-only script the host's
Python runs just before the container's command: it enters the container's root, narrows the capability bounding
set, sets no_new_privs, installs the seccomp filter, drops to the container's uid and gids, and execs the command.
That order is runc's: the bounding set can only be narrowed while the process still holds CAP_SETPCAP (root), and
a host binary such as ``setpriv`` cannot do it after ``chroot --userspec`` has already dropped to the user.

What to apply is decided elsewhere (harness.kube.security for a pod's securityContext); this module only carries the
decision (:class:`Confinement`) and turns it into arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ENTER_SCRIPT = Path(__file__).with_name("enter.py")

CAPABILITIES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
"""Linux capability names without the ``CAP_`` prefix, indexed by their number (linux/capability.h)."""

SECCOMP_DENIED: tuple[str, ...] = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setdomainname",
    "sethostname",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
)
"""RuntimeDefault as a denylist: the syscalls the runtimes' default profile (moby's, which containerd ships) leaves
out for a container without the capability that would admit them (Docker's seccomp documentation lists most; the
new mount API and io_uring were removed from the profile later). Each fails with EPERM, as there."""

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: the default profile refuses clone() with any of them
(and clone3 with ENOSYS, so that libc falls back to clone, whose flags a filter can read)."""


@dataclass(frozen=True)
class Confinement:
    """What narrows one container's process beyond its uid: the default changes nothing but no_new_privs."""

    bounding_caps: frozenset[str] | None = None
    """Capabilities left in the bounding set (names from :data:`CAPABILITIES`); None leaves the set as it is."""
    no_new_privs: bool = True
    read_only_root: bool = False
    """Root filesystem mounted read-only; only the container's volumes (and /dev, /dev/shm) stay writable."""
    seccomp: bool = False
    """The RuntimeDefault filter (:data:`SECCOMP_DENIED`, clone with namespace flags, clone3)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.bounding_caps or ()) - set(CAPABILITIES))
        if unknown:
            raise ValueError(f"unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}")


DEFAULT = Confinement()
"""What a container gets when nothing narrows it: its uid's own capabilities and no_new_privs."""


def enter_argv(
    confinement: Confinement, *, root: str, uid: int, gid: int, groups: Sequence[int], argv: Sequence[str]
) -> list[str]:
    """Argv that runs *argv* in *root* as uid:gid with supplementary *groups*, confined as *confinement* says.

    Run it as root, in the container's namespaces, where the host's Python is still reachable (before the chroot).
    """
    if not argv:
        raise ValueError("argv must not be empty")
    # -I -S: no site-packages, no environment: the helper needs the stdlib only and starts in ~20 ms.
    cmd = [sys.executable, "-I", "-S", str(ENTER_SCRIPT), f"--root={root}", f"--uid={uid}", f"--gid={gid}"]
    cmd.append("--groups=" + ",".join(str(g) for g in groups))
    if confinement.bounding_caps is not None:
        kept = sorted(CAPABILITIES.index(c) for c in confinement.bounding_caps)
        cmd.append("--bounding-caps=" + ",".join(str(n) for n in kept))
    if confinement.no_new_privs:
        cmd.append("--no-new-privs")
    if confinement.seccomp:
        cmd.append("--seccomp-deny=" + ",".join(SECCOMP_DENIED))
        cmd.append(f"--seccomp-clone-flags={CLONE_NAMESPACE_FLAGS}")
    return [*cmd, "--", *argv]
