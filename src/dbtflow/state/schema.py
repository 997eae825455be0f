"""The tables of dbtflow's state database, kept apart from the queries so the schema reads in one place.

- ``invocations``: one row per dbt invocation, with a heartbeat so that a dead process is noticed;
  ``writers``: the invocations writing a DAG's models now; an invocation starts writing only
  when no live invocation of another run of the DAG is (``Invocations.start_writing``).
- ``claims``: which invocation is building each node, until it records the node's result; a node
  is never claimed by two live invocations at once, so no node is built twice concurrently.
- ``results``: each node's result as dbt reports it, with the log lines of that node, and which
  task try consumed it (a retry never reuses the result its previous try already reported).
- ``try_artifacts``: the ``run_results.json`` each try of a single or grouped build task left, for
  its next try's ``dbt retry`` on whichever worker that try lands.
- ``relations``: the warehouse relation (asset URIs) of each node a run's invocation builds, for
  the node tasks that emit their own asset events from the triggerer (``dbtflow.airflow.node_assets``).
- ``maintenance`` and ``run_locks``: when the store was last pruned, and a row per DAG run (and
  per DAG) that serializes claim changes.

The run-time history (``dbtflow.monitoring.history``) is a separate table and is kept.
"""

from __future__ import annotations

import sqlalchemy as sa

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
relations = sa.Table(
    "dbtflow_relations",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("unique_id", sa.String(500), primary_key=True),
    #: The OpenLineage-named URI, and Airflow's own form of it (where a provider refuses the first).
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("airflow_uri", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
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
