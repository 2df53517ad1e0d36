"""monitoring.rules without promtool: durations, the drills' compressed timing, bad input, the
majority that follows the broker count. The rules' behaviour under ``promtool test rules`` is in
tests/integration/test_alert_rules.py."""

from __future__ import annotations

import pytest

from monitoring import rules
from monitoring.rules import PRODUCTION, AlertTiming, duration, rule_groups


def test_durations_render_in_the_largest_exact_unit() -> None:
    assert [duration(s) for s in (0, 0.5, 1.25, 30, 90, 120, 3600, 5400)] == [
        "0s",
        "500ms",
        "1250ms",
        "30s",
        "90s",
        "2m",
        "1h",
        "90m",
    ]


def test_compressed_divides_every_field_but_keeps_the_heartbeat_age_above_the_beat() -> None:
    drill = PRODUCTION.compressed(60)
    assert drill.backlog_for_s == PRODUCTION.backlog_for_s / 60
    assert drill.membership_lookback_s == 60
    # 120 s / 60 = 2 s would call a worker that beats every 5 s silent.
    assert drill.heartbeat_max_age_s == drill.min_heartbeat_age_s == 11
    assert PRODUCTION.compressed(1) == PRODUCTION


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"node_down_for_s": -1}, "node_down_for_s"),
        ({"scrape_interval_s": 0}, "scrape_interval_s"),
        ({"reconnect_window_s": 30}, "reconnect_window_s"),
        ({"heartbeat_max_age_s": 60}, "heartbeat_max_age_s"),
        ({"dlq_for_s": float("nan")}, "dlq_for_s"),
    ],
)
def test_bad_timing_is_refused_by_name(change: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        AlertTiming(**change)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="factor"):
        PRODUCTION.compressed(0.5)
    with pytest.raises(ValueError, match="broker_nodes"):
        rule_groups(broker_nodes=0)


def test_majority_follows_the_broker_count() -> None:
    exprs = {r["alert"]: r["expr"] for g in rule_groups(broker_nodes=5) for r in g["rules"]}
    assert exprs[rules.BROKER_NO_MAJORITY].endswith("< 3")
    assert "<= 2)" in exprs[rules.BROKER_NO_MAJORITY]
    assert "< 5)" in exprs[rules.BROKER_NODE_DOWN]
