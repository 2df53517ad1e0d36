"""Enter a container's root confined, then exec its command: what runc does between fork and exec.

Run by the host's Python (``python -I -S enter.py``, stdlib only, no project import) as root in the container's
namespaces; see harness.runtime.confine for what builds the argv. In order:

1. resolve the seccomp filter's syscalls with libseccomp (loaded from the host, before the root changes);
2. ``chroot`` into ``--root`` (a path, or ``/proc/PID/root`` to join a running container);
3. drop every capability not in ``--bounding-caps`` from the bounding set, and clear the ambient set: only root
   (CAP_SETPCAP) may, so it comes before the uid changes;
4. ``PR_SET_NO_NEW_PRIVS`` with ``--no-new-privs``; then the seccomp filter, loaded while still root so it needs no
   no_new_privs of its own (runc's order when allowPrivilegeEscalation is true);
5. supplementary groups, gid, uid (leaving uid 0 clears the permitted and effective sets);
6. SIGPIPE and SIGXFSZ back to their defaults (Python ignores both, and an ignored signal stays ignored across
   exec), then exec the command.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import sys
from collections.abc import Sequence

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_MASKED_EQ = 7


class _ArgCmp(ctypes.Structure):
    """libseccomp's struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        code = -rc if rc < 0 else ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _seccomp_filter(denied: Sequence[str], clone_flags: int) -> tuple[ctypes.CDLL, int]:
    """A libseccomp context: allow by default, EPERM for *denied*, clone with any of *clone_flags*, ENOSYS clone3."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    eperm = SCMP_ACT_ERRNO | errno.EPERM

    def deny(name: str, action: int, cmp: _ArgCmp | None = None) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a syscall of this architecture (stime, vm86 on x86_64): nothing to deny
        args = ctypes.pointer(cmp) if cmp is not None else None
        count = 0 if cmp is None else 1
        _check(lib.seccomp_rule_add_array(ctx, action, nr, count, args), f"seccomp rule for {name}")

    for name in denied:
        deny(name, eperm)
    for bit in range(64):
        flag = 1 << bit
        if clone_flags & flag:
            deny("clone", eperm, _ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
    deny("clone3", SCMP_ACT_ERRNO | errno.ENOSYS)
    return lib, ctx


def _prctl(libc: ctypes.CDLL, option: int, arg: int, what: str, arg3: int = 0) -> None:
    # prctl is variadic: every argument as an unsigned long, so no upper half is left undefined.
    args = (ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(libc.prctl(ctypes.c_int(option), *args), what)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="enter.py")
    parser.add_argument("--root", required=True)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", type=_ints, default=[])
    parser.add_argument("--bounding-caps", type=_ints, default=None)
    parser.add_argument("--no-new-privs", action="store_true")
    parser.add_argument("--seccomp-deny", type=lambda s: s.split(","), default=None)
    parser.add_argument("--seccomp-clone-flags", type=int, default=0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not command[0].startswith("/"):
        parser.error("the command must be given after -- with an absolute path")
    libc = ctypes.CDLL(None, use_errno=True)
    seccomp = None if args.seccomp_deny is None else _seccomp_filter(args.seccomp_deny, args.seccomp_clone_flags)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    os.chroot(args.root)
    os.chdir("/")
    if args.bounding_caps is not None:
        for cap in range(last_cap + 1):
            if cap not in args.bounding_caps:
                _prctl(libc, PR_CAPBSET_DROP, cap, f"dropping capability {cap} from the bounding set")
        _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clearing the ambient set")
    if args.no_new_privs:
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    if seccomp is not None:
        lib, ctx = seccomp
        _check(lib.seccomp_load(ctx), "loading the seccomp filter")
    os.setgroups(args.groups)
    os.setgid(args.gid)
    os.setuid(args.uid)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    os.execv(command[0], command)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except OSError as exc:
        print(f"enter.py: {exc}", file=sys.stderr)
        sys.exit(126)
