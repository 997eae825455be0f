"""The run-time report: an HTML page with plots of the run-time history.

- the run's nodes in a Gantt chart, each in its status color, with a legend and the critical path
  marked: the chain of nodes, each waiting for the parent that finished last, that ends with the
  node that finished last;
- a table of the run's nodes, each linking to its task in the Airflow grid;
- each of the slowest models' duration over time, and the models whose run time grows, with the
  number of runs and the span of time each trend rests on (no weekly rate from fewer than
  ``MIN_RUNS_FOR_RATE`` runs or less than a day).

``render_report`` builds the page in memory, and each PNG plot when it is first asked for (the
page does not wait for its plots, which take most of the time): the Airflow plugin serves them
live (``dbtflow.airflow.web``); ``write_report`` writes them to a folder (``dbtflow report``, a
static copy to share).
"""

from __future__ import annotations

import html
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dbtflow.monitoring import plots
from dbtflow.monitoring.history import NodeRun
from dbtflow.monitoring.trends import Trend, trends
from dbtflow.project.graph import DbtGraph
from dbtflow.project.status import FAILED_STATUSES, SKIPPED_STATUSES, SUCCEEDED_STATUSES
from dbtflow.settings import dbtflow_home

MIN_RUNS_FOR_RATE = 5
MIN_SPAN_FOR_RATE_S = 86400.0
IMAGES = ("gantt.png", "durations.png", "growers.png")


def reports_folder() -> Path:
    """Where ``dbtflow report`` writes its static copies by default."""
    return dbtflow_home() / "reports"


@dataclass(frozen=True)
class RunSummary:
    """One DAG run as the history saw it."""

    dag_id: str
    run_id: str
    started_at: float
    ended_at: float
    nodes: int
    failed: tuple[str, ...]

    @property
    def state(self) -> str:
        return "failed" if self.failed else "success"


def run_summaries(history: Sequence[NodeRun]) -> list[RunSummary]:
    """Each run in the history, oldest first (a node's newest record counts)."""
    by_run: dict[tuple[str, str], dict[str, NodeRun]] = defaultdict(dict)
    for record in history:
        by_run[(record.dag_id, record.run_id)][record.unique_id] = record
    found = [
        RunSummary(
            dag_id=dag_id,
            run_id=run_id,
            started_at=min(r.started_at for r in nodes.values()),
            ended_at=max(r.started_at + r.execution_s for r in nodes.values()),
            nodes=len(nodes),
            failed=tuple(sorted(uid for uid, r in nodes.items() if r.status in FAILED_STATUSES)),
        )
        for (dag_id, run_id), nodes in by_run.items()
    ]
    return sorted(found, key=lambda s: s.started_at)


def nodes_of_run(history: Sequence[NodeRun], dag_id: str, run_id: str) -> list[NodeRun]:
    """The newest record of each node (tests aside) of one run, in start order."""
    newest: dict[str, NodeRun] = {}
    for record in history:
        if record.dag_id == dag_id and record.run_id == run_id and not record.unique_id.startswith("test."):
            newest[record.unique_id] = record
    return sorted(newest.values(), key=lambda r: r.started_at)


def critical_path(
    runs: Sequence[NodeRun],
    graph: DbtGraph | None = None,
    *,
    parents: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The critical path of one run (unique ids, first to last). A node's parents come from the
    dbt graph or from ``parents`` (unique id -> parent unique ids); with neither, the last node."""
    # A node dbt skipped never ran: it ends no path.
    ends = {r.unique_id: r.started_at + r.execution_s for r in runs if r.status not in SKIPPED_STATUSES}
    if not ends:
        return []

    def parents_of(uid: str) -> list[str]:
        if graph is not None and uid in graph.nodes:
            return [p for p in graph.build_parents(uid) if p in ends]
        return [p for p in (parents or {}).get(uid, ()) if p in ends and p != uid]

    current = max(ends, key=lambda uid: ends[uid])
    path = [current]
    while (found := parents_of(current)) and len(path) <= len(ends):
        current = max(found, key=lambda uid: ends[uid])
        path.append(current)
    return path[::-1]


@dataclass(frozen=True)
class TrendBasis:
    """How many successful runs, over how long, a node's trend rests on."""

    runs: int
    span_s: float

    @property
    def rate_is_meaningful(self) -> bool:
        return self.runs >= MIN_RUNS_FOR_RATE and self.span_s >= MIN_SPAN_FOR_RATE_S


def trend_bases(history: Sequence[NodeRun], last: int) -> dict[str, TrendBasis]:
    starts: dict[str, list[float]] = defaultdict(list)
    for record in history:
        if record.status in SUCCEEDED_STATUSES:
            starts[record.unique_id].append(record.started_at)
    return {uid: TrendBasis(len(s[-last:]), s[-1] - s[-last:][0]) for uid, s in starts.items()}


#: pyplot keeps global state: one plot is drawn at a time (image requests come in parallel).
_DRAWING = threading.Lock()


class LazyImages(Mapping[str, bytes]):
    """File name -> PNG bytes, each plot drawn when first read and then kept."""

    def __init__(self, draw: Mapping[str, Callable[[], bytes]]) -> None:
        self._draw = dict(draw)
        self._drawn: dict[str, bytes] = {}

    def __getitem__(self, name: str) -> bytes:
        if name not in self._drawn:
            draw = self._draw[name]
            with _DRAWING:
                if name not in self._drawn:
                    self._drawn[name] = draw()
        return self._drawn[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._draw)

    def __len__(self) -> int:
        return len(self._draw)


@dataclass
class RenderedReport:
    """A report page and the plots it shows (file name -> PNG bytes, drawn when first read)."""

    page: str
    images: Mapping[str, bytes] = field(default_factory=dict)


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def _when(epoch: float) -> str:
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M} UTC"


def _trend_rows(items: Sequence[Trend], bases: Mapping[str, TrendBasis]) -> str:
    rows = []
    for t in items:
        basis = bases.get(t.unique_id, TrendBasis(t.runs, 0.0))
        weekly = f"{t.slope_per_week_s:+.2f}" if basis.rate_is_meaningful else "&ndash;"
        rows.append(
            f"<tr><td>{html.escape(t.unique_id)}</td><td>{t.median_s:.2f}</td><td>{t.last_s:.2f}</td>"
            f"<td>{t.slope_per_run_s:+.3f}</td><td>{weekly}</td><td>{basis.runs}</td>"
            f"<td>{_span(basis.span_s)}</td></tr>"
        )
    return "".join(rows)


TREND_HEADER = (
    "<tr><th>node</th><th>median s</th><th>last s</th><th>per run</th><th>per week</th>"
    "<th>runs</th><th>over</th></tr>"
)
STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}
.status{color:#fff;padding:0 6px;border-radius:3px}img{max-width:100%}"""


def _node_rows(
    runs: Sequence[NodeRun], critical: Sequence[str], task_url: Callable[[str], str | None]
) -> str:
    start = min((r.started_at for r in runs), default=0.0)
    rows = []
    for r in runs:
        url = task_url(r.unique_id)
        name = html.escape(r.unique_id)
        link = f'<a href="{html.escape(url)}" target="_top">{name}</a>' if url else name
        color = plots.status_color(r.status)
        rows.append(
            f'<tr id="{html.escape(r.unique_id)}"><td>{link}</td>'
            f'<td><span class="status" style="background:{color}">{html.escape(r.status)}</span></td>'
            f"<td>{r.started_at - start:.1f}</td><td>{r.execution_s:.2f}</td>"
            f"<td>{'yes' if r.unique_id in critical else ''}</td></tr>"
        )
    return "".join(rows)


def render_report(
    history: Sequence[NodeRun],
    *,
    run_id: str | None = None,
    graph: DbtGraph | None = None,
    parents: Mapping[str, Sequence[str]] | None = None,
    task_url: Callable[[str, str, str], str | None] = lambda dag_id, run_id, uid: None,
    run_url: Callable[[str], str] | None = None,
    image_url: Callable[[str], str] = lambda name: name,
    last: int = 20,
    top: int = 8,
) -> RenderedReport:
    """The page of one run (``run_id``, default the newest) of the history's newest DAG run's
    DAG, with the trends of the whole ``history``. ``task_url(dag_id, run_id, unique_id)`` links a
    node to its task, ``run_url(run_id)`` to the page of another run."""
    summaries = run_summaries(history)
    chosen = next((s for s in summaries if s.run_id == run_id), None) if run_id else None
    chosen = chosen or (summaries[-1] if summaries else None)
    found = trends(history, last=last)
    bases = trend_bases(history, last)
    slowest = [t for t in found if not t.unique_id.startswith("test.")][:top]
    growers = sorted((t for t in found if t.growing), key=lambda t: t.slope_per_run_s, reverse=True)
    run_nodes = nodes_of_run(history, chosen.dag_id, chosen.run_id) if chosen else []
    critical = critical_path(run_nodes, graph, parents=parents)
    title = f"Run {chosen.run_id}" if chosen else "No run yet"
    plotted = {t.unique_id for t in slowest}
    slowest_runs = [r for r in history if r.unique_id in plotted]
    report = RenderedReport(
        page="",
        images=LazyImages(
            {
                "gantt.png": lambda: plots.gantt_png(run_nodes, critical, title),
                "durations.png": lambda: plots.durations_png(slowest_runs, slowest),
                "growers.png": lambda: plots.growers_png(growers[:top]),
            }
        ),
    )
    dags = sorted({s.dag_id for s in summaries})
    basis = (
        f"{len(summaries)} run(s) of {html.escape(', '.join(dags))}, from {_when(summaries[0].started_at)} "
        f"to {_when(summaries[-1].ended_at)} ({_span(summaries[-1].ended_at - summaries[0].started_at)})"
        if summaries
        else "no run"
    )
    run_links = ""
    if run_url is not None and summaries:
        items = [
            f'<a href="{html.escape(run_url(s.run_id))}">{html.escape(s.run_id)}</a> ({s.state})'
            + (" &larr; shown" if chosen and s.run_id == chosen.run_id else "")
            for s in reversed(summaries[-20:])
        ]
        run_links = "<h2>Runs</h2><ul><li>" + "</li><li>".join(items) + "</li></ul>"
    failed = ", ".join(html.escape(u) for u in (chosen.failed if chosen else ()))
    state = (
        f"<p>State: <b>{chosen.state}</b>{f' (failed: {failed})' if failed else ''}; "
        f"started {_when(chosen.started_at)}, {chosen.nodes} nodes.</p>"
        if chosen
        else ""
    )

    def node_url(uid: str) -> str | None:
        return task_url(chosen.dag_id, chosen.run_id, uid) if chosen else None

    report.page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dbt run times: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>dbt run times: {html.escape(", ".join(dags) or "no DAG")}</h1>
<p>Based on {basis}, {len(history)} node results. Rendered {_when(datetime.now(UTC).timestamp())}.</p>
<h2>{html.escape(title)}</h2>
{state}
<img src="{html.escape(image_url("gantt.png"))}" alt="Gantt chart of {html.escape(title)}">
<p>Critical path: {" &rarr; ".join(html.escape(u) for u in critical) or "unknown"}</p>
<table><tr><th>node</th><th>status</th><th>start s</th><th>seconds</th><th>critical</th></tr>
{_node_rows(run_nodes, critical, node_url)}</table>
<h2>Slowest models</h2>
<img src="{html.escape(image_url("durations.png"))}" alt="durations over time">
<table>{TREND_HEADER}{_trend_rows(slowest, bases)}</table>
<h2>Growing models</h2>
<p>A model grows when most pairs of its last {last} successful runs agree it got slower
(Theil-Sen slope); no weekly rate from fewer than {MIN_RUNS_FOR_RATE} runs or less than a day.</p>
<img src="{html.escape(image_url("growers.png"))}" alt="growing models">
<table>{TREND_HEADER}{_trend_rows(growers, bases)}</table>
{run_links}
</body></html>
"""
    return report


def write_report(
    history: Sequence[NodeRun], out: Path, *, graph: DbtGraph | None = None, last: int = 20, top: int = 8
) -> Path:
    """Write ``index.html`` and its plots into ``out`` (a static copy); return the page."""
    out.mkdir(parents=True, exist_ok=True)
    report = render_report(history, graph=graph, last=last, top=top)
    for name, data in report.images.items():
        (out / name).write_bytes(data)
    index = out / "index.html"
    index.write_text(report.page)
    return index
