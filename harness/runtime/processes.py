"""Process supervision for everything the harness starts: sessions, group kills, crash leftovers.

Every broker node, epmd and worker runs in a session of its own, so one ``killpg`` takes down a
whole "pod" (a wrapper script, beam and its helpers; a Celery worker and its pool) at once, as a
node or container dying would. The same property lets them outlive a harness that is SIGKILLed;
:class:`GroupRecord` writes the groups a run started to a state file, so a later run can stop
exactly those, and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or why it could not be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts; another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_has_live_member(pgid: int) -> bool:
    """Whether any non-zombie process is in process group ``pgid``."""
    # Zombies keep their group until reaped by init; only live members matter here.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def group_cmdlines(pgid: int) -> list[bytes]:
    """The command lines of the processes in group ``pgid`` (NUL-separated argv each)."""
    found: list[bytes] = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if os.getpgid(int(cmdline.parent.name)) != pgid:
                continue
            found.append(cmdline.read_bytes())
        except (OSError, ValueError):
            continue
    return found


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGKILL the session ``proc`` leads and wait until no member of it is left.

    The group leader may be a wrapper script whose child (beam, a pool process) dies a moment
    later; waiting for the group to empty means a restart never meets the old ports.
    """
    signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.error("process group %d survived SIGKILL for %.0fs", proc.pid, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_has_live_member(proc.pid):
        time.sleep(0.05)


def terminate_groups(procs: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM each group (as the kubelet does), wait up to ``timeout`` in all, then SIGKILL the rest."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        # Children share the group: kill it even if the leader is gone.
        kill_group(proc, timeout=5)


def state_dir() -> Path:
    """Where runs of this user record the process groups they started."""
    return Path(tempfile.gettempdir()) / f"hacel-clusters-{os.geteuid()}"


class GroupRecord:
    """A state file listing the process groups one run started, rewritten atomically."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.path = state_dir() / f"{name}.json"
        self.workdir = workdir

    def write(self, groups: Iterable[int]) -> None:
        state = {"owner": os.getpid(), "workdir": str(self.workdir), "groups": list(groups)}
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def cleanup_stale(is_ours: Callable[[int], bool]) -> list[str]:
    """Kill the recorded groups of runs whose owner process is gone; return their workdirs.

    ``is_ours(pgid)`` must confirm a recorded group still looks like what the run started (a
    group id may have been reused since). Runs of live processes are left alone.
    """
    cleaned: list[str] = []
    for state_file in sorted(state_dir().glob("*.json")):
        try:
            state = json.loads(state_file.read_text())
            owner = int(state["owner"])
            groups = [int(g) for g in state.get("groups", [])]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid_alive(owner):
            continue
        for pgid in groups:
            if is_ours(pgid):
                signal_group(pgid, signal.SIGKILL)
        cleaned.append(str(state.get("workdir", state_file.name)))
        state_file.unlink(missing_ok=True)
    return cleaned
