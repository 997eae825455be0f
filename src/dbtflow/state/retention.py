"""The state database keeps itself small: once a day, the first invocation to start deletes what is
older than ``DBTFLOW_STATE_RETENTION_DAYS`` (part of ``StateStore``)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbtflow import settings
from dbtflow.state.schema import (
    claims,
    invocations,
    maintenance,
    relations,
    results,
    run_locks,
    try_artifacts,
    writers,
)

RETENTION_ENV = settings.STATE_RETENTION_DAYS
DEFAULT_RETENTION_DAYS = settings.DEFAULT_STATE_RETENTION_DAYS
#: How often the store is pruned (by the first invocation to start after this long).
PRUNE_EVERY_S = 24 * 3600.0


class Retention:
    """``StateStore``'s pruning."""

    engine: Engine

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
            "relations": relations.delete().where(relations.c.recorded_at < before),
            "claims": claims.delete().where(claims.c.invocation_id.in_(gone)),
            "writers": writers.delete().where(writers.c.invocation_id.in_(gone)),
            "invocations": invocations.delete().where(invocations.c.heartbeat_at < before),
            "run_locks": run_locks.delete().where(run_locks.c.run_id != "*", ~run_has_invocation),
        }
        with self.engine.begin() as conn:
            return {table: conn.execute(statement).rowcount for table, statement in statements.items()}


def retention_days() -> float:
    """Days the state store keeps (``DBTFLOW_STATE_RETENTION_DAYS``; 0 or less: forever)."""
    return settings.state_retention_days()
