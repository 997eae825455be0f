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
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbtflow.errors import DbtflowError
from dbtflow.project.config import dbtflow_home
from dbtflow.project.results import FAILED_STATUSES, SKIPPED_STATUSES, NodeResult

#: An invocation whose heartbeat is older than this is considered dead.
STALE_AFTER_S = 30.0
#: ...unless its process is on this machine and still exists: then it is more likely starved of
#: CPU (a loaded machine) than dead, and building its nodes again would build them twice at once.
LOCAL_STALE_AFTER_S = 300.0
HEARTBEAT_EVERY_S = 2.0
RETENTION_ENV = "DBTFLOW_STATE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30.0
PRUNE_EVERY_S = 24 * 3600.0

metadata = sa.MetaData()
invocations = sa.Table(
    "dbtflow_invocations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("host", sa.String(250), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_dbtflow_invocations_run", "dag_id", "run_id"),
)
claims = sa.Table(
    "dbtflow_claims",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("unique_id", sa.String(500), primary_key=True),
    sa.Column("invocation_id", sa.String(36), nullable=False),
)
results = sa.Table(
    "dbtflow_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("unique_id", sa.String(500), nullable=False),
    sa.Column("invocation_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("log", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Column("consumed_by", sa.Integer),
    sa.Index("ix_dbtflow_results_node", "dag_id", "run_id", "unique_id"),
)
writers = sa.Table(
    "dbtflow_writers",
    metadata,
    sa.Column("invocation_id", sa.String(36), primary_key=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Index("ix_dbtflow_writers_dag", "dag_id"),
)
try_artifacts = sa.Table(
    "dbtflow_try_artifacts",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("map_index", sa.Integer, primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("saved_at", sa.Float, nullable=False),
)
maintenance = sa.Table(
    "dbtflow_maintenance",
    metadata,
    sa.Column("task", sa.String(50), primary_key=True),
    sa.Column("done_at", sa.Float, nullable=False),
)
run_locks = sa.Table(
    "dbtflow_run_locks",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


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
    state: str
    error: str | None

    @property
    def alive(self) -> bool:
        """Running, with a recent heartbeat, and (when on this machine) with its process present."""
        if self.state != "running":
            return False
        age = time.time() - self.heartbeat_at
        if self.host == socket.gethostname():
            return age <= LOCAL_STALE_AFTER_S and _pid_alive(self.pid)
        return age <= STALE_AFTER_S

    def describe_death(self) -> str:
        if self.state == "died":
            return self.error or "the process running dbt died"
        age = time.time() - self.heartbeat_at
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"the process running dbt (pid {self.pid} on {self.host}) is gone"
        return f"the process running dbt (pid {self.pid} on {self.host}) sent no heartbeat for {age:.0f} s"


@dataclass(frozen=True)
class StoredResult:
    """A node result as recorded, with its log lines."""

    id: int
    invocation_id: str
    result: NodeResult
    log: list[str]
    consumed_by: int | None


@dataclass(frozen=True)
class NodeStates:
    """What the store knows about some nodes of one DAG run."""

    #: The newest result of each node (older ones are history).
    newest: dict[str, StoredResult]
    #: The invocation that claims each node, if any.
    holders: dict[str, InvocationInfo]
    #: Whether the DAG run's producer task has registered an invocation (in any state).
    producer_seen: bool
    #: Whether an invocation of the producer task is alive now.
    producer_alive: bool = False


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


def default_url() -> str:
    url = os.environ.get("DBTFLOW_STATE_URL")
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


class StateStore:
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

    # --- artifacts of build tasks' tries -----------------------------------------------------

    def save_try_artifact(self, task: TaskTry, document: dict[str, Any]) -> None:
        """Keep a try's ``run_results.json`` (a cleared task's same try number replaces it)."""
        key = _task_key(task)
        with self.engine.begin() as conn:
            conn.execute(try_artifacts.delete().where(*key, try_artifacts.c.try_number == task.try_number))
            conn.execute(
                try_artifacts.insert().values(
                    dag_id=task.dag_id,
                    run_id=task.run_id,
                    task_id=task.task_id,
                    map_index=task.map_index,
                    try_number=task.try_number,
                    document=json.dumps(document),
                    saved_at=time.time(),
                )
            )

    def try_artifact_before(self, task: TaskTry) -> tuple[int, dict[str, Any]] | None:
        """The newest document an earlier try of the task kept, with that try's number."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(try_artifacts.c.try_number, try_artifacts.c.document)
                .where(*_task_key(task), try_artifacts.c.try_number < task.try_number)
                .order_by(try_artifacts.c.try_number.desc())
                .limit(1)
            ).first()
        return None if row is None else (int(row.try_number), json.loads(row.document))

    # --- retention ---------------------------------------------------------------------------

    def prune_if_due(self) -> dict[str, int]:
        """``prune`` past the retention period, if no process did in the last day."""
        days = retention_days()
        now = time.time()
        if days <= 0:
            return {}
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(maintenance.c.done_at).where(maintenance.c.task == "prune")).first()
            if row is not None and now - row.done_at < PRUNE_EVERY_S:
                return {}
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(maintenance.insert().values(task="prune", done_at=now))
                except sa.exc.IntegrityError:
                    return {}  # another process is pruning
            else:
                conn.execute(maintenance.update().where(maintenance.c.task == "prune").values(done_at=now))
        return self.prune(now - days * 86400)

    def prune(self, before: float) -> dict[str, int]:
        """Delete invocations silent since ``before`` (finished or long dead), results and try
        artifacts recorded before it, and what refers to them; return the rows deleted per table."""
        gone = sa.select(invocations.c.id).where(invocations.c.heartbeat_at < before)
        run_has_invocation = sa.exists().where(
            invocations.c.dag_id == run_locks.c.dag_id, invocations.c.run_id == run_locks.c.run_id
        )
        statements = {
            "results": results.delete().where(results.c.recorded_at < before),
            "try_artifacts": try_artifacts.delete().where(try_artifacts.c.saved_at < before),
            "claims": claims.delete().where(claims.c.invocation_id.in_(gone)),
            "writers": writers.delete().where(writers.c.invocation_id.in_(gone)),
            "invocations": invocations.delete().where(invocations.c.heartbeat_at < before),
            "run_locks": run_locks.delete().where(run_locks.c.run_id != "*", ~run_has_invocation),
        }
        with self.engine.begin() as conn:
            return {table: conn.execute(statement).rowcount for table, statement in statements.items()}


def retention_days() -> float:
    """Days the state store keeps (``DBTFLOW_STATE_RETENTION_DAYS``; 0 or less: forever)."""
    value = os.environ.get(RETENTION_ENV, "").strip()
    if not value:
        return DEFAULT_RETENTION_DAYS
    try:
        return float(value)
    except ValueError:
        raise DbtflowError(
            f"{RETENTION_ENV}={value!r} is not a number of days.",
            "set it to a number of days such as 30, or 0 to keep everything.",
        ) from None


@dataclass(frozen=True)
class TaskTry:
    """One try of one task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int


def _task_key(task: TaskTry) -> list[sa.ColumnElement[bool]]:
    return [
        try_artifacts.c.dag_id == task.dag_id,
        try_artifacts.c.run_id == task.run_id,
        try_artifacts.c.task_id == task.task_id,
        try_artifacts.c.map_index == task.map_index,
    ]


def _stored(row: Any) -> StoredResult:
    return StoredResult(
        id=row.id,
        invocation_id=row.invocation_id,
        result=NodeResult.from_dict(json.loads(row.result)),
        log=json.loads(row.log),
        consumed_by=row.consumed_by,
    )


def _info(row: Any) -> InvocationInfo:
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
        state=row.state,
        error=row.error,
    )
