"""Resolve names in one thread of this process as a pod would: through another ``/etc/resolv.conf``.

A drill's publisher runs in the drill's own process on the host, yet it must find the brokers as
an in-cluster client does: by their DNS names, through the cluster DNS, with the pod's search
path and ``ndots``. :func:`use_resolv_conf` gives the calling thread a private mount namespace
(``unshare(CLONE_NEWNS)``, which Linux allows per thread) in which ``/etc/resolv.conf`` is that
file; glibc's resolver re-reads the file when it changes, so from then on every ``getaddrinfo``
of this thread (kombu's, py-amqp's) asks the cluster DNS, and the rest of the process is untouched.
The namespace goes with the thread. Root only. :func:`call_resolving_through` runs a function so,
on a thread of its own, from any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

CLONE_NEWNS: Final = 0x00020000
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 0x40000
RESOLV_CONF: Final = "/etc/resolv.conf"


class ResolverError(OSError):
    """The thread's resolver could not be switched; the message says which call failed."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ResolverError(errno, f"{what}: {os.strerror(errno)}")


def use_resolv_conf(path: Path) -> None:
    """From now on, this thread (only) resolves names through ``path`` instead of /etc/resolv.conf."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Private first: a bind mount under a shared / would propagate to the host's own namespace.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    target = os.path.realpath(RESOLV_CONF).encode()
    _check(libc.mount(str(path).encode(), target, None, MS_BIND, None), f"mount --bind {path} {RESOLV_CONF}")


def call_resolving_through(path: Path, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own that resolves names through ``path``; its result, or its exception.

    Safe from any thread: the caller's own resolver and mounts are never changed.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            use_resolv_conf(path)
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller, who sees it as fn's own
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"resolving through {path.name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
