"""The update scenario's verdict (drill.update): a majority of the larger cluster Ready, no pod left with old data."""

from __future__ import annotations

from pathlib import Path

from drill.update import ReadyWatch, UpdateReport, UpdateSpec

SPEC = UpdateSpec(Path("plan"), Path("steps.json"), ("brokerReplicas=5",))


def test_the_majority_is_of_the_larger_cluster_and_stale_pods_fail_the_update() -> None:
    two = UpdateReport(SPEC, brokers_before=3, brokers_after=5, min_ready_brokers=2)
    assert (two.majority, two.ok) == (3, False)
    three = UpdateReport(SPEC, brokers_before=3, brokers_after=5, min_ready_brokers=3)
    stale = UpdateReport(
        SPEC,
        brokers_before=3,
        min_ready_brokers=3,
        stale={"celery-worker-x": ["container worker: env BROKER_PASSWORD from secret s (read at start)"]},
    )
    assert (three.ok, stale.ok) == (True, False)
    assert UpdateReport(SPEC, brokers_before=3).to_json(0.0)["min_ready_brokers"] is None
    assert not UpdateReport(SPEC, brokers_before=3).ok, "never measured is not a pass"


def test_ready_watch_keeps_the_lowest_count_seen() -> None:
    counts = iter([3, 2, 3])
    watch = ReadyWatch(lambda: next(counts))
    for _ in range(3):
        watch.sample()
    assert watch.lowest == 2
    assert watch.lowest_at is not None
