"""Run-time history: one record per node per task try, kept across runs for trends and reports.

The store is a SQL table: a SQLite file under ``$DBTFLOW_HOME`` by default, any SQLAlchemy URL in
production (``DBTFLOW_HISTORY_URL``, or the ``url`` argument). Every dbt invocation records what it
ran, once: the streamed per_model invocation and nodes built alone (``dbtflow.streaming``, through
the ``on_results`` callback the Airflow side and the local runner pass it, ``results_recorder``),
single and grouped tasks, and dbt Cloud jobs (from their ``run_results.json``). Its engine comes
from ``dbtflow.state.engine`` (on a server, a connection per use, as a few writes per task try
need).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from dbtflow import settings
from dbtflow.project.results import NodeResult
from dbtflow.settings import dbtflow_home
from dbtflow.state.engine import Pooling, sql_engine
from dbtflow.state.task_try import TaskTry

HISTORY_URL_ENV = settings.HISTORY_URL

metadata = sa.MetaData()
node_runs = sa.Table(
    "dbtflow_node_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("unique_id", sa.String(500), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    #: When dbt started executing the node (epoch seconds), or when it was recorded.
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("execution_s", sa.Float, nullable=False),
    sa.Column("rows_affected", sa.BigInteger),
    sa.Index("ix_dbtflow_node_runs_node", "dag_id", "unique_id", "started_at"),
)
#: The builds (``node_runs`` rows) whose Airflow asset event has been emitted: one per successful
#: build, by the task that built it or by the run's ``dbt_assets`` teardown
#: (``dbtflow.monitoring.asset_emissions``).
asset_emissions = sa.Table(
    "dbtflow_asset_emissions",
    metadata,
    sa.Column("node_run_id", sa.Integer, primary_key=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("emitted_at", sa.Float, nullable=False),
    sa.Index("ix_dbtflow_asset_emissions_run", "dag_id", "run_id"),
)


@dataclass(frozen=True)
class NodeRun:
    """One node's result in one task try, as the history keeps it."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    unique_id: str
    status: str
    started_at: float
    execution_s: float
    rows_affected: int | None = None


#: The columns of a ``NodeRun``, in its fields' order.
NODE_RUN_COLUMNS = tuple(node_runs.c[f.name] for f in fields(NodeRun))


def node_runs_of(rows: Iterable[Any]) -> list[NodeRun]:
    """Rows of ``NODE_RUN_COLUMNS`` as records (positional: a mapping per row took most of the
    time of reading 20,000 rows for the report)."""
    return [NodeRun(*row) for row in rows]


def default_url() -> str:
    return settings.history_url() or f"sqlite:///{dbtflow_home() / 'history.db'}"


class History:
    """The history store at ``url`` (created on first use)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        if self.url.startswith("sqlite:///"):
            dbtflow_home().mkdir(parents=True, exist_ok=True)
        self.engine = sql_engine(self.url, metadata, Pooling.PER_USE)

    def record(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, results: Iterable[NodeResult]
    ) -> int:
        """Keep each result (skipped nodes too: their status is history); return how many."""
        now = time.time()
        rows = [
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": task_id,
                "try_number": try_number,
                "unique_id": r.unique_id,
                "status": r.status,
                "started_at": _epoch(r.started_at) or now,
                "execution_s": float(r.execution_time or 0.0),
                "rows_affected": r.rows_affected,
            }
            for r in results
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(node_runs.insert(), rows)
        return len(rows)

    def runs(self, dag_id: str | None = None) -> list[NodeRun]:
        """Every kept record, oldest first (optionally of one DAG)."""
        query = sa.select(*NODE_RUN_COLUMNS).order_by(node_runs.c.started_at, node_runs.c.id)
        if dag_id is not None:
            query = query.where(node_runs.c.dag_id == dag_id)
        with self.engine.connect() as conn:
            return node_runs_of(conn.execute(query))


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def record_results(task: TaskTry, results: Sequence[NodeResult], log: Any) -> None:
    """Keep one invocation's node results in the history; a history that cannot be written is
    logged and never fails the run."""
    try:
        History().record(task.dag_id, task.run_id, task.task_id, task.try_number, results)
    except Exception as exc:  # the history is a by-product: the run's outcome stands
        log.warning("Could not record the run-time history: %s", exc)


def results_recorder(task: TaskTry, log: Any) -> Callable[[Sequence[NodeResult]], None]:
    """``record_results`` for ``task``, as a producer's ``on_results`` callback."""
    return lambda results: record_results(task, results, log)
