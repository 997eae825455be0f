"""The warehouse relation of each node a DAG run's invocation builds, as asset URIs.

The invocation knows the project's warehouse and graph; the node tasks that end in the triggerer
do not, and they emit their node's asset event there (``dbtflow.airflow.node_assets``). So the
invocation records the URIs of the nodes it claims before dbt starts, and each task reads its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dbtflow.state.schema import relations

#: A node's asset URIs: the OpenLineage-named one, and Airflow's own form of it.
NodeUris = tuple[str, str]


class Relations:
    """``StateStore``'s relations."""

    engine: Engine

    def record_relations(self, dag_id: str, run_id: str, uris: Mapping[str, NodeUris]) -> None:
        """Record (or replace) the URIs of these nodes for the run."""
        if not uris:
            return
        now = time.time()
        rows = [
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "unique_id": uid,
                "uri": u,
                "airflow_uri": a,
                "recorded_at": now,
            }
            for uid, (u, a) in uris.items()
        ]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 500):
                chunk = [row["unique_id"] for row in rows[start : start + 500]]
                conn.execute(
                    relations.delete().where(
                        relations.c.dag_id == dag_id,
                        relations.c.run_id == run_id,
                        relations.c.unique_id.in_(chunk),
                    )
                )
            conn.execute(relations.insert(), rows)

    def relations_of(self, dag_id: str, run_id: str, unique_ids: Sequence[str]) -> dict[str, NodeUris]:
        """The recorded URIs of these nodes in the run (nodes without a record are left out)."""
        if not unique_ids:
            return {}
        query = sa.select(relations.c.unique_id, relations.c.uri, relations.c.airflow_uri).where(
            relations.c.dag_id == dag_id,
            relations.c.run_id == run_id,
            relations.c.unique_id.in_(list(unique_ids)),
        )
        with self.engine.connect() as conn:
            return {row.unique_id: (row.uri, row.airflow_uri) for row in conn.execute(query)}
