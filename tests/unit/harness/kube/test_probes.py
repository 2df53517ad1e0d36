"""Probe workers: initial results, thresholds, startup gating, timing."""

from __future__ import annotations

from harness.kube.objects import Container, Probe
from harness.kube.probes import ContainerProbes, ProbeKind, ProbeWorker


def test_readiness_starts_unready_and_flips_after_thresholds() -> None:
    w = ProbeWorker(Probe("tcpSocket", port=5672, success_threshold=2, failure_threshold=3), ProbeKind.READINESS, 0.0)
    assert w.result is False
    assert w.record(True) is None
    assert w.record(True) is True
    assert w.record(False) is None
    assert w.record(False) is None
    assert w.record(True) is None, "a success resets the failure run"
    assert [w.record(False) for _ in range(3)] == [None, None, False]
    assert not w.kills, "readiness never kills"


def test_liveness_starts_alive_and_kills_at_threshold() -> None:
    w = ProbeWorker(Probe("exec", command=("true",), failure_threshold=3), ProbeKind.LIVENESS, 0.0)
    assert w.result is True
    w.record(False)
    w.record(False)
    assert not w.kills
    assert w.record(False) is False
    assert w.kills


def test_timing_initial_delay_and_period() -> None:
    w = ProbeWorker(Probe("tcpSocket", port=1, initial_delay_seconds=10, period_seconds=10), ProbeKind.READINESS, 100.0)
    assert w.next_due() == 110.0
    w.record(True)
    assert w.next_due() == 120.0
    odd = ProbeWorker(Probe("tcpSocket", port=1, initial_delay_seconds=7, period_seconds=5), ProbeKind.READINESS, 0.0)
    assert odd.next_due() == 10.0, "the first tick at or after the delay"
    now = ProbeWorker(Probe("exec", command=("x",)), ProbeKind.STARTUP, 5.0)
    assert now.next_due() == 5.0


def is_ready(p: ContainerProbes) -> bool:
    # A call, not a property read: mypy would otherwise keep the narrowed value across record().
    return p.ready


def restart_needed(p: ContainerProbes) -> bool:
    return p.must_restart


def test_startup_gates_the_others_and_kills_when_it_gives_up() -> None:
    c = Container(
        "w",
        "img",
        startup_probe=Probe("exec", command=("s",), period_seconds=5, failure_threshold=2),
        readiness_probe=Probe("exec", command=("r",)),
        liveness_probe=Probe("exec", command=("l",)),
    )
    probes = ContainerProbes.for_container(c, 0.0)
    assert [w.kind for w in probes.active()] == [ProbeKind.STARTUP]
    assert not probes.ready
    assert probes.startup is not None
    probes.startup.record(False)
    assert not restart_needed(probes)
    probes.startup.record(False)
    assert restart_needed(probes)
    fresh = ContainerProbes.for_container(c, 0.0)
    assert fresh.startup is not None
    fresh.startup.record(True)
    assert [w.kind for w in fresh.active()] == [ProbeKind.READINESS, ProbeKind.LIVENESS]
    assert not is_ready(fresh)
    assert fresh.readiness is not None
    fresh.readiness.record(True)
    assert is_ready(fresh)


def test_no_probes_means_ready_once_started() -> None:
    probes = ContainerProbes.for_container(Container("c", "img"), 0.0)
    assert probes.ready
    assert probes.active() == []
    assert not probes.must_restart


def test_a_late_probe_does_not_make_the_next_ones_fire_back_to_back() -> None:
    # Liveness of the worker: period 30 s, threshold 3. Run late (after a long startup probe), the
    # next probes must still be a period apart, or three failures would kill it within a second.
    w = ProbeWorker(Probe("exec", command=("true",), period_seconds=30, failure_threshold=3), ProbeKind.LIVENESS, 0.0)
    w.record(False, at=200.0)
    assert w.next_due() == 230.0
    w.record(False, at=230.5)
    assert w.next_due() == 260.5
