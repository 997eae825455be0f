"""Which builds of a DAG run still owe their Airflow asset event.

Each successful build of a model, seed or snapshot gets one asset event. A streamed node task
emits its node's as it ends in the triggerer (``dbtflow.airflow.node_assets``); a single or grouped
build task that succeeded on a worker emits its builds' as its outlet events, when dbt is done.
The run's ``dbt_assets`` teardown then has nothing left to do, so it ends in the triggerer without
a worker (``dbtflow.airflow.assets``). What no task could emit (a failed task's outlet events are
dropped by Airflow; a triggerer without dbtflow's handler registers none for the tasks it ends,
apache/airflow#49347) is left to the teardown. The history rows are the builds; a row is
emitted once, whoever emits it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from dbtflow.monitoring.history import History, asset_emissions, node_runs
from dbtflow.project.status import NodeStatus

#: The node kinds whose builds get an asset event: what dbt materializes (ephemeral models never
#: run, so they have no build; tests and unit tests are not relations).
ASSET_RESOURCE_TYPES = ("model", "seed", "snapshot")


def event_extra(
    unique_id: str,
    status: str,
    execution_s: float | None,
    rows_affected: int | None,
    invocation_id: str | None,
    build: dict[str, Any],
) -> dict[str, Any]:
    """The ``extra`` of a build's asset event: the build's facts (issue 17), with ``build``'s
    ``dag_id``, ``run_id``, ``task_id`` and ``try_number``; ``rows_affected`` when the adapter
    reported it. Every emitter of asset events builds it here."""
    extra: dict[str, Any] = {
        "unique_id": unique_id,
        "status": status,
        "execution_time_s": round(float(execution_s or 0.0), 3),
        "invocation_id": invocation_id,
        **build,
    }
    if rows_affected is not None:
        extra["rows_affected"] = int(rows_affected)
    return extra


def unemitted_builds(
    history: History, dag_id: str, run_id: str, *, task_id: str | None = None, try_number: int | None = None
) -> dict[str, Any]:
    """The newest successful build of each model, seed and snapshot of the run (of one task try
    when given) whose event has not been emitted: unique id -> its ``node_runs`` row."""
    query = sa.select(node_runs).where(node_runs.c.dag_id == dag_id, node_runs.c.run_id == run_id)
    if task_id is not None:
        query = query.where(node_runs.c.task_id == task_id, node_runs.c.try_number == try_number)
    done = sa.select(asset_emissions.c.node_run_id).where(
        asset_emissions.c.dag_id == dag_id, asset_emissions.c.run_id == run_id
    )
    with history.engine.connect() as conn:
        rows = conn.execute(query.order_by(node_runs.c.id)).all()
        emitted: set[int] = set(conn.execute(done).scalars())
    newest = {row.unique_id: row for row in rows if row.unique_id.split(".", 1)[0] in ASSET_RESOURCE_TYPES}
    return {
        uid: row for uid, row in newest.items() if row.status == NodeStatus.SUCCESS and row.id not in emitted
    }


def mark_emitted(
    history: History, dag_id: str, run_id: str, task_id: str, node_run_ids: Iterable[int]
) -> None:
    """Record that the events of these builds were emitted (by ``task_id``)."""
    _insert_emitted(history, dag_id, run_id, dict.fromkeys(node_run_ids, task_id))


def mark_nodes_emitted(
    history: History, dag_id: str, run_id: str, by_task: Mapping[str, Iterable[str]]
) -> None:
    """Record that the newest successful builds of these nodes in the run had their events (from
    the task that names them, a node task ending in the triggerer: ``dbtflow.airflow.node_assets``),
    in one read and one write for every task given."""
    task_of = {uid: task_id for task_id, uids in by_task.items() for uid in uids}
    if not task_of:
        return
    query = sa.select(node_runs.c.id, node_runs.c.unique_id, node_runs.c.status).where(
        node_runs.c.dag_id == dag_id, node_runs.c.run_id == run_id, node_runs.c.unique_id.in_(sorted(task_of))
    )
    with history.engine.connect() as conn:
        newest = {row.unique_id: row for row in conn.execute(query.order_by(node_runs.c.id))}
    emitted = {row.id: task_of[uid] for uid, row in newest.items() if row.status == NodeStatus.SUCCESS}
    _insert_emitted(history, dag_id, run_id, emitted)


def _insert_emitted(history: History, dag_id: str, run_id: str, task_of: Mapping[int, str]) -> None:
    """One write: each build (``node_runs`` id) emitted by its task."""
    now = time.time()
    rows = [
        {"node_run_id": i, "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "emitted_at": now}
        for i, task_id in task_of.items()
    ]
    if rows:
        with history.engine.begin() as conn:
            conn.execute(asset_emissions.insert(), rows)
