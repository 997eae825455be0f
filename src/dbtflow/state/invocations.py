"""Registered dbt invocations: their states, heartbeats and liveness, and which ones write a DAG.

Liveness is judged here, in one place: an invocation is alive while it runs, sends heartbeats
and (when on this machine) its process exists; see ``InvocationInfo.alive``. An invocation
writes its final state before its process exits; one found gone while still ``running`` is
recorded ``died`` by whoever notices (``mark_died``), so that every later reader sees it so.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbtflow.state.schema import invocations, run_locks, writers

#: An invocation whose heartbeat is older than this is considered dead.
STALE_AFTER_S = 30.0
#: ...unless its process is on this machine and still exists: then it is more likely starved of
#: CPU (a loaded machine) than dead, and building its nodes again would build them twice at once.
LOCAL_STALE_AFTER_S = 300.0
HEARTBEAT_EVERY_S = 2.0


class InvocationState(StrEnum):
    """An invocation's state in the ``invocations`` table."""

    #: Registered and not finished (alive only while its heartbeat is fresh).
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    #: Its process was found gone while it was still ``running`` (``mark_died``).
    DIED = "died"


@dataclass(frozen=True)
class InvocationInfo:
    """An invocation as other processes see it."""

    id: str
    run_id: str
    task_id: str
    try_number: int
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    finished_at: float | None
    state: InvocationState
    error: str | None

    @functools.cached_property
    def alive(self) -> bool:
        """Running, with a recent heartbeat, and (when on this machine) with its process present.

        Looked at once per reading of the row: the tasks of a run waiting in one triggerer share
        each reading of the state, and at 500 of them, looking again for each (a signal and a read
        of ``/proc``) was the trigger runner's largest cost (py-spy, 2026-12-03)."""
        if self.state != InvocationState.RUNNING:
            return False
        age = time.time() - self.heartbeat_at
        if self.host == socket.gethostname():
            return age <= LOCAL_STALE_AFTER_S and _pid_alive(self.pid)
        return age <= STALE_AFTER_S

    def describe_death(self) -> str:
        if self.state == InvocationState.DIED:
            return self.error or "the process running dbt died"
        age = time.time() - self.heartbeat_at
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"the process running dbt (pid {self.pid} on {self.host}) is gone"
        return f"the process running dbt (pid {self.pid} on {self.host}) sent no heartbeat for {age:.0f} s"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def info_of(row: Any) -> InvocationInfo:
    """An ``invocations`` row as an ``InvocationInfo``."""
    return InvocationInfo(
        id=row.id,
        run_id=row.run_id,
        task_id=row.task_id,
        try_number=row.try_number,
        host=row.host,
        pid=row.pid,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        state=InvocationState(row.state),
        error=row.error,
    )


def lock_run(conn: Connection, dag_id: str, run_id: str) -> None:
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


class Invocations:
    """``StateStore``'s invocations (registering one claims nodes: ``dbtflow.state.claims``)."""

    engine: Engine

    def heartbeat(self, invocation_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                invocations.update()
                .where(
                    invocations.c.id == invocation_id, invocations.c.state == InvocationState.RUNNING.value
                )
                .values(heartbeat_at=time.time())
            )

    def finish_invocation(self, invocation_id: str, state: InvocationState, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                invocations.update()
                .where(
                    invocations.c.id == invocation_id, invocations.c.state == InvocationState.RUNNING.value
                )
                .values(state=InvocationState(state).value, error=error, finished_at=time.time())
            )
            conn.execute(writers.delete().where(writers.c.invocation_id == invocation_id))

    def mark_died(self, invocation_id: str, reason: str) -> None:
        """Record that an invocation's process is gone without writing its final state (it was
        killed), with the time it was noticed; its claims stop blocking at once."""
        self.finish_invocation(invocation_id, InvocationState.DIED, reason)

    def invocation(self, invocation_id: str) -> InvocationInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(invocations).where(invocations.c.id == invocation_id)).first()
        return None if row is None else info_of(row)

    def start_writing(self, dag_id: str, run_id: str, invocation_id: str) -> list[InvocationInfo]:
        """Let the invocation write the DAG's models unless a live invocation of another run of
        the DAG is writing them; return those (empty: this invocation may write now).

        The check and the claim happen in one transaction serialized per DAG, so of two runs
        that ask at once exactly one goes first: two runs never write the DAG's models together.
        """
        with self.engine.begin() as conn:
            lock_run(conn, dag_id, "*")
            rows = conn.execute(
                sa.select(invocations)
                .select_from(writers.join(invocations, writers.c.invocation_id == invocations.c.id))
                .where(
                    writers.c.dag_id == dag_id,
                    writers.c.run_id != run_id,
                    invocations.c.state == InvocationState.RUNNING.value,
                )
            ).all()
            blockers = [info for info in map(info_of, rows) if info.alive]
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
        return [info_of(r) for r in rows]
