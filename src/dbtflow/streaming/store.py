"""Shared state of streamed dbt invocations: which invocation builds which node, and results.

A streamed per_model DAG run has one dbt invocation whose node results must reach many tasks,
some waiting in the triggerer, some on other workers. They meet here, in a small SQL database:
a SQLite file under ``$DBTFLOW_HOME`` by default (one machine), any SQLAlchemy URL in production
(``DBTFLOW_STATE_URL``, for example PostgreSQL shared by workers and triggerers).

- ``invocations``: one row per dbt invocation, with a heartbeat so that a dead process is noticed;
  ``writers``: the invocations writing a DAG's models now; an invocation starts writing only
  when no live invocation of another run of the DAG is (``start_writing``).
- ``claims``: which invocation is building each node, until it records the node's result; a node
  is never claimed by two live invocations at once, so no node is built twice concurrently.
- ``results``: each node's result as dbt reports it, with the log lines of that node, and which
  task try consumed it (a retry never reuses the result its previous try already reported).
- ``try_artifacts``: the ``run_results.json`` each try of a single or grouped build task left, for
  its next try's ``dbt retry`` on whichever worker that try lands.

The store keeps itself small: once a day, the first invocation to start deletes what is older than
``DBTFLOW_STATE_RETENTION_DAYS`` (30 by default; ``0`` keeps everything). The run-time history
(``dbtflow.monitoring.history``) is a separate table and is kept.

The tables are in ``dbtflow.streaming.schema``, what their rows mean to a reader (liveness
included) in ``dbtflow.streaming.records``, and the try artifacts and the pruning in
``try_artifacts`` and ``retention``; this module keeps the queries of invocations, claims and
results, and re-exports the names other modules use.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbtflow import settings
from dbtflow.project.results import FAILED_STATUSES, SKIPPED_STATUSES, NodeResult
from dbtflow.settings import dbtflow_home
from dbtflow.streaming.records import (
    DEFAULT_RETENTION_DAYS,
    HEARTBEAT_EVERY_S,
    LOCAL_STALE_AFTER_S,
    PRUNE_EVERY_S,
    RETENTION_ENV,
    STALE_AFTER_S,
    InvocationInfo,
    NodeStates,
    StoredResult,
    TaskTry,
    _info,
    _stored,
)
from dbtflow.streaming.retention import Retention, retention_days
from dbtflow.streaming.schema import (
    claims,
    invocations,
    maintenance,
    metadata,
    results,
    run_locks,
    try_artifacts,
    writers,
)
from dbtflow.streaming.try_artifacts import TryArtifacts

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "HEARTBEAT_EVERY_S",
    "LOCAL_STALE_AFTER_S",
    "PRUNE_EVERY_S",
    "RETENTION_ENV",
    "STALE_AFTER_S",
    "InvocationInfo",
    "NodeStates",
    "StateStore",
    "StoredResult",
    "TaskTry",
    "claims",
    "invocations",
    "maintenance",
    "metadata",
    "results",
    "retention_days",
    "run_locks",
    "try_artifacts",
    "writers",
]


def default_url() -> str:
    url = settings.state_url()
    if url:
        return url
    home = dbtflow_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'state.db'}"


_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    # Engines are not shared across fork: a child process gets its own.
    key = (url, os.getpid())
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if url.startswith("sqlite"):
                engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                    cursor = dbapi_conn.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.close()

            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            metadata.create_all(engine)
            _ENGINES[key] = engine
        return engine


class StateStore(TryArtifacts, Retention):
    """Access to the shared state for one database URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _engine(self.url)

    # --- invocations -------------------------------------------------------------------------

    def _lock_run(self, conn: Connection, dag_id: str, run_id: str) -> None:
        """Serialize claim changes of one DAG run (a row lock; SQLite locks the whole file)."""
        updated = conn.execute(
            run_locks.update()
            .where(run_locks.c.dag_id == dag_id, run_locks.c.run_id == run_id)
            .values(n=run_locks.c.n + 1)
        ).rowcount
        if not updated:
            try:
                with conn.begin_nested():
                    conn.execute(run_locks.insert().values(dag_id=dag_id, run_id=run_id, n=1))
            except sa.exc.IntegrityError:
                conn.execute(
                    run_locks.update()
                    .where(run_locks.c.dag_id == dag_id, run_locks.c.run_id == run_id)
                    .values(n=run_locks.c.n + 1)
                )

    def start_invocation(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int,
        nodes: Iterable[str],
        *,
        skip_succeeded: bool = False,
        pid: int | None = None,
    ) -> tuple[str, list[str]]:
        """Register an invocation and claim the nodes no live invocation is building.

        With ``skip_succeeded``, nodes that already succeeded in this DAG run are not claimed
        either. Returns the invocation id and the nodes it claimed (the ones it may build).
        """
        self.prune_if_due()
        invocation_id = str(uuid.uuid4())
        now = time.time()
        wanted = list(dict.fromkeys(nodes))
        with self.engine.begin() as conn:
            self._lock_run(conn, dag_id, run_id)
            holders = self._claim_holders(conn, dag_id, run_id)
            taken = {uid for uid, info in holders.items() if info is not None and info.alive}
            if skip_succeeded:
                taken |= self._succeeded(conn, dag_id, run_id)
            mine = [uid for uid in wanted if uid not in taken]
            conn.execute(
                invocations.insert().values(
                    id=invocation_id,
                    dag_id=dag_id,
                    run_id=run_id,
                    task_id=task_id,
                    try_number=try_number,
                    host=socket.gethostname(),
                    pid=pid or os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    state="running",
                )
            )
            if mine:
                conn.execute(
                    claims.delete().where(
                        claims.c.dag_id == dag_id, claims.c.run_id == run_id, claims.c.unique_id.in_(mine)
                    )
                )
                conn.execute(
                    claims.insert(),
                    [
                        {"dag_id": dag_id, "run_id": run_id, "unique_id": uid, "invocation_id": invocation_id}
                        for uid in mine
                    ],
                )
        return invocation_id, mine

    def _succeeded(self, conn: Connection, dag_id: str, run_id: str) -> set[str]:
        newest: dict[str, str] = {}
        for row in conn.execute(
            sa.select(results.c.unique_id, results.c.status)
            .where(results.c.dag_id == dag_id, results.c.run_id == run_id)
            .order_by(results.c.id)
        ):
            newest[row.unique_id] = row.status
        return {uid for uid, status in newest.items() if status not in FAILED_STATUSES | SKIPPED_STATUSES}

    def _claim_holders(self, conn: Connection, dag_id: str, run_id: str) -> dict[str, InvocationInfo | None]:
        rows = conn.execute(
            sa.select(claims.c.unique_id, invocations)
            .select_from(claims.outerjoin(invocations, claims.c.invocation_id == invocations.c.id))
            .where(claims.c.dag_id == dag_id, claims.c.run_id == run_id)
        ).all()
        return {row.unique_id: _info(row) if row.id is not None else None for row in rows}

    def heartbeat(self, invocation_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                invocations.update()
                .where(invocations.c.id == invocation_id, invocations.c.state == "running")
                .values(heartbeat_at=time.time())
            )

    def finish_invocation(self, invocation_id: str, state: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                invocations.update()
                .where(invocations.c.id == invocation_id, invocations.c.state == "running")
                .values(state=state, error=error, finished_at=time.time())
            )
            conn.execute(writers.delete().where(writers.c.invocation_id == invocation_id))

    def mark_died(self, invocation_id: str, reason: str) -> None:
        """Record that an invocation's process is gone without writing its final state (it was
        killed), with the time it was noticed; its claims stop blocking at once."""
        self.finish_invocation(invocation_id, "died", reason)

    def invocation(self, invocation_id: str) -> InvocationInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(invocations).where(invocations.c.id == invocation_id)).first()
        return None if row is None else _info(row)

    def start_writing(self, dag_id: str, run_id: str, invocation_id: str) -> list[InvocationInfo]:
        """Let the invocation write the DAG's models unless a live invocation of another run of
        the DAG is writing them; return those (empty: this invocation may write now).

        The check and the claim happen in one transaction serialized per DAG, so of two runs
        that ask at once exactly one goes first: two runs never write the DAG's models together.
        """
        with self.engine.begin() as conn:
            self._lock_run(conn, dag_id, "*")
            rows = conn.execute(
                sa.select(invocations)
                .select_from(writers.join(invocations, writers.c.invocation_id == invocations.c.id))
                .where(
                    writers.c.dag_id == dag_id,
                    writers.c.run_id != run_id,
                    invocations.c.state == "running",
                )
            ).all()
            blockers = [info for info in map(_info, rows) if info.alive]
            if not blockers:
                row = {"invocation_id": invocation_id, "dag_id": dag_id, "run_id": run_id}
                conn.execute(writers.insert().values(**row))
        return blockers

    def invocations_of_run(self, dag_id: str, run_id: str) -> list[InvocationInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(invocations)
                .where(invocations.c.dag_id == dag_id, invocations.c.run_id == run_id)
                .order_by(invocations.c.started_at)
            ).all()
        return [_info(r) for r in rows]

    # --- results -----------------------------------------------------------------------------

    def record_result(
        self, invocation_id: str, dag_id: str, run_id: str, result: NodeResult, log: Sequence[str] = ()
    ) -> None:
        """Record a node's result and release the invocation's claim on it (it is done with it)."""
        with self.engine.begin() as conn:
            conn.execute(
                claims.delete().where(
                    claims.c.dag_id == dag_id,
                    claims.c.run_id == run_id,
                    claims.c.unique_id == result.unique_id,
                    claims.c.invocation_id == invocation_id,
                )
            )
            conn.execute(
                results.insert().values(
                    dag_id=dag_id,
                    run_id=run_id,
                    unique_id=result.unique_id,
                    invocation_id=invocation_id,
                    status=result.status,
                    result=json.dumps(result.to_dict()),
                    log=json.dumps(list(log)),
                    recorded_at=time.time(),
                )
            )

    def node_states(
        self,
        dag_id: str,
        run_id: str,
        unique_ids: Sequence[str] | None,
        producer_task_id: str | None = None,
    ) -> NodeStates:
        """The newest result of each node (``None``: every node of the run), the invocation
        claiming it, and whether the producer started."""
        result_filter = [results.c.dag_id == dag_id, results.c.run_id == run_id]
        claim_filter = [claims.c.dag_id == dag_id, claims.c.run_id == run_id]
        if unique_ids is not None:
            result_filter.append(results.c.unique_id.in_(unique_ids))
            claim_filter.append(claims.c.unique_id.in_(unique_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(results).where(*result_filter).order_by(results.c.id)).all()
            claim_rows = conn.execute(
                sa.select(claims.c.unique_id, invocations)
                .select_from(claims.join(invocations, claims.c.invocation_id == invocations.c.id))
                .where(*claim_filter)
            ).all()
            producer_rows = (
                conn.execute(
                    sa.select(invocations).where(
                        invocations.c.dag_id == dag_id,
                        invocations.c.run_id == run_id,
                        invocations.c.task_id == producer_task_id,
                    )
                ).all()
                if producer_task_id is not None
                else []
            )
        return NodeStates(
            newest={row.unique_id: _stored(row) for row in rows},
            holders={row.unique_id: _info(row) for row in claim_rows},
            producer_seen=bool(producer_rows),
            producer_alive=any(_info(row).alive for row in producer_rows),
        )

    def consume(self, result_ids: Sequence[int], try_number: int) -> bool:
        """Mark results as reported by this task try; False if another try already reported one."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                results.update()
                .where(
                    results.c.id.in_(result_ids),
                    sa.or_(results.c.consumed_by.is_(None), results.c.consumed_by == try_number),
                )
                .values(consumed_by=try_number)
            ).rowcount
        return changed == len(result_ids)

    def consume_invocation(self, invocation_id: str, try_number: int) -> None:
        """Mark every result of an invocation as reported by this task try."""
        with self.engine.begin() as conn:
            conn.execute(
                results.update()
                .where(results.c.invocation_id == invocation_id)
                .values(consumed_by=try_number)
            )

    def results_of_run(self, dag_id: str, run_id: str) -> list[StoredResult]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(results)
                .where(results.c.dag_id == dag_id, results.c.run_id == run_id)
                .order_by(results.c.id)
            ).all()
        return [_stored(r) for r in rows]
