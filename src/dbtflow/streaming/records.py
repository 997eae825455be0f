"""What the state database's rows mean to a reader: invocations with their liveness, stored
results, a run's node states, and task tries.

Liveness is judged here, in one place: an invocation is alive while it runs, sends heartbeats
and (when on this machine) its process exists; see ``InvocationInfo.alive``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from dbtflow import settings
from dbtflow.project.results import NodeResult

#: An invocation whose heartbeat is older than this is considered dead.
STALE_AFTER_S = 30.0
#: ...unless its process is on this machine and still exists: then it is more likely starved of
#: CPU (a loaded machine) than dead, and building its nodes again would build them twice at once.
LOCAL_STALE_AFTER_S = 300.0
HEARTBEAT_EVERY_S = 2.0
RETENTION_ENV = settings.STATE_RETENTION_DAYS
DEFAULT_RETENTION_DAYS = settings.DEFAULT_STATE_RETENTION_DAYS
PRUNE_EVERY_S = 24 * 3600.0


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


@dataclass(frozen=True)
class TaskTry:
    """One try of one task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int


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
