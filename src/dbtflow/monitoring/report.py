"""``dbtflow report``: an HTML page with plots of the run-time history.

- each of the slowest models' duration over time;
- the models whose run time grows fastest (Theil-Sen slope per run);
- a Gantt chart of the last run, its critical path marked: the chain of nodes, each waiting for
  the parent that finished last, that ends with the node that finished last.

Plots are drawn with matplotlib (PNG files next to ``index.html``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from dbtflow.monitoring.history import NodeRun
from dbtflow.monitoring.trends import Trend, trends
from dbtflow.project.graph import DbtGraph
from dbtflow.project.status import SUCCEEDED_STATUSES
from dbtflow.settings import dbtflow_home


def reports_folder() -> Path:
    """Where reports go by default (and where the Airflow plugin serves them from)."""
    return dbtflow_home() / "reports"


def critical_path(runs: Sequence[NodeRun], graph: DbtGraph | None) -> list[str]:
    """The critical path of one run (unique ids, first to last); without a graph, the last node."""
    ends = {r.unique_id: r.started_at + r.execution_s for r in runs}
    if not ends:
        return []
    current = max(ends, key=lambda uid: ends[uid])
    path = [current]
    while graph is not None and current in graph.nodes:
        parents = [p for p in graph.build_parents(current) if p in ends]
        if not parents:
            break
        current = max(parents, key=lambda uid: ends[uid])
        path.append(current)
    return path[::-1]


def _last_run(history: Sequence[NodeRun]) -> list[NodeRun]:
    if not history:
        return []
    newest = max(history, key=lambda r: r.started_at)
    newest_by_node: dict[str, NodeRun] = {}
    for run in history:
        if (
            run.dag_id == newest.dag_id
            and run.run_id == newest.run_id
            and not run.unique_id.startswith("test.")
        ):
            newest_by_node[run.unique_id] = run
    return sorted(newest_by_node.values(), key=lambda r: r.started_at)


def _plot_durations(history: Sequence[NodeRun], slowest: Sequence[Trend], file: Path) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for t in slowest:
        runs = [r for r in history if r.unique_id == t.unique_id and r.status in SUCCEEDED_STATUSES]
        ax.plot(
            mdates.date2num([datetime.fromtimestamp(r.started_at, UTC) for r in runs]),
            [r.execution_s for r in runs],
            marker="o",
            label=t.unique_id.split(".")[-1],
        )
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.set_ylabel("seconds")
    ax.set_title("Run time of the slowest models")
    if slowest:
        ax.legend(fontsize="small", loc="upper left")
    fig.autofmt_xdate()
    fig.savefig(file, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_growers(growers: Sequence[Trend], file: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.4 * len(growers) + 1)))
    names = [t.unique_id.split(".")[-1] for t in growers]
    ax.barh(names, [t.slope_per_run_s for t in growers], color="#FF694B")
    ax.set_xlabel("seconds added per run (Theil-Sen)")
    ax.set_title("Fastest-growing models" if growers else "No growing model")
    ax.invert_yaxis()
    fig.savefig(file, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_gantt(runs: Sequence[NodeRun], critical: Sequence[str], file: Path) -> None:
    import matplotlib.pyplot as plt

    start = min((r.started_at for r in runs), default=0.0)
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.3 * len(runs) + 1)))
    on_path = set(critical)
    for i, run in enumerate(runs):
        color = "#D62728" if run.unique_id in on_path else "#7B8F9E"
        ax.barh(i, max(run.execution_s, 0.01), left=run.started_at - start, color=color)
    ax.set_yticks(range(len(runs)), [r.unique_id.split(".")[-1] for r in runs], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the start of the run")
    ax.set_title("Last run (critical path in red)")
    fig.savefig(file, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_report(
    history: Sequence[NodeRun], out: Path, *, graph: DbtGraph | None = None, last: int = 20, top: int = 8
) -> Path:
    """Write ``index.html`` and its plots into ``out``; return the page."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    found = trends(history, last=last)
    slowest = [t for t in found if not t.unique_id.startswith("test.")][:top]
    growers = sorted((t for t in found if t.growing), key=lambda t: t.slope_per_run_s, reverse=True)
    last_run = _last_run(history)
    critical = critical_path(last_run, graph)
    _plot_durations(history, slowest, out / "durations.png")
    _plot_growers(growers[:top], out / "growers.png")
    _plot_gantt(last_run, critical, out / "last_run.png")

    def rows(items: Sequence[Trend]) -> str:
        return "".join(
            f"<tr><td>{html.escape(t.unique_id)}</td><td>{t.median_s:.2f}</td><td>{t.last_s:.2f}</td>"
            f"<td>{t.slope_per_run_s:+.3f}</td><td>{t.slope_per_week_s:+.2f}</td><td>{t.runs}</td></tr>"
            for t in items
        )

    header = (
        "<tr><th>node</th><th>median s</th><th>last s</th><th>per run</th><th>per week</th><th>runs</th></tr>"
    )
    dags = sorted({r.dag_id for r in history})
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dbtflow run-time report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>dbt run times</h1>
<p>DAGs: {html.escape(", ".join(dags)) or "none"}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from
{len(history)} node results.</p>
<h2>Growing models</h2>
<img src="growers.png" alt="growing models">
<table>{header}{rows(growers)}</table>
<h2>Slowest models</h2>
<img src="durations.png" alt="durations over time">
<table>{header}{rows(slowest)}</table>
<h2>Last run</h2>
<img src="last_run.png" alt="Gantt chart of the last run">
<p>Critical path: {" &rarr; ".join(html.escape(u) for u in critical) or "unknown"}</p>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index
