"""Node results as dbt reported them, with each node's log lines, and which task try reported them.

The invocation that built a node records its result here (releasing its claim); the node's task
reads it (``node_states``) and marks it consumed by its try, so that a retry never reports again
the result its previous try already reported.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dbtflow.project.results import NodeResult
from dbtflow.state.invocations import InvocationInfo, info_of
from dbtflow.state.schema import claims, invocations, results


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
    #: Whether an invocation of the producer task is alive now.
    producer_alive: bool = False


def stored_of(row: Any) -> StoredResult:
    """A ``results`` row as a ``StoredResult``."""
    return StoredResult(
        id=row.id,
        invocation_id=row.invocation_id,
        result=NodeResult.from_dict(json.loads(row.result)),
        log=json.loads(row.log),
        consumed_by=row.consumed_by,
    )


#: The rows already read, parsed, by database, row id and invocation (a database made again may
#: reuse row ids; invocation ids are never reused): a row's result and log never change once
#: recorded (only ``consumed_by`` does, and a changed one is made again). The tasks of a run waiting
#: in one process read the states of the whole run at every interval: parsing every row's JSON
#: each time was, at 500 nodes, most of the trigger runner's own work, and making a
#: ``StoredResult`` for each of the run's rows at each reading still 1/3 of the runner's CPU at
#: 1000 (py-spy, 2026-12-03).
_parsed: OrderedDict[tuple[str, int, str], StoredResult] = OrderedDict()
_parsed_lock = threading.Lock()
KEEP_PARSED = 50_000


def _stored_results(conn: Connection, database: str, rows: Sequence[Any]) -> dict[int, StoredResult]:
    """The ``StoredResult`` of each key row (``id``, ``invocation_id``, ``consumed_by``):
    remembered, or read now."""
    found: dict[int, StoredResult] = {}
    with _parsed_lock:
        for row in rows:
            known = _parsed.get((database, row.id, row.invocation_id))
            if known is not None:
                if known.consumed_by != row.consumed_by:
                    known = replace(known, consumed_by=row.consumed_by)
                    _parsed[(database, row.id, row.invocation_id)] = known
                found[row.id] = known
    missing = {row.id: row for row in rows if row.id not in found}
    ids = list(missing)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for read in conn.execute(
            sa.select(results.c.id, results.c.result, results.c.log).where(results.c.id.in_(chunk))
        ):
            key = missing[read.id]
            found[read.id] = StoredResult(
                read.id,
                key.invocation_id,
                NodeResult.from_dict(json.loads(read.result)),
                json.loads(read.log),
                key.consumed_by,
            )
    with _parsed_lock:
        for row_id, key in missing.items():
            if row_id in found:  # (not deleted meanwhile by the state's retention)
                _parsed[(database, row_id, key.invocation_id)] = found[row_id]
        while len(_parsed) > KEEP_PARSED:
            _parsed.popitem(last=False)
    return found


class Results:
    """``StateStore``'s results."""

    engine: Engine

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
        claiming it, and whether the producer is alive."""
        result_filter = [results.c.dag_id == dag_id, results.c.run_id == run_id]
        claim_filter = [claims.c.dag_id == dag_id, claims.c.run_id == run_id]
        if unique_ids is not None:
            result_filter.append(results.c.unique_id.in_(unique_ids))
            claim_filter.append(claims.c.unique_id.in_(unique_ids))
        with self.engine.connect() as conn:
            # Claims before results: each statement sees what was committed when it ran, and an
            # invocation releases a node's claim in the transaction that records its result, so a
            # claim gone from the first reading has its result in the second. Read the other way
            # round, a node finished between the two showed neither: its task, seeing no holder,
            # went to a worker to report a result already there (the likely cause of a node task
            # reporting from a worker in about one benchmark run in ten, 2026-12-04).
            claim_rows = conn.execute(
                sa.select(claims.c.unique_id, invocations)
                .select_from(claims.join(invocations, claims.c.invocation_id == invocations.c.id))
                .where(*claim_filter)
            ).all()
            keys = conn.execute(
                sa.select(results.c.id, results.c.unique_id, results.c.invocation_id, results.c.consumed_by)
                .where(*result_filter)
                .order_by(results.c.id)
            ).all()
            newest_keys = {row.unique_id: row for row in keys}
            stored = _stored_results(conn, str(self.engine.url), list(newest_keys.values()))
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
        # One InvocationInfo per invocation (not per claim: 1000 made at each reading of a
        # 1000-model run), so its liveness is looked at once per reading.
        infos: dict[str, InvocationInfo] = {}
        for row in claim_rows:
            if row.id not in infos:
                infos[row.id] = info_of(row)
        return NodeStates(
            newest={unique_id: stored[row.id] for unique_id, row in newest_keys.items() if row.id in stored},
            holders={row.unique_id: infos[row.id] for row in claim_rows},
            producer_alive=any(info_of(row).alive for row in producer_rows),
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

    def newest_results(self, dag_id: str, run_id: str, unique_ids: Sequence[str]) -> list[NodeResult]:
        """The newest result of each of ``unique_ids`` in the run (those that have one)."""
        wanted = set(unique_ids)
        stored = self.results_of_run(dag_id, run_id)
        return list({s.result.unique_id: s.result for s in stored if s.result.unique_id in wanted}.values())

    def results_of_run(self, dag_id: str, run_id: str) -> list[StoredResult]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(results)
                .where(results.c.dag_id == dag_id, results.c.run_id == run_id)
                .order_by(results.c.id)
            ).all()
        return [stored_of(r) for r in rows]
