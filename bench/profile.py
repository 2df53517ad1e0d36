"""Where a worker's time goes: py-spy (from PyPI, run with ``uvx``) sampling a live worker pod.

``py-spy record --subprocesses`` samples the pod's main process (the consumer: receives, hands
to the pool, acks) and its prefork pool processes (run the task bodies) from the host; each
sample pauses the process for a moment (blocking mode: without it py-spy cannot tell idle from
busy), so the profiled run is not one of the measured ones. Idle samples (waiting in
``epoll``/``read``) are left out by py-spy, so the shares below are of CPU-active samples.
``summarize`` reduces the raw stacks to the functions that were on CPU themselves ("self") and
the packages a sample was inside ("inclusive"), per process role.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Final

PY_SPY: Final = ("uvx", "--from", "py-spy==0.4.3", "py-spy")
"""py-spy from PyPI through uv's tool runner: nothing installed into the project's environment."""
RATE_HZ: Final = 100
_LINE = re.compile(r'^process (\d+):"(.*?)";(.*) (\d+)$')
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


WAITS: Final = frozenset({"poll", "_recv", "recv", "read", "select", "sleep", "wait", "acquire", "_poll"})
"""Leaf functions that block in the kernel (epoll, a pipe or socket read, a lock): py-spy reports
such samples of a process in another PID namespace as active, so they are split off here by name."""


class Profiler:
    """py-spy recordings of a worker's processes (its main process and each pool process, one
    ``py-spy record`` each), started by :meth:`attach`, summarised by :meth:`finish`."""

    def __init__(self, out: Path, seconds: float) -> None:
        self.out = out
        self.seconds = seconds
        self.main_pid: int | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def _path(self, pid: int) -> Path:
        return self.out.with_name(f"{self.out.stem}-{'main' if pid == self.main_pid else pid}{self.out.suffix}")

    def attach(self, main_pid: int, pids: list[int]) -> None:
        self.main_pid = main_pid
        for pid in pids:
            self._procs[pid] = subprocess.Popen(
                [
                    *PY_SPY,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE_HZ),
                    "--duration",
                    str(int(self.seconds)),
                    "--format",
                    "raw",
                    "--output",
                    str(self._path(pid)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

    def finish(self) -> dict[str, Any]:
        """Wait for the recordings; their summary, or why there is none."""
        if not self._procs or self.main_pid is None:
            return {"error": "never attached"}
        raw: list[str] = []
        errors: list[str] = []
        for pid, proc in self._procs.items():
            try:
                _, err = proc.communicate(timeout=self.seconds + 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                errors.append(f"py-spy on {pid} did not finish")
                continue
            path = self._path(pid)
            if proc.returncode != 0 or not path.exists():
                errors.append(f"py-spy on {pid} exited {proc.returncode}: {err.decode(errors='replace')[-300:]}")
                continue
            # One file per process: tag its stacks with the pid, as --subprocesses would.
            raw += [f'process {pid}:"";{line}' for line in path.read_text(errors="replace").splitlines() if line]
        summary = summarize("\n".join(raw), self.main_pid)
        if errors:
            summary["errors"] = errors
        return summary


def _short(location: str) -> str:
    for marker in ("site-packages/", "dist-packages/", "lib/python3.11/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def _package(location: str) -> str:
    short = _short(location)
    parts = short.split("/")
    if parts[0] == "celery" and len(parts) > 2:
        return "/".join(parts[:2])  # celery/worker, celery/app, celery/concurrency: different costs
    return parts[0].removesuffix(".py") if len(parts) > 1 or short != location else "(other)"


def summarize(raw: str, main_pid: int, top: int = 12) -> dict[str, Any]:
    """Per role (``main``: the worker's consumer process; ``pool``: its children): samples, the
    share whose leaf is a blocking call (:data:`WAITS`), and of the others (busy) the top
    functions by self samples and the share inside each package."""
    samples: dict[str, int] = Counter()
    waiting: dict[str, int] = Counter()
    busy: dict[str, int] = Counter()
    self_time: dict[str, Counter[str]] = {"main": Counter(), "pool": Counter()}
    inclusive: dict[str, Counter[str]] = {"main": Counter(), "pool": Counter()}
    for line in raw.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        pid, _, stack, count = int(match[1]), match[2], match[3], int(match[4])
        role = "main" if pid == main_pid else "pool"
        frames = [f for f in stack.split(";") if not f.startswith("thread ")]
        if not frames:
            continue
        samples[role] += count
        leaf = _FRAME.match(frames[-1])
        if leaf and leaf[1].rsplit(".", 1)[-1] in WAITS:
            waiting[role] += count
            continue
        busy[role] += count
        self_time[role][f"{leaf[1]} ({_short(leaf[2])})" if leaf else frames[-1]] += count
        packages = {_package(m[2]) for f in frames if (m := _FRAME.match(f))}
        for package in packages:
            inclusive[role][package] += count
    out: dict[str, Any] = {"rate_hz": RATE_HZ}
    for role in ("main", "pool"):
        total = busy[role] or 1
        out[role] = {
            "samples": samples[role],
            "waiting_share": round(waiting[role] / (samples[role] or 1), 3),
            "busy_samples": busy[role],
            "self": [{"function": f, "share": round(n / total, 3)} for f, n in self_time[role].most_common(top)],
            "inclusive": [{"package": p, "share": round(n / total, 3)} for p, n in inclusive[role].most_common(top)],
        }
    return out
