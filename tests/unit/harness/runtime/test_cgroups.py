"""The cgroup files the pod runner writes for a group's limits, v1 and v2, and where it writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runtime.cgroups import (
    Hierarchy,
    Limits,
    detect_version,
    knobs,
    oom_kills,
    out_of_memory,
    quota_us,
    shares,
    weight,
)

MI = 2**20


def test_v1_knobs_as_the_kubelet_writes_them() -> None:
    got = knobs(Limits(memory_bytes=256 * MI, cpu_limit_millis=500, cpu_request_millis=100), 1)
    assert got["memory"] == {
        "memory.limit_in_bytes": str(256 * MI),
        # Swap off for the group: memory + swap capped at the memory limit.
        "memory.memsw.limit_in_bytes": str(256 * MI),
        # Kernel kills off: the pod runner kills the whole container, as v2's memory.oom.group does.
        "memory.oom_control": "1",
    }
    assert got["cpu"] == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000", "cpu.shares": "102"}
    assert got["pids"] == {"pids.max": "max"}


def test_v1_unlimited_group() -> None:
    got = knobs(Limits(), 1)
    assert got["memory"]["memory.limit_in_bytes"] == "-1"
    assert got["cpu"]["cpu.cfs_quota_us"] == "-1"
    assert got["cpu"]["cpu.shares"] == "2"


def test_v2_knobs_kill_the_whole_group_on_oom() -> None:
    got = knobs(Limits(memory_bytes=MI, cpu_limit_millis=250, cpu_request_millis=1000, pids_max=4096), 2)
    assert got == {
        "": {
            "memory.max": str(MI),
            "memory.swap.max": "0",
            "memory.oom.group": "1",
            "cpu.max": "25000 100000",
            "cpu.weight": "39",
            "pids.max": "4096",
        }
    }
    assert knobs(Limits(), 2)[""]["cpu.max"] == "max 100000"


@pytest.mark.parametrize(
    ("millis", "expected"), [(None, 2), (0, 2), (1, 2), (100, 102), (500, 512), (1000, 1024), (10**9, 262144)]
)
def test_shares_as_milli_cpu_to_shares(millis: int | None, expected: int) -> None:
    assert shares(millis) == expected


def test_quota_has_a_floor_of_one_millisecond() -> None:
    assert quota_us(1) == 1000
    assert quota_us(1500) == 150000


def test_weight_spans_one_to_ten_thousand() -> None:
    assert (weight(2), weight(1024), weight(262144)) == (1, 39, 10000)


def test_oom_kill_count_from_either_file() -> None:
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 1\n") == 1
    assert oom_kills("") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oom_kill_disable 1\nunder_oom 0\noom_kill 0\n", False),
        ("oom_kill_disable 1\nunder_oom 1\noom_kill 0\n", True),
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", True),
        ("low 0\nhigh 0\nmax 9\noom 3\noom_kill 0\n", False),
        ("low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 1\n", True),
    ],
)
def test_out_of_memory_from_either_file(text: str, expected: bool) -> None:
    assert out_of_memory(text) is expected


def test_detect_version(tmp_path: Path) -> None:
    assert detect_version(tmp_path) is None
    for controller in ("memory", "cpu", "pids"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").touch()
    assert detect_version(tmp_path) == 1
    (tmp_path / "cgroup.controllers").touch()
    assert detect_version(tmp_path) == 2


def test_v1_group_dirs_and_enter_argv(tmp_path: Path) -> None:
    group = Hierarchy(1, tmp_path).group("podabc/worker-1")
    assert group.dirs["memory"] == tmp_path / "memory" / "ha-celery" / "podabc" / "worker-1"
    argv = group.enter_argv(["unshare", "--fork", "a b"])
    assert argv[:2] == ["/bin/sh", "-c"]
    assert f"echo $$ > {tmp_path}/pids/ha-celery/podabc/worker-1/cgroup.procs" in argv[2]
    assert argv[2].endswith('exec "$@"')
    assert argv[3:] == ["cgroup-enter", "unshare", "--fork", "a b"]


def test_make_skips_a_missing_swap_knob(tmp_path: Path) -> None:
    # A plain directory stands in for the cgroup filesystem: the knob files are created by the writes.
    group = Hierarchy(1, tmp_path).make("podx", Limits(memory_bytes=MI))
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(MI)
    assert not (group.dirs["memory"] / "memory.memsw.limit_in_bytes").exists()
    assert (group.dirs["pids"] / "pids.max").read_text() == "max"


def test_v2_group_hands_the_controllers_down_and_writes_the_unified_knobs(tmp_path: Path) -> None:
    group = Hierarchy(2, tmp_path).make("podx/c-1", Limits(memory_bytes=MI, cpu_limit_millis=500))
    assert group.dirs == {"": tmp_path / "ha-celery" / "podx" / "c-1"}
    # Each ancestor's subtree_control enables the controllers for the level below (the file's last write here).
    for parent in (tmp_path, tmp_path / "ha-celery", tmp_path / "ha-celery" / "podx"):
        assert (parent / "cgroup.subtree_control").read_text() == "+pids"
    assert (group.dirs[""] / "memory.max").read_text() == str(MI)
    assert (group.dirs[""] / "cpu.max").read_text() == "50000 100000"
    assert (group.dirs[""] / "memory.oom.group").read_text() == "1"
    # No swap knob on this host: skipped, not an error.
    assert not (group.dirs[""] / "memory.swap.max").exists()
