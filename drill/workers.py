"""Celery worker processes for the drills: started like the image starts them, killed like a pod."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from drill.profiles import ProfileRuntime


class WorkerPool:
    """Real ``celery worker`` processes, each in its own process group (a pod's worth)."""

    def __init__(self, runtime: ProfileRuntime, state_dir: Path) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._started = 0

    def start(self, count: int) -> list[str]:
        return [self.start_one() for _ in range(count)]

    def start_one(self) -> str:
        name = f"w{self._started}"
        self._started += 1
        spec = self.runtime.worker(name, self.state_dir)
        log = self.state_dir / f"{name}.log"
        self._logs[name] = log
        with log.open("wb") as out:
            self._procs[name] = subprocess.Popen(
                spec.argv, env=spec.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return name

    def alive(self) -> list[str]:
        return [name for name, proc in self._procs.items() if proc.poll() is None]

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool processes at once: a node or pod dying, no shutdown."""
        proc = self._procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (warm shutdown, as the kubelet sends), then SIGKILL what is left."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self._procs.values():
            # The pool children share the group: kill it even if the parent is gone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self._logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
