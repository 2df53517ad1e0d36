"""Was the machine busy while the bench ran: the load threshold, the other heavy processes, and
whether BENCHMARKS.md may be rewritten.

The bench's ratios compare two sides measured in turn; other work on the machine moves each
side's figure by its own amount (BENCHMARKS.md saw one rate move 10x between rounds at load
9-16). So a run records who else was running, before and after, and a full run refuses to
rewrite the published table when it started on a busy machine, unless told ``--noisy``.

Processes are read from ``/proc`` (``stat`` and ``cmdline``): no dependency, and every reader
takes the ``/proc`` directory as an argument so that tests feed it a fake tree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
BUSY_LOAD_PER_CORE: Final = 0.5
"""A full run's 1-minute load average at start above this many per core refuses BENCHMARKS.md.

At half a runnable process per core, the bench's own processes (one side's broker and worker at
a time) nearly always find a core free when they wake; above it, other work takes turns with
them and the figures measure the neighbours as much as the broker. It is a judgement, not a
measurement: 1.0 on this 2-core machine, where the table was last taken at load 14 with rates
moving 10x between rounds. ``make plan``, which ``make bench`` runs just before, adds ~0.1-0.2.
"""
HEAVY_KINDS: Final = frozenset({"beam.smp", "pytest", "celery", "prometheus", "mypy"})
"""Listed whatever their CPU in the sample: each is a broker, a test run or a worker that may
wake any moment (an idle beam.smp still holds schedulers; a pytest between tests still runs)."""
OTHER_CPU_PERCENT: Final = 10.0
"""Any other process is listed when it used at least this much of one core over the sample."""
SAMPLE_S: Final = 1.0
"""How long the CPU sample lasts: long enough for a tick count (100 per second) to mean something."""


@dataclass(frozen=True)
class ProcStat:
    """One process as ``/proc/<pid>/stat`` and ``cmdline`` show it."""

    pid: int
    ppid: int
    comm: str
    cpu_ticks: int
    """utime + stime, in clock ticks."""
    started: int
    """Clock ticks after boot: with the pid it names one process (a reused pid starts later)."""
    argv: tuple[str, ...]


@dataclass(frozen=True)
class OtherProcess:
    """A process beside the bench's own, as results.json lists it."""

    pid: int
    name: str
    cpu_percent: float
    """Of one core, over the sample."""

    def to_json(self) -> dict[str, int | str | float]:
        return {"pid": self.pid, "name": self.name, "cpu_percent": self.cpu_percent}


def parse_stat(text: str, argv: tuple[str, ...] = ()) -> ProcStat | None:
    """``/proc/<pid>/stat``'s pid, parent, name, CPU ticks and start, None if malformed."""
    head, sep, tail = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    # The command name (field 2) is in parentheses and may hold spaces: count from after it.
    fields = tail.split()
    if not sep or len(fields) < 20:
        return None
    try:
        return ProcStat(
            pid=int(pid_text),
            ppid=int(fields[1]),
            comm=comm,
            cpu_ticks=int(fields[11]) + int(fields[12]),
            started=int(fields[19]),
            argv=argv,
        )
    except ValueError:
        return None


def read_processes(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process under ``proc`` now; one that ends while being read is left out."""
    found: dict[int, ProcStat] = {}
    for entry in proc.glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text(errors="replace")
            argv = tuple(a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a)
        except OSError:
            continue
        stat = parse_stat(text, argv)
        if stat is not None:
            found[stat.pid] = stat
    return found


def own_tree(processes: Mapping[int, ProcStat], pid: int) -> set[int]:
    """``pid``, what it started (at any depth) and what started it: the bench's own processes.

    Its ancestors (make, flock, a shell) spend their CPU on the bench too; its descendants are
    the brokers and workers it measures.
    """
    children: dict[int, list[int]] = {}
    for p in processes.values():
        children.setdefault(p.ppid, []).append(p.pid)
    tree, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    parent = processes[pid].ppid if pid in processes else 0
    while parent > 0 and parent not in tree:
        tree.add(parent)
        parent = processes[parent].ppid if parent in processes else 0
    return tree


def kind(process: ProcStat) -> str:
    """A heavy kind the process is (``python -m pytest`` is pytest), else its command name."""
    words = {process.comm, *(os.path.basename(a) for a in process.argv[:3])}
    return next((k for k in sorted(HEAVY_KINDS) if k in words), process.comm)


def other_processes(
    before: Mapping[int, ProcStat],
    after: Mapping[int, ProcStat],
    elapsed_s: float,
    ticks_per_s: int,
    own_pid: int,
) -> list[OtherProcess]:
    """The processes beside ``own_pid``'s tree that are of a heavy kind or used notable CPU
    between the two readings, busiest first."""
    own = own_tree(after, own_pid) | own_tree(before, own_pid)
    listed: list[OtherProcess] = []
    for p in after.values():
        if p.pid in own:
            continue
        earlier = before.get(p.pid)
        # A process that started between the readings (or reuses a pid) spent all its ticks in between.
        base = earlier.cpu_ticks if earlier is not None and earlier.started == p.started else 0
        percent = round(100 * (p.cpu_ticks - base) / ticks_per_s / elapsed_s, 1) if elapsed_s > 0 else 0.0
        name = kind(p)
        if name in HEAVY_KINDS or percent >= OTHER_CPU_PERCENT:
            listed.append(OtherProcess(p.pid, name, percent))
    return sorted(listed, key=lambda o: (-o.cpu_percent, o.pid))


def sample_others(
    proc: Path = PROC,
    own_pid: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[OtherProcess]:
    """The other heavy processes over a :data:`SAMPLE_S` sample of ``proc``."""
    before, start = read_processes(proc), clock()
    sleep(SAMPLE_S)
    after, elapsed = read_processes(proc), clock() - start
    pid = os.getpid() if own_pid is None else own_pid
    return other_processes(before, after, elapsed, os.sysconf("SC_CLK_TCK"), pid)


def summary(others: Iterable[OtherProcess]) -> str:
    """One line: each name once, how many and their CPU together (``3 beam.smp 41% CPU``), or none."""
    groups: dict[str, list[float]] = {}
    for o in others:
        groups.setdefault(o.name, []).append(o.cpu_percent)
    ranked = sorted(groups.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    parts = [f"{'' if len(cpu) == 1 else f'{len(cpu)} '}{name} {sum(cpu):.0f}% CPU" for name, cpu in ranked]
    return ", ".join(parts) or "none"


def busy_threshold(cores: int) -> float:
    """The 1-minute load average above which a machine of ``cores`` cores counts as busy."""
    return BUSY_LOAD_PER_CORE * max(1, cores)


def is_busy(load: float, cores: int) -> bool:
    """Whether a 1-minute load average of ``load`` is above :func:`busy_threshold`."""
    return load > busy_threshold(cores)


@dataclass(frozen=True)
class Verdict:
    """Whether a full run rewrites BENCHMARKS.md, what to tell the console, and the table's note."""

    rewrite: bool
    message: str
    header_note: str
    """Empty on an idle machine; else the sentence that opens the table's header line."""


def benchmarks_verdict(load_at_start: float, cores: int, noisy: bool) -> Verdict:
    """Idle start: rewrite. Busy start: refuse, naming the load, the threshold and ``--noisy``;
    with ``--noisy``: rewrite, and the header says the machine was busy."""
    threshold = busy_threshold(cores)
    load = f"load average {load_at_start:.2f} at start"
    limit = f"{threshold:.2f} ({BUSY_LOAD_PER_CORE} x {max(1, cores)} cores)"
    if not is_busy(load_at_start, cores):
        return Verdict(True, f"{load}, not above {limit}: an idle machine", "")
    if not noisy:
        return Verdict(
            False,
            f"BENCHMARKS.md not rewritten: the machine was busy ({load}, above {limit}). "
            "The figures are in results.json; rerun on an idle machine, or pass --noisy "
            "(make bench NOISY=1) to rewrite it anyway, marked as measured on a busy machine.",
            "",
        )
    return Verdict(
        True,
        f"BENCHMARKS.md rewritten with --noisy although the machine was busy ({load}, above {limit})",
        f"Measured on a busy machine: load {load_at_start:.2f} at start, above {limit} (`--noisy`).",
    )
