"""The human side of a drill: a terminal summary and a timeline picture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the drills run on machines without a display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from drill.held import FreezeReport
from drill.runner import DrillResult
from drill.update import UpdateReport
from drill.workload import Workload

COLUMNS = (
    "scenario",
    "config",
    "scheduled",
    "completed",
    "lost",
    "early",
    "duplicates",
    "failover s",
    "max gap s",
    "tasks/s",
    "verdict",
)
"""The summary table's columns; the three of text are left-aligned, the figures right-aligned."""


def _verdict(r: DrillResult) -> str:
    if r.error:
        return "[red]ERROR[/]"
    if r.lost or r.early:
        return "[red]" + ", ".join(f"{n} {what}" for n, what in ((r.lost, "LOST"), (r.early, "EARLY")) if n) + "[/]"
    if r.update is not None and not r.update.ok:
        return f"[red]{_update_verdict(r.update)}[/]"
    if r.freeze is not None and not r.freeze.ok:
        return f"[red]{_freeze_verdict(r.freeze)}[/]"
    return "[green]no task lost[/]" + (", none early" if r.options.workload is Workload.ETA else "")


def _table(results: list[DrillResult]) -> Table:
    table = Table(title="ha-celery drill")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column not in ("scenario", "config", "verdict") else "left")
    for r in results:
        table.add_row(
            r.options.scenario.value,
            r.options.profile.value + ("" if r.options.workload is Workload.PLAIN else f", {r.options.workload}"),
            str(r.scheduled),
            str(r.completed),
            str(r.lost),
            str(r.early),
            str(r.duplicates),
            "-" if r.failover_seconds is None else f"{r.failover_seconds:.2f}",
            "-" if r.max_gap_seconds is None else f"{r.max_gap_seconds:.2f}",
            f"{r.throughput_per_s:.0f}",
            _verdict(r),
        )
    return table


def _alerts(r: DrillResult, console: Console) -> None:
    if r.observed is None:
        return
    spans = [
        f"{a.name} +{a.fired_at - r.started_at:.1f}s.."
        + ("still firing" if a.resolved_at is None else f"+{a.resolved_at - r.started_at:.1f}s")
        for a in r.observed.alerts
    ]
    console.print(
        f"  {r.options.scenario}: alerts (rules at production timing / {r.observed.compression:g}): "
        + (", ".join(spans) or "none")
    )
    if r.observed.error:
        console.print(f"[yellow]  {r.options.scenario}: observation: {r.observed.error}[/]")


def _details(r: DrillResult, console: Console) -> None:
    """Under the table: the errors, the drill's steps in time order, the alerts, the ETA figures."""
    if r.error:
        console.print(f"[red]{r.options.scenario}: {r.error}[/]")
    if r.publish.error:
        console.print(f"[yellow]{r.options.scenario}: publisher stopped: {r.publish.error}[/]")
    for t, label in sorted([*r.workload_events, *r.events]):
        console.print(f"  {r.options.scenario} +{t - r.started_at:6.2f}s  {label}")
    if r.update is not None:
        _update_summary(r, console)
    _alerts(r, console)
    if r.late_seconds is not None:
        median, worst = r.late_seconds
        console.print(
            f"  {r.options.scenario}: {r.published_before_workers} tasks published with no worker pod; "
            f"start after ETA: median {median:.3f}s, max {worst:.3f}s; {r.early} early"
        )


def summary(results: list[DrillResult], console: Console) -> None:
    console.print(_table(results))
    for r in results:
        _details(r, console)
    versions = results[0].versions if results else {}
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


POD_MARKS = {
    "Started": ("^", "#55a868"),
    "Ready": ("o", "#55a868"),
    "NotReady": ("o", "#dd8452"),
    "PostStartHook": ("s", "#8172b3"),
    "PreStopHook": ("s", "#937860"),
    "Killing": ("v", "#c44e52"),
    "Killed": ("X", "#c44e52"),
    "Exited": ("x", "#c44e52"),
    "OOMKilled": ("X", "#8c1c13"),
    "Evicted": ("D", "#dd8452"),
    "Scheduled": ("|", "#4c72b0"),
}
"""Pod events drawn on the timeline: container starts and stops, readiness, hooks, evictions."""


def _pod_lanes(ax: Any, result: DrillResult, lanes: list[str]) -> None:
    """One lane per pod, a marker per event of the kinds in POD_MARKS."""
    seen: set[str] = set()
    for at, pod, reason, _ in result.pod_events:
        if reason not in POD_MARKS:
            continue
        marker, color = POD_MARKS[reason]
        label = None if reason in seen else reason
        seen.add(reason)
        ax.scatter([at - result.started_at], [lanes.index(pod)], marker=marker, color=color, s=28, label=label)
    ax.set_yticks(range(len(lanes)), lanes, fontsize=7)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlabel("seconds since the first publish")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


ALERT_COLORS = ("#c44e52", "#dd8452", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")


def _alert_spans(axes: list[Any], result: DrillResult, end: float) -> None:
    """Each alert's firing span shaded across ``axes``, named at the top of the last."""
    if result.observed is None:
        return
    names = sorted({a.name for a in result.observed.alerts})
    for alert in result.observed.alerts:
        color = ALERT_COLORS[names.index(alert.name) % len(ALERT_COLORS)]
        start = alert.fired_at - result.started_at
        stop = (end if alert.resolved_at is None else alert.resolved_at) - result.started_at
        for ax in axes:
            ax.axvspan(start, stop, color=color, alpha=0.18, linewidth=0)
        suffix = "" if alert.resolved_at is not None else " (still firing)"
        axes[-1].text(
            start,
            0.97,
            f" {alert.name.removeprefix('HaCelery')}{suffix}",
            transform=axes[-1].get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="left",
            fontsize=7,
            color=color,
            clip_on=True,
        )


def _prometheus_panel(ax: Any, result: DrillResult) -> None:
    """Queue depth and broker nodes up, as the drill's Prometheus scraped them."""
    assert result.observed is not None
    observed = result.observed
    depth = [(t - result.started_at, v) for t, v in observed.queue_depth]
    ax.plot(
        [t for t, _ in depth],
        [v for _, v in depth],
        color="#4c72b0",
        linewidth=1.2,
        label="task queue depth (RabbitMQ updates it every ~5 s)",
    )
    ax.set_ylabel("messages", fontsize=8)
    nodes = ax.twinx()
    up = [(t - result.started_at, v) for t, v in observed.brokers_up]
    nodes.step(
        [t for t, _ in up], [v for _, v in up], where="post", color="#55a868", linewidth=1.4, label="broker nodes up"
    )
    nodes.set_ylim(-0.2, max([3.0, *(v for _, v in up)]) + 0.5)
    nodes.set_ylabel("broker nodes up", fontsize=8)
    handles = ax.get_legend_handles_labels()[0] + nodes.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=7, frameon=False)
    ax.set_title(
        f"Prometheus (scrape every {observed.timing.scrape_interval_s:g} s; alert rules at production timing / "
        f"{observed.compression:g}): {len(observed.alerts)} alert span(s)",
        fontsize=8,
    )


def _panels(result: DrillResult, lanes: list[str]) -> tuple[Figure, Any, Any | None, Any | None]:
    """The figure and its panels: tasks, then Prometheus' (if it saw anything), then the pods' (if any)."""
    observed = result.observed is not None and bool(result.observed.queue_depth or result.observed.brokers_up)
    ratios = [3.0] + ([2.2] if observed else []) + ([1 + 0.2 * len(lanes)] if lanes else [])
    height = 4 + (2.2 if observed else 0) + (0.3 * len(lanes) if lanes else 0)
    fig, axes = plt.subplots(
        len(ratios), 1, figsize=(10, height), dpi=110, sharex=True, height_ratios=ratios, squeeze=False
    )
    column = list(axes[:, 0])
    return fig, column[0], column[1] if observed else None, column[-1] if lanes else None


Marks = list[tuple[float, str, str, str]]
"""(epoch seconds, label, color, line style) of the vertical lines on the tasks panel."""


def _draw_marks(ax: Any, marks: Marks, started_at: float) -> None:
    for t, label, color, style in marks:
        x = t - started_at
        ax.axvline(x, color=color, linestyle=style, linewidth=1.2)
        # Along the line, so labels of close events do not run into each other.
        ax.text(
            x,
            0.97,
            # Short on the picture (the report keeps every word): long labels squeeze the plot.
            f" {label if len(label) <= 48 else label[:47] + '…'}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=color,
            # Inside the panel: a label running past it would push the panels below apart.
            clip_on=True,
        )


def _tasks_panel(ax: Any, result: DrillResult) -> float:
    """Tasks completed per second with the fault's and the workload's steps marked; returns where the
    x axis ends (seconds since the first publish)."""
    per_second = Counter(int(t - result.started_at) for t in result.finished_at)
    seconds = range(max(per_second, default=0) + 1)
    ax.bar(
        list(seconds),
        [per_second.get(s, 0) for s in seconds],
        width=1.0,
        align="edge",
        color="#4c72b0",
        label="tasks completed",
    )
    marks = [(t, label, "#c44e52" if i == 0 else "#7f7f7f", "--") for i, (t, label) in enumerate(result.events)]
    # The workload's own steps (eta: workers stopped, first part published, workers back), dotted.
    marks += [(t, label, "#4c72b0", ":") for t, label in result.workload_events]
    alert_ends = [] if result.observed is None else [a.resolved_at or a.fired_at for a in result.observed.alerts]
    last = max(
        [len(seconds), *(t - result.started_at for t, *_ in marks), *(t - result.started_at for t in alert_ends)]
    )
    ax.set_xlim(min([0.0, *(t - result.started_at for t, *_ in marks)]), last + 1)
    _draw_marks(ax, marks, result.started_at)
    ax.set_ylabel("tasks completed / s")
    verdict = "no task lost" if result.lost == 0 else f"{result.lost} LOST"
    if result.options.workload is Workload.ETA:
        verdict += f", {result.early} early"
    ax.set_title(
        f"{result.options.scenario} ({result.options.profile} config): "
        f"{result.completed}/{result.scheduled} completed, {verdict}, {result.duplicates} duplicates"
    )
    ax.legend(loc="lower right")
    return last + 1


def timeline(result: DrillResult, path: Path) -> Path:
    """Tasks completed per second, with the fault and the recovery steps marked; under it what the
    drill's Prometheus saw (queue depth, broker nodes up) with the alerts' firing spans shaded."""
    lanes = sorted({pod for _, pod, reason, _ in result.pod_events if reason in POD_MARKS})
    fig, ax, prom_ax, pods_ax = _panels(result, lanes)
    end = _tasks_panel(ax, result)
    # The x axis is shared: only the lowest panel names it.
    if prom_ax is None and pods_ax is None:
        ax.set_xlabel("seconds since the first publish")
    if prom_ax is not None:
        _prometheus_panel(prom_ax, result)
        if pods_ax is None:
            prom_ax.set_xlabel("seconds since the first publish")
    _alert_spans([a for a in (ax, prom_ax) if a is not None], result, result.started_at + end)
    if pods_ax is not None:
        _pod_lanes(pods_ax, result, lanes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _freeze_verdict(freeze: FreezeReport) -> str:
    if freeze.error:
        return "FREEZE FAILED"
    if not freeze.on_frozen_node:
        return "no worker on the frozen node"
    held = [h.worker for h in freeze.holds if not h.left or h.held_s > freeze.limit_s]
    if held:
        return f"HELD {len(held)} worker(s) > {freeze.limit_s:g}s"
    return "frozen broker stayed Ready"


def _update_verdict(update: UpdateReport) -> str:
    if update.error:
        return "UPDATE FAILED"
    if update.stale:
        return f"{len(update.stale)} pods with old data"
    return f"{update.min_ready_brokers} brokers Ready (< {update.majority})"


def _update_summary(r: DrillResult, console: Console) -> None:
    update = r.update
    assert update is not None
    colour = "green" if update.ok else "red"
    console.print(
        f"[{colour}]update ({' '.join(update.spec.settings) or update.spec.plan}): "
        f"at least {update.min_ready_brokers} of {update.brokers_before} broker pods Ready throughout "
        f"(a majority is {update.majority})[/]"
    )
    for applied in update.applied:
        if applied.step.step != "same":
            console.print(f"  {applied.step.label}: {applied.action} ({applied.seconds:.1f}s)")
    if update.error:
        console.print(f"[red]update failed: {update.error}[/]")
