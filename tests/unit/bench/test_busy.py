"""Was the machine busy: the verdict on BENCHMARKS.md, and the other processes read from a fake /proc.

The /proc tree is written by the test (``stat`` and ``cmdline`` per pid) and the sample's sleep
is replaced by a function that advances the tree's CPU ticks and a fake clock: no real timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import busy

TICKS = 100  # clock ticks per second on Linux (os.sysconf("SC_CLK_TCK"))


def stat_line(pid: int, comm: str, ppid: int, cpu_ticks: int, started: int = 1000) -> str:
    """A /proc/<pid>/stat line: utime holds all the ticks, stime 0; field 22 is the start."""
    after = ["S", str(ppid), str(pid), str(pid), "0", "-1", "0", "0", "0", "0", "0", str(cpu_ticks), "0"]
    after += ["0", "0", "20", "0", "1", "0", str(started), "0", "0"]
    return f"{pid} ({comm}) {' '.join(after)}\n"


def write_proc(root: Path, pid: int, comm: str, ppid: int, *, cpu_ticks: int, argv: tuple[str, ...] = ()) -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "stat").write_text(stat_line(pid, comm, ppid, cpu_ticks))
    (entry / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))


# The bench is pid 100 (under flock 90, under make 80); it started a broker (101, beam.smp) and a
# worker (102 -> 103). Beside it: another test run (200, `python -m pytest`), a broker of someone
# else (300, beam.smp), a busy compiler (400), an idle shell (500) and a kernel thread (600).
TREE: dict[int, tuple[str, int, tuple[str, ...]]] = {
    80: ("make", 1, ("make", "bench")),
    90: ("flock", 80, ("flock", "/tmp/ha-celery-heavy.lock")),
    100: ("python", 90, (".venv/bin/python", "-m", "bench")),
    101: ("beam.smp", 100, ("/usr/lib/erlang/erts-15/bin/beam.smp", "--", "-root")),
    102: ("celery", 100, ("celery", "-A", "app.celery_app", "worker")),
    103: ("celery", 102, ("celery", "-A", "app.celery_app", "worker")),
    200: ("python3", 1, ("/work/main/.venv/bin/python3", "-m", "pytest", "-q", "tests/unit")),
    300: ("beam.smp", 1, ("/usr/lib/erlang/erts-15/bin/beam.smp", "--", "-root")),
    400: ("cc1", 1, ("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "x.c")),
    500: ("bash", 1, ("bash",)),
    600: ("kworker/0:1", 2, ()),
}
# CPU ticks used over the 1 s sample (100 ticks = one core all the time).
SPENT = {80: 0, 90: 0, 100: 90, 101: 150, 102: 40, 103: 80, 200: 95, 300: 3, 400: 30, 500: 1, 600: 5}


def fake_proc(root: Path) -> None:
    for pid, (comm, ppid, argv) in TREE.items():
        write_proc(root, pid, comm, ppid, cpu_ticks=5000, argv=argv)


def test_the_bench_s_own_tree_is_itself_what_it_started_and_what_started_it(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    processes = busy.read_processes(tmp_path)
    assert busy.own_tree(processes, 100) == {1, 80, 90, 100, 101, 102, 103}


def test_the_other_heavy_processes_over_a_sample_of_a_fake_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    now = [50.0]

    def sleep(seconds: float) -> None:
        # Between the two readings each process spends its ticks; one ends, one starts.
        for pid, (comm, ppid, argv) in TREE.items():
            write_proc(tmp_path, pid, comm, ppid, cpu_ticks=5000 + SPENT[pid], argv=argv)
        (tmp_path / "500" / "stat").unlink()
        write_proc(tmp_path, 700, "mypy", 500, cpu_ticks=60, argv=(".venv/bin/python", ".venv/bin/mypy", "."))
        now[0] += seconds

    others = busy.sample_others(tmp_path, own_pid=100, sleep=sleep, clock=lambda: now[0])
    assert [(o.pid, o.name, o.cpu_percent) for o in others] == [
        (200, "pytest", 95.0),
        (700, "mypy", 60.0),
        (400, "cc1", 30.0),
        (300, "beam.smp", 3.0),
    ], "the bench's own beam.smp and celery are left out; the kernel thread at 5% is below the bar"
    assert busy.summary(others) == "pytest 95% CPU, mypy 60% CPU, cc1 30% CPU, beam.smp 3% CPU"
    assert others[0].to_json() == {"pid": 200, "name": "pytest", "cpu_percent": 95.0}


def test_a_reused_pid_counts_from_zero_not_from_the_old_process() -> None:
    old = busy.parse_stat(stat_line(42, "sleep", 1, 9000, started=100))
    new = busy.parse_stat(stat_line(42, "yes", 1, 50, started=900))
    assert old is not None
    assert new is not None
    [other] = busy.other_processes({42: old}, {42: new}, elapsed_s=1.0, ticks_per_s=TICKS, own_pid=7)
    assert (other.name, other.cpu_percent) == ("yes", 50.0)


def test_a_command_name_with_spaces_and_parentheses_is_read_whole() -> None:
    parsed = busy.parse_stat(stat_line(9, "tmux: server (1)", 1, 12))
    assert parsed is not None
    assert (parsed.pid, parsed.comm, parsed.ppid, parsed.cpu_ticks) == (9, "tmux: server (1)", 1, 12)
    assert busy.parse_stat("9 (truncated) S 1") is None


def test_the_summary_counts_each_name_once() -> None:
    others = [busy.OtherProcess(1, "beam.smp", 20.0), busy.OtherProcess(2, "beam.smp", 21.4)]
    assert busy.summary([*others, busy.OtherProcess(3, "celery", 0.0)]) == "2 beam.smp 41% CPU, celery 0% CPU"
    assert busy.summary([]) == "none"


def test_the_threshold_is_half_a_core_per_core() -> None:
    assert busy.busy_threshold(2) == 1.0
    assert busy.busy_threshold(8) == 4.0
    assert busy.is_busy(1.01, 2)
    assert not busy.is_busy(1.0, 2)


def test_an_idle_start_rewrites_the_table_without_a_note() -> None:
    verdict = busy.benchmarks_verdict(0.4, cores=2, noisy=False)
    assert verdict.rewrite
    assert verdict.header_note == ""


@pytest.mark.parametrize("noisy", [False, True])
def test_a_busy_start_refuses_unless_noisy_and_says_why(noisy: bool) -> None:
    verdict = busy.benchmarks_verdict(2.7, cores=2, noisy=noisy)
    assert verdict.rewrite is noisy
    for named in ("2.70", "1.00", "0.5 x 2 cores"):
        assert named in verdict.message
    if noisy:
        assert verdict.header_note.startswith("Measured on a busy machine: load 2.70 at start")
        assert "--noisy" in verdict.header_note
    else:
        assert "--noisy" in verdict.message
        assert "NOISY=1" in verdict.message
        assert "not rewritten" in verdict.message
        assert verdict.header_note == ""
