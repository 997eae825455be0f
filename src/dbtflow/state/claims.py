"""Claims: which invocation is building each node of a DAG run, so that no node is built twice at once.

An invocation claims nodes when it registers, and releases each claim when it records that
node's result (``dbtflow.state.results``). A node is never claimed by two live invocations: a
claim held by a dead invocation (``InvocationInfo.alive``) is taken over by the next one.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbtflow.project.results import FAILED_STATUSES, SKIPPED_STATUSES
from dbtflow.state.invocations import InvocationInfo, InvocationState, info_of, lock_run
from dbtflow.state.schema import claims, invocations, results, writers
from dbtflow.state.task_try import TaskTry


class Claims:
    """``StateStore``'s claims."""

    engine: Engine

    def register_claiming(
        self,
        task: TaskTry,
        nodes: Iterable[str],
        *,
        skip_succeeded: bool = False,
        pid: int | None = None,
    ) -> tuple[str, list[str]]:
        """Register an invocation of ``task`` and claim the nodes no live invocation is building.

        With ``skip_succeeded``, nodes that already succeeded in this DAG run are not claimed
        either. Returns the invocation id and the nodes it claimed (the ones it may build).
        """
        dag_id, run_id = task.dag_id, task.run_id
        invocation_id = str(uuid.uuid4())
        now = time.time()
        wanted = list(dict.fromkeys(nodes))
        with self.engine.begin() as conn:
            lock_run(conn, dag_id, run_id)
            holders = _claim_holders(conn, dag_id, run_id)
            _mark_dead(conn, dag_id, run_id)
            taken = {uid for uid, info in holders.items() if info is not None and info.alive}
            if skip_succeeded:
                taken |= _succeeded(conn, dag_id, run_id)
            mine = [uid for uid in wanted if uid not in taken]
            conn.execute(
                invocations.insert().values(
                    id=invocation_id,
                    dag_id=dag_id,
                    run_id=run_id,
                    task_id=task.task_id,
                    try_number=task.try_number,
                    host=socket.gethostname(),
                    pid=pid or os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    state=InvocationState.RUNNING.value,
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


def _mark_dead(conn: Connection, dag_id: str, run_id: str) -> None:
    """Record ``died`` (with the time it was noticed) every invocation of the run still ``running``
    whose process is gone: a new invocation of the run is the next component to see it, and a
    killed one would otherwise stay ``running`` for good."""
    rows = conn.execute(
        sa.select(invocations).where(
            invocations.c.dag_id == dag_id,
            invocations.c.run_id == run_id,
            invocations.c.state == InvocationState.RUNNING.value,
        )
    ).all()
    for info in map(info_of, rows):
        noticed = time.time()
        if not info.alive:
            conn.execute(
                invocations.update()
                .where(invocations.c.id == info.id, invocations.c.state == InvocationState.RUNNING.value)
                .values(state=InvocationState.DIED.value, error=info.describe_death(), finished_at=noticed)
            )
            conn.execute(writers.delete().where(writers.c.invocation_id == info.id))


def _succeeded(conn: Connection, dag_id: str, run_id: str) -> set[str]:
    newest: dict[str, str] = {}
    for row in conn.execute(
        sa.select(results.c.unique_id, results.c.status)
        .where(results.c.dag_id == dag_id, results.c.run_id == run_id)
        .order_by(results.c.id)
    ):
        newest[row.unique_id] = row.status
    return {uid for uid, status in newest.items() if status not in FAILED_STATUSES | SKIPPED_STATUSES}


def _claim_holders(conn: Connection, dag_id: str, run_id: str) -> dict[str, InvocationInfo | None]:
    rows = conn.execute(
        sa.select(claims.c.unique_id, invocations)
        .select_from(claims.outerjoin(invocations, claims.c.invocation_id == invocations.c.id))
        .where(claims.c.dag_id == dag_id, claims.c.run_id == run_id)
    ).all()
    return {row.unique_id: info_of(row) if row.id is not None else None for row in rows}
