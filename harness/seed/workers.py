"""Celery worker processes for the drills: started like the image starts them, killed like a pod."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Protocol

from harness.runtime import processes


class WorkerSpec(Protocol):
    """How to start one worker process: its argv and its whole environment."""

    @property
    def argv(self) -> list[str]: ...

    @property
    def env(self) -> dict[str, str]: ...


class WorkerSource(Protocol):
    """What describes the workers to start (a drill profile)."""

    def worker(self, name: str, state_dir: Path) -> WorkerSpec: ...


class WorkerPool:
    """Real ``celery worker`` processes, each in its own process group (a pod's worth)."""

    def __init__(self, runtime: WorkerSource, state_dir: Path) -> None:
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
        processes.kill_group(self._procs[name], timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (warm shutdown, as the kubelet sends), then SIGKILL what is left."""
        processes.terminate_groups(self._procs.values(), timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self._logs.get(name)
        return "" if path is None else processes.tail(path, lines)
