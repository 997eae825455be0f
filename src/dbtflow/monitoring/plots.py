"""The report's plots, drawn with matplotlib into PNG bytes (for a file or an HTTP answer).

- the slowest models' durations over time;
- the fastest-growing models' slope per run;
- a Gantt chart of one run: each node in its status color (Airflow's colors for the task
  states the statuses become), a legend, and the critical path outlined in black.

Big runs are drawn whole, as one bar call, but with at most ``MAX_GANTT_ROWS`` labelled rows
(the critical path, failures and the longest nodes first), so a 1000-model run stays a readable
picture that renders in a fraction of a second.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from dbtflow.monitoring.history import NodeRun
from dbtflow.monitoring.trends import Trend
from dbtflow.project.status import FAILED_STATUSES, SKIPPED_STATUSES, SUCCEEDED_STATUSES

MAX_GANTT_ROWS = 60

#: Status class -> (label, color), in legend order. Colors are the Airflow UI's for the task
#: state each class becomes (success, failed, upstream_failed), warn as "success with warnings".
STATUS_CLASSES: dict[str, tuple[str, str]] = {
    "success": ("success", "#2E7D32"),
    "warn": ("warn", "#F9A825"),
    "failed": ("error / fail", "#D32F2F"),
    "skipped": ("skipped (upstream failed)", "#FF9800"),
    "other": ("other", "#9E9E9E"),
}


def status_class(status: str) -> str:
    """The legend class of a dbt status."""
    if status in FAILED_STATUSES:
        return "failed"
    if status in SKIPPED_STATUSES:
        return "skipped"
    if status == "warn":
        return "warn"
    if status in SUCCEEDED_STATUSES:
        return "success"
    return "other"


def status_color(status: str) -> str:
    return STATUS_CLASSES[status_class(status)][1]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def durations_png(history: Sequence[NodeRun], slowest: Sequence[Trend]) -> bytes:
    plt = _pyplot()
    import matplotlib.dates as mdates

    fig, ax = plt.subplots(figsize=(10, 5))
    wanted = {t.unique_id: [] for t in slowest}  # type: dict[str, list[NodeRun]]
    for run in history:
        if run.unique_id in wanted and run.status in SUCCEEDED_STATUSES:
            wanted[run.unique_id].append(run)
    for uid, runs in wanted.items():
        ax.plot(
            mdates.date2num([datetime.fromtimestamp(r.started_at, UTC) for r in runs]),
            [r.execution_s for r in runs],
            marker="o",
            label=uid.split(".")[-1],
        )
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.set_ylabel("seconds")
    ax.set_title("Run time of the slowest models")
    if slowest:
        ax.legend(fontsize="small", loc="upper left")
    fig.autofmt_xdate()
    return _png(fig)


def growers_png(growers: Sequence[Trend]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.4 * len(growers) + 1)))
    names = [t.unique_id.split(".")[-1] for t in growers]
    ax.barh(names, [t.slope_per_run_s for t in growers], color="#FF694B")
    ax.set_xlabel("seconds added per run (Theil-Sen)")
    ax.set_title("Fastest-growing models" if growers else "No growing model (yet)")
    ax.invert_yaxis()
    return _png(fig)


def gantt_rows(runs: Sequence[NodeRun], critical: Collection[str]) -> list[NodeRun]:
    """The nodes the chart shows, in start order: all of them, or for a big run the critical
    path, the failures and skips, then the longest, up to ``MAX_GANTT_ROWS``."""
    if len(runs) <= MAX_GANTT_ROWS:
        return list(runs)

    def rank(run: NodeRun) -> tuple[int, float]:
        important = run.unique_id in critical or status_class(run.status) in ("failed", "skipped")
        return (0 if important else 1, -run.execution_s)

    kept = {r.unique_id for r in sorted(runs, key=rank)[:MAX_GANTT_ROWS]}
    return [r for r in runs if r.unique_id in kept]


def gantt_png(runs: Sequence[NodeRun], critical: Collection[str], title: str) -> bytes:
    """The Gantt chart of one run (``runs`` in start order)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    rows = gantt_rows(runs, critical)
    start = min((r.started_at for r in runs), default=0.0)
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.28 * len(rows) + 1.5)))
    on_path = set(critical)
    ax.barh(
        range(len(rows)),
        [max(r.execution_s, 0.01) for r in rows],
        left=[r.started_at - start for r in rows],
        color=[status_color(r.status) for r in rows],
        edgecolor=["black" if r.unique_id in on_path else "none" for r in rows],
        linewidth=[2.0 if r.unique_id in on_path else 0.0 for r in rows],
    )
    labels = [("► " if r.unique_id in on_path else "") + r.unique_id.split(".")[-1] for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the start of the run")
    shown = "" if len(rows) == len(runs) else f" ({len(rows)} of {len(runs)} nodes shown)"
    ax.set_title(title + shown)
    present = {status_class(r.status) for r in rows}
    handles = [
        Patch(facecolor=color, label=label)
        for key, (label, color) in STATUS_CLASSES.items()
        if key in present
    ]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.0, label="critical path (►)"))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)
